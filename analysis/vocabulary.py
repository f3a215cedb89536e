"""Vocabulary specialization (OLMoE): is routing driven by the token id?

For every token id, per layer, on the routers' top-1 choices (`rank` 0): `count` = occurrences,
`top_expert` = the expert that most often takes it first, `share` = the share of its occurrences routed
first to `top_expert` (1 = context-independent routing). `target="input"` keys on the token itself,
`target="next"` on the token that follows it in the same sequence (OLMoE's ground-truth next-token view),
`target="predicted"` on the model's own argmax next token at that position (OLMoE's predicted-next-token
view; runs recorded with token loss, which stores `tokens.predicted`).
Average `share` over token ids per layer for the headline number; OLMoE's normalised form is
(share − 1/E) / (1 − 1/E) with k = 1.

`baseline_share` is the chance level of `share` for that token: the expected share of the top expert of
a token-blind router that draws each of the token's `count` = n top-1 choices independently from the
layer's observed top-1 loads p (over the rows counted here), i.e. E[max_e X_e] / n with X ~
Multinomial(n, p). It is 1 for n = 1 and (1 + Σ p_e²) / 2 for n = 2, and falls towards max_e p_e as n
grows, so a rare token's high `share` is no evidence of specialization: compare `share` with
`baseline_share`, not with 1/E. It is computed exactly for n ≤ `EXACT_MAX_N` (Poissonization:
P(max ≤ c) = n! [zⁿ] Π_e Σ_{i≤c} (p_e z)ⁱ / i!) and by seeded Monte Carlo above (`MC_DRAWS` draws per
distinct n, seeded by n, so a value does not depend on the other counts of the run; when a layer has
more than `MC_GRID` distinct large counts, on `MC_GRID` log-spaced counts, interpolated linearly in
log n); see `expected_top_share`.

`target="next"` pairs a text token with the one after it; runs with a patch grid (diffusion) have no such
order (position + 1 at a row end is the first patch of the next row), so it is refused there.

The top expert is chosen in SQL, so only one row per (layer, token id) leaves DuckDB: on a 100 M-row run
the (layer, token id, expert) counts are millions of rows (benchmarks/analysis_scale.py).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .frames import sql, stack_of
from .loss import require_token_loss

TIE_SCALE = 1 << 32
"""`n · TIE_SCALE − expert` orders (count, then the smaller expert) in one integer, so the top expert is
picked in SQL with ties going to the smaller id (exact for counts below 2³¹)."""
COLUMNS = ["layer", "token_id", "count", "top_expert", "share", "baseline_share"]
EXACT_MAX_N = 64
"""Counts up to this get the exact expected top share (for layers with at most `EXACT_MAX_EXPERTS`
experts in use)."""
EXACT_MAX_EXPERTS = 256
MC_DRAWS = 1000
"""Monte Carlo trajectories per layer for counts above `EXACT_MAX_N` (standard error of the expected top
share below 0.001 there)."""
MC_GRID = 24
"""At most this many distinct counts are simulated per layer; the others are interpolated in 1/√n."""
MC_CELLS = 1 << 24
"""Bound on draws × experts held by the simulation (layers with more than 16 k experts in use get fewer
than `MC_DRAWS` draws)."""


def vocabulary_specialization(
    run: Run, target: Literal["input", "next", "predicted"] = "input"
) -> pd.DataFrame:
    """`layer, token_id, count, top_expert, share, baseline_share` on top-1 choices (see the module
    docstring; with `target="predicted"`, `token_id` holds the predicted next token)."""
    if target not in ("input", "next", "predicted"):
        raise InputError(f"target must be 'input', 'next' or 'predicted', not {target!r}")
    if target == "predicted":
        require_token_loss(run)
    if target == "next" and run.info.patch_grid:
        raise InputError(
            f"run {run.name!r} has a patch grid: target='next' needs text (there is no next token on an "
            "image); use target='input' or the spatial analysis"
        )
    offset = 1 if target == "next" else 0
    column = "predicted" if target == "predicted" else "token_id"
    table = sql(
        run,
        f"""WITH counts AS (
            SELECT a.layer, t.{column} AS token_id, a.expert, count(*) AS n
            FROM assignments a JOIN tokens t
            ON t.sample = a.sample AND t.position = a.position + {offset} AND t.stack = {stack_of(run)}
            WHERE a.rank = 0 AND NOT a.dropped GROUP BY ALL)
        SELECT 0 AS part, layer, token_id, CAST(sum(n) AS BIGINT) AS count,
               arg_max(expert, n * {TIE_SCALE} - expert) AS top_expert, max(n) / sum(n) AS share
        FROM counts GROUP BY layer, token_id
        UNION ALL
        SELECT 1 AS part, layer, -1 AS token_id, CAST(sum(n) AS BIGINT) AS count, expert AS top_expert,
               0.0 AS share
        FROM counts GROUP BY layer, expert
        ORDER BY part, layer, token_id, top_expert""",
    )
    loads = table[table["part"] == 1]
    table = table[table["part"] == 0].drop(columns="part").reset_index(drop=True)
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    table["baseline_share"] = np.nan
    for layer, part in table.groupby("layer"):
        load = loads.loc[loads["layer"] == layer, "count"].to_numpy(dtype=np.float64)
        table.loc[part.index, "baseline_share"] = expected_top_share(part["count"].to_numpy(), load)
    return table[COLUMNS]


def expected_top_share(counts: np.ndarray, loads: np.ndarray, seed: int = 0) -> np.ndarray:
    """E[max_e X_e] / n for X ~ Multinomial(n, p) with p = loads / Σ loads, for every n in `counts`
    (exact for n ≤ `EXACT_MAX_N`, seeded Monte Carlo above; see the module docstring)."""
    counts = np.asarray(counts, dtype=np.int64)
    loads = np.asarray(loads, dtype=np.float64)
    if (counts < 1).any() or not loads.sum() > 0:
        raise InputError("expected_top_share needs counts ≥ 1 and a positive load")
    p = np.sort(loads[loads > 0])[::-1] / loads.sum()
    distinct = np.unique(counts)
    values: dict[int, float] = {}
    exact_limit = EXACT_MAX_N if len(p) <= EXACT_MAX_EXPERTS else 2
    small = distinct[distinct <= exact_limit]
    if len(small):
        values.update(zip(small.tolist(), _exact_top_share(small, p).tolist(), strict=True))
    large = distinct[distinct > exact_limit]
    if len(large):
        grid = large
        if len(large) > MC_GRID:
            grid = np.unique(np.round(np.geomspace(large[0], large[-1], MC_GRID)).astype(np.int64))
        simulated = _simulated_top_share(grid, p, seed)
        # E[max]/n ≈ a + b/√n for large n: interpolate linearly in 1/√n (ascending for np.interp)
        estimate = np.interp(1 / np.sqrt(large), 1 / np.sqrt(grid[::-1]), simulated[::-1])
        estimate = np.clip(estimate, p[0], 1.0)  # E[max X] ≥ max E[X] = n · max p
        values.update(zip(large.tolist(), estimate.tolist(), strict=True))
    return np.array([values[int(n)] for n in counts], dtype=np.float64)


def _exact_top_share(ns: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Exact E[max] / n for every n in `ns` (ascending): P(max ≤ c) = n! [zⁿ] Π_e Σ_{i≤c} (p_e z)ⁱ / i!,
    one truncated polynomial product per level c < max n (all nonnegative terms: no cancellation), and
    E[max] = Σ_{c<n} (1 − P(max ≤ c))."""
    top = int(ns[-1])
    if top <= 2:  # closed forms, for any number of experts
        return np.array([1.0 if n == 1 else (1.0 + float(np.sum(p * p))) / 2.0 for n in ns.tolist()])
    degrees = np.arange(top + 1)
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, top + 1)))])
    levels = np.arange(top)[:, None]  # c = 0 … top − 1
    product = np.zeros((top, top + 1))
    product[:, 0] = 1.0
    for p_e in p:
        with np.errstate(divide="ignore"):
            terms = np.exp(degrees * np.log(p_e) - log_factorial)
        factor = np.where(degrees[None, :] <= levels, terms[None, :], 0.0)  # [c, i]
        new = np.zeros_like(product)
        for i in range(top + 1):
            if not factor[:, i].any():
                continue
            new[:, i:] += factor[:, i : i + 1] * product[:, : top + 1 - i]
        product = new
    shares = []
    for n in ns.tolist():
        at_most = np.exp(log_factorial[n]) * product[:n, n]  # P(max ≤ c), c = 0 … n − 1
        shares.append(float(np.sum(1.0 - np.clip(at_most, 0.0, 1.0))) / n)
    return np.array(shares)


def _simulated_top_share(ns: np.ndarray, p: np.ndarray, seed: int) -> np.ndarray:
    """Monte Carlo E[max] / n at every n of `ns` (ascending) from one seeded set of `MC_DRAWS` count
    trajectories: X(n') = X(n) + Multinomial(n' − n, p), so the estimates of neighbouring n share their
    draws and the curve is smooth. An increment small against the number of experts is drawn token by
    token (cost n per draw instead of E); layers with very many experts in use get fewer draws so that
    the trajectories hold at most `MC_CELLS` counts."""
    rng = np.random.default_rng(seed)
    n_experts = len(p)
    draws = min(MC_DRAWS, max(64, MC_CELLS // n_experts))
    totals = np.zeros((draws, n_experts), dtype=np.int64)
    shares, previous = [], 0
    for n in ns.tolist():
        step, previous = n - previous, n
        if step * 8 < n_experts:
            chosen = rng.choice(n_experts, size=(draws, step), p=p)
            np.add.at(totals, (np.repeat(np.arange(draws), step), chosen.ravel()), 1)
        else:
            totals += rng.multinomial(step, p, size=draws)
        shares.append(totals.max(axis=1).mean() / n)
    return np.array(shares, dtype=np.float64)
