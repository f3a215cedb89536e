"""Per-token output KL between two runs on the same inputs: does a routing change change what the model says?

For every input token both runs recorded with `output_logprobs=True` (hooks/output_logprobs.py), KL(A‖B)
= Σ_v p_A(v) · (log p_A(v) − log p_B(v)) in nats, over the next-token distributions at that position
(each renormalised after its float16 storage, so the rounding moves a KL by about 1e-3). Agreement and
saturation (comparison.py, series.py) say how often the experts change; this says how much the output
does — a checkpoint series, an ablated or quantised copy, a batch-size change against its base run.

Unlike the other analyses this one cannot aggregate in SQL: a KL needs both full vectors of a token, so
the `outputs` tables are read with pyarrow and the sums run in numpy, a few thousand tokens at a time.
The unit of independence is the sequence (units.py): `output_kl` gives the token-weighted mean KL with a
percentile bootstrap interval over sequences (`bootstrap.unit_interval`), `output_kl_by_sample` one row
per sequence, `token_kl` the per-token values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .bootstrap import unit_interval
from .units import unit_codes

ROWS = 4096
"""Tokens per numpy block (two [ROWS, V] float64 matrices at a time)."""


def _normalised(logprobs: np.ndarray) -> np.ndarray:
    """Log-probabilities renormalised per row (log-sum-exp 0), in float64."""
    values = logprobs.astype(np.float64)
    top = np.max(values, axis=1, keepdims=True)
    return values - (top + np.log(np.exp(values - top).sum(axis=1, keepdims=True)))


def token_kl(run_a: Run, run_b: Run) -> pd.DataFrame:
    """`sample, position, kl`: KL(A‖B) in nats of the next-token distributions at every input token both
    runs stored, in (sample, position) order."""
    keys_a, lp_a = run_a.output_logprobs()
    keys_b, lp_b = run_b.output_logprobs()
    if lp_a.shape[1] != lp_b.shape[1]:
        raise InputError(
            f"runs {run_a.name!r} and {run_b.name!r} have vocabularies of {lp_a.shape[1]} and "
            f"{lp_b.shape[1]}; compare runs of models that share a tokenizer"
        )
    both = (
        keys_a.assign(row_a=np.arange(len(keys_a)))
        .merge(keys_b.assign(row_b=np.arange(len(keys_b))), on=["sample", "position"])
        .sort_values(["sample", "position"], ignore_index=True)
    )
    if both.empty:
        raise InputError(f"runs {run_a.name!r} and {run_b.name!r} share no tokens; record the same inputs")
    rows_a, rows_b = both["row_a"].to_numpy(), both["row_b"].to_numpy()
    kl = np.empty(len(both), dtype=np.float64)
    for start in range(0, len(both), ROWS):
        part = slice(start, start + ROWS)
        a, b = _normalised(lp_a[rows_a[part]]), _normalised(lp_b[rows_b[part]])
        p = np.exp(a)
        with np.errstate(invalid="ignore"):  # p = 0 terms are 0 whatever log p_B is
            terms = np.where(p > 0, p * (a - b), 0.0)
        kl[part] = terms.sum(axis=1)
    return pd.DataFrame({"sample": both["sample"], "position": both["position"], "kl": kl})


def output_kl_by_sample(run_a: Run, run_b: Run) -> pd.DataFrame:
    """`sample, tokens, mean_kl, max_kl`: per sequence, the mean and largest per-token KL(A‖B)."""
    per_token = token_kl(run_a, run_b)
    table = per_token.groupby("sample", as_index=False).agg(
        tokens=("kl", "size"), mean_kl=("kl", "mean"), max_kl=("kl", "max")
    )
    return table


def output_kl(
    run_a: Run, run_b: Run, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """`sequences, tokens, mean_kl, ci_low, ci_high, median_kl, max_kl, level`: the token-weighted mean
    KL(A‖B) over every shared token, with a percentile bootstrap interval at `level` that resamples the
    run's units of independence (sequences) `n_boot` times."""
    per_token = token_kl(run_a, run_b)
    codes = unit_codes(run_a).set_index("sample")["unit"]
    units = per_token["sample"].map(codes).to_numpy()
    sums = pd.DataFrame({"unit": units, "kl": per_token["kl"]}).groupby("unit")["kl"].agg(["sum", "size"])
    estimate, lo, hi = unit_interval(
        sums.to_numpy(dtype=np.float64),
        lambda s: s[:, 0] / s[:, 1],
        n_boot=n_boot,
        level=level,
        seed=seed,
    )
    row = {
        "sequences": len(sums),
        "tokens": len(per_token),
        "mean_kl": estimate,
        "ci_low": lo,
        "ci_high": hi,
        "median_kl": float(per_token["kl"].median()),
        "max_kl": float(per_token["kl"].max()),
        "level": level,
    }
    return pd.DataFrame([row])
