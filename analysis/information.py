"""Information measures on batches of contingency tables, shared by `label_nmi`, its permutation null and
its bootstrap, so the three compute the same number the same way.

`nmi(counts)` takes `[B, L, E]` label × expert counts and returns `[B]` normalised mutual informations
I(L; E) / mean(H(L), H(E)) — the arithmetic normalisation scikit-learn uses by default; 0 when a margin
has no entropy. `mutual_information` returns I(L; E) in nats.
"""

from __future__ import annotations

import numpy as np


def _entropy(p: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=axis)


def mutual_information(counts: np.ndarray) -> np.ndarray:
    """I(L; E) in nats of each `[L, E]` table in a `[B, L, E]` batch."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts / np.maximum(counts.sum(axis=(1, 2), keepdims=True), 1e-300)
    outer = p.sum(axis=2)[:, :, None] * p.sum(axis=1)[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(p / np.where(outer > 0, outer, 1.0)), 0.0).sum(axis=(1, 2))


def nmi(counts: np.ndarray) -> np.ndarray:
    """NMI (arithmetic normalisation) of each `[L, E]` table in a `[B, L, E]` batch."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts / np.maximum(counts.sum(axis=(1, 2), keepdims=True), 1e-300)
    denominator = (_entropy(p.sum(axis=2), 1) + _entropy(p.sum(axis=1), 1)) / 2
    mutual = mutual_information(counts)
    return np.where(denominator > 0, mutual / np.maximum(denominator, 1e-300), 0.0)
