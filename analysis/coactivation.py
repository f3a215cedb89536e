"""Co-activation: which experts a router picks together for the same token, over all k(k−1)/2 pairs.

OLMoE counts only adjacent ranks of the sorted top-k list; here every pair of a decision's k experts
counts. For experts a ≠ b of one layer, over its decisions (tokens × steps × calls):
- `count` = decisions that chose both a and b;
- `p_b_given_a` = count / decisions that chose a;
- `lift` = P(a, b) / (P(a) · P(b)) — 1 when a and b are chosen independently, > 1 when they co-occur.
Each decision's experts are folded into one bitmask in DuckDB (`bit_or(1 << expert)`), the distinct
masks are counted (about 300 k for a top-4-of-64 layer of 3 M decisions), and pairs are expanded from
them with vectorised numpy: one fixed-width value per decision keeps this to about a second per layer
of a 100 M-row run (`../shared/notes/perf-anchors.md`, benchmarks/analysis_scale.py). Layers with more
than 64 experts fall back to a self-join. Decisions are those with an assignment, except at expert-choice
layers, where a token no expert picked is a decision too (counted from `decisions`), so P(a) stays the
share of all the layer's tokens. Zero-computation experts (manifest `routers[].zero_experts`, LongCat-Flash's
identity experts) are no one's partner and have no row: a token that chose a real expert and an identity
one used one expert. Its decision still counts in P(a)'s denominator, as a token of the layer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import InputError, RouterInfo, Run

from .frames import counting, sql


def coactivation(run: Run, layer: int, *, ranks: str = "all", weight: str = "count") -> pd.DataFrame:
    """`expert_a, expert_b, count, p_b_given_a, lift` for one layer (both orders of every pair).

    Counting conventions (`frames.counting`): a pair needs two ranks, so only `ranks="all"` applies;
    `weight="gate"` counts a pair by the product of its two gate weights and an expert by its gate weight,
    so `lift` compares E[g_a · g_b] with E[g_a] · E[g_b] (1 under independence) and `count` is a mass."""
    counting(ranks, weight)
    if ranks != "all":
        raise InputError("co-activation pairs two ranks of one decision; it counts all ranks (ranks='all')")
    routers = [r for r in run.info.routers if r.layer == int(layer)]
    if not routers:
        raise InputError(
            f"run {run.name!r} has no router at layer {layer}; layers: "
            + ", ".join(sorted({str(r.layer) for r in run.info.routers}))
        )
    n_experts = max(r.n_experts for r in routers)
    where = f"layer = {int(layer)} AND NOT dropped"
    keys = ", ".join(_decision_keys(routers))
    if weight == "gate":
        pairs, singles, decisions = _gate_weighted(run, where, keys, n_experts)
    elif n_experts <= 64:
        masks = sql(
            run,
            f"""SELECT mask, count(*) AS n FROM (
                SELECT bit_or(CAST(1 AS UBIGINT) << CAST(expert AS UBIGINT)) AS mask
                FROM assignments WHERE {where} GROUP BY {keys}) GROUP BY mask""",
        )
        pairs, singles = _expand_masks(
            masks["mask"].to_numpy(dtype=np.uint64), masks["n"].to_numpy(dtype=np.float64), n_experts
        )
        decisions = float(masks["n"].sum())
    else:
        joint = sql(
            run,
            f"""WITH d AS (SELECT {keys}, expert FROM assignments WHERE {where})
            SELECT x.expert AS a, y.expert AS b, count(*) AS n FROM d x JOIN d y USING ({keys})
            GROUP BY ALL""",
        )
        pairs = np.zeros((n_experts, n_experts))
        pairs[joint["a"], joint["b"]] = joint["n"]
        singles = np.diag(pairs).copy()
        np.fill_diagonal(pairs, 0)
        decisions = float(
            sql(run, f"SELECT count(*) AS n FROM (SELECT DISTINCT {keys} FROM assignments WHERE {where})")[
                "n"
            ].iloc[0]
        )
    zero = sorted({e for r in routers for e in r.zero_experts if e < n_experts})
    if zero:  # identity experts compute nothing: no pairs with them, no rows of their own
        pairs[zero, :] = 0
        pairs[:, zero] = 0
        singles[zero] = 0
    if any(r.choice == "expert" for r in routers):  # tokens with no expert are decisions too
        decisions = float(
            sql(run, f"SELECT count(*) AS n FROM decisions WHERE layer = {int(layer)}")["n"].iloc[0]
        )
    rows, cols = np.nonzero(pairs)
    count = pairs[rows, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        p_b_given_a = count / singles[rows]
        lift = (count / decisions) / ((singles[rows] / decisions) * (singles[cols] / decisions))
    return pd.DataFrame(
        {
            "expert_a": rows,
            "expert_b": cols,
            "count": count.astype(np.int64) if weight == "count" else count,
            "p_b_given_a": p_b_given_a,
            "lift": lift,
        }
    ).sort_values(["expert_a", "expert_b"], ignore_index=True)


def _decision_keys(routers: list[RouterInfo]) -> list[str]:
    """The decision key columns that can vary within one layer: `router` only when the layer has several
    routers, `call` only when a router runs more than once per forward pass. Grouping 12.5 M rows by
    three columns instead of five saves about a tenth of the query."""
    keys = ["sample", "position", "step"]
    if len(routers) > 1:
        keys.append("router")
    if any((r.call_count or 2) != 1 for r in routers):
        keys.append("call")
    return keys


def _expand_masks(masks: np.ndarray, counts: np.ndarray, n_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """`(pairs [E, E], singles [E])` from distinct expert bitmasks and how many decisions chose each.

    A mask has at most k bits set, so its experts are peeled off lowest bit first (`m & -m`; the bit's
    index is the float exponent of that power of two) into k columns, and pairs are counted with one
    weighted `bincount` per ordered pair of columns: k² passes over the masks, exact float64 sums of
    integer counts (below 2⁵³)."""
    rest = masks.astype(np.uint64, copy=True)
    columns = []
    while rest.any():
        low = rest & (~rest + np.uint64(1))
        columns.append(np.where(low > 0, np.frexp(low.astype(np.float64))[1] - 1, -1))
        rest ^= low
    singles = np.zeros(n_experts)
    cells = n_experts * n_experts
    pairs = np.zeros(cells)
    for i, a in enumerate(columns):
        has_a = a >= 0
        singles += np.bincount(a[has_a], weights=counts[has_a], minlength=n_experts)
        for j, b in enumerate(columns):
            both = has_a & (b >= 0)
            if i != j and both.any():
                pairs += np.bincount(a[both] * n_experts + b[both], weights=counts[both], minlength=cells)
    return pairs.reshape(n_experts, n_experts), singles


def _gate_weighted(run: Run, where: str, keys: str, n_experts: int) -> tuple[np.ndarray, np.ndarray, float]:
    """`(pairs [E, E], singles [E], decisions)` with pairs summed as g_a · g_b and experts as g."""
    joint = sql(
        run,
        f"""WITH d AS (SELECT {keys}, expert, weight FROM assignments WHERE {where})
        SELECT x.expert AS a, y.expert AS b, sum(x.weight * y.weight) AS n
        FROM d x JOIN d y USING ({keys}) WHERE x.expert <> y.expert GROUP BY ALL""",
    )
    singles_frame = sql(
        run, f"SELECT expert, sum(weight) AS n FROM assignments WHERE {where} GROUP BY expert"
    )
    pairs = np.zeros((n_experts, n_experts))
    pairs[joint["a"].to_numpy(), joint["b"].to_numpy()] = joint["n"].to_numpy()
    singles = np.zeros(n_experts)
    singles[singles_frame["expert"].to_numpy()] = singles_frame["n"].to_numpy()
    decisions = sql(run, f"SELECT count(*) AS n FROM (SELECT DISTINCT {keys} FROM assignments WHERE {where})")
    return pairs, singles, float(decisions["n"].iloc[0])
