"""Gumbel-top-k: draw k distinct experts from a router's own distribution, as Plackett–Luce sampling does.

Adding independent standard Gumbel noise to log-probabilities and keeping the k largest is an exact
sample of k items without replacement, each next item chosen with probability proportional to its
probability among those left (the Plackett–Luce model; Kool, van Hoof & Welling 2019, "Stochastic Beams
and Where to Find Them", arXiv 1903.06059). The counterfactual-route probe draws its alternative top-k
sets this way, so an alternative is as plausible as the router itself makes it and costs the same k
experts. Seeded numpy generators make every draw reproducible.
"""

from __future__ import annotations

import numpy as np

from routescope.store.errors import InputError


def gumbel_top_k(log_probs: np.ndarray, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, k] int64: `n` independent Gumbel-top-k draws of `k` distinct indices from `log_probs` ([E]),
    each row in the order drawn (largest perturbed log-probability first)."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if not 0 < k <= int(np.isfinite(log_probs).sum()):
        raise InputError(
            f"cannot draw {k} distinct experts from {int(np.isfinite(log_probs).sum())} possible"
        )
    keys = log_probs[None, :] + rng.gumbel(size=(n, log_probs.shape[0]))
    return np.argsort(-keys, axis=1, kind="stable")[:, :k].astype(np.int64)
