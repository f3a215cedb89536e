"""Co-activation: which experts a router picks together for the same token, over all k(k−1)/2 pairs.

OLMoE counts only adjacent ranks of the sorted top-k list; here every pair of a decision's k experts
counts. For experts a ≠ b of one layer, over its decisions (tokens × steps × calls):
- `count` = decisions that chose both a and b;
- `p_b_given_a` = count / decisions that chose a;
- `lift` = P(a, b) / (P(a) · P(b)) — 1 when a and b are chosen independently, > 1 when they co-occur.
Each decision's experts are folded into one bitmask in DuckDB (`bit_or(1 << expert)`), the few distinct
masks are counted, and pairs are expanded from them in numpy: one fixed-width value per decision keeps
this to seconds on 100 M-row runs (`../shared/notes/perf-anchors.md`). Layers with more than 64 experts
fall back to a self-join.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from routescope.hooks import InputError, Run

from .frames import sql

KEYS = "sample, position, step, router, call"


def coactivation(run: Run, layer: int) -> pd.DataFrame:
    """`expert_a, expert_b, count, p_b_given_a, lift` for one layer (both orders of every pair)."""
    routers = [r for r in run.routers if int(r["layer"]) == int(layer)]
    if not routers:
        raise InputError(
            f"run {run.name!r} has no router at layer {layer}; layers: "
            + ", ".join(sorted({str(r["layer"]) for r in run.routers}))
        )
    n_experts = max(int(r["n_experts"]) for r in routers)
    where = f"layer = {int(layer)} AND NOT dropped"
    if n_experts <= 64:
        masks = sql(
            run,
            f"""SELECT mask, count(*) AS n FROM (
                SELECT bit_or(CAST(1 AS UBIGINT) << CAST(expert AS UBIGINT)) AS mask
                FROM assignments WHERE {where} GROUP BY {KEYS}) GROUP BY mask""",
        )
        pairs = np.zeros((n_experts, n_experts))
        singles = np.zeros(n_experts)
        for mask, n in zip(masks["mask"].astype(np.uint64), masks["n"], strict=True):
            chosen = [e for e in range(n_experts) if (int(mask) >> e) & 1]
            singles[chosen] += n
            for a, b in itertools.permutations(chosen, 2):
                pairs[a, b] += n
        decisions = float(masks["n"].sum())
    else:
        joint = sql(
            run,
            f"""WITH d AS (SELECT {KEYS}, expert FROM assignments WHERE {where})
            SELECT x.expert AS a, y.expert AS b, count(*) AS n FROM d x JOIN d y USING ({KEYS})
            GROUP BY ALL""",
        )
        pairs = np.zeros((n_experts, n_experts))
        pairs[joint["a"], joint["b"]] = joint["n"]
        singles = np.diag(pairs).copy()
        np.fill_diagonal(pairs, 0)
        decisions = float(
            sql(run, f"SELECT count(*) AS n FROM (SELECT DISTINCT {KEYS} FROM assignments WHERE {where})")[
                "n"
            ].iloc[0]
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
            "count": count.astype(np.int64),
            "p_b_given_a": p_b_given_a,
            "lift": lift,
        }
    ).sort_values(["expert_a", "expert_b"], ignore_index=True)
