"""Routing along a sequence and through depth: repeat rates (Mixtral §5) and layer-to-layer transitions.

`repeat_rate`: for pairs of neighbouring tokens decided in the same forward pass of the same router call,
the share whose top-1 expert is the same (`top1_repeat`) and whose first top-1 is among the experts chosen
for the second (`top1_in_topk`). Which tokens are neighbours (`neighbours` column):
- text runs (`sequence`): positions i and i + 1 of one sample. Each position is decided once (generation
  decides the prompt at step 0 and one new position per later step), so the pair may span two steps;
- runs with a patch grid (diffusion), keyed on (sample, step, router, call) since every patch is decided
  again at every sampler step: `raster` (default) pairs position i with i + 1 in raster order but never
  across a row end (the last patch of a row and the first of the next are not neighbours); `grid` pairs
  every patch with its right and its down neighbour (tokens' `row`, `col`), about twice as many pairs.
  Tokens without a grid cell (text tokens routed beside the patches) are left out.
Chance levels from the data (`baseline_top1`, `baseline_topk`): with p_e the layer's top-1 load over the
paired tokens (each pair counts both its tokens) and q_e the share of those tokens' decisions that chose e
at any rank, two tokens routed independently with these loads repeat with probability Σ_e p_e² and put
the first top-1 in the second's top-k with probability Σ_e p_e · q_e. `uniform_top1` = 1/E and
`uniform_topk` = k/E are the uniform router's levels; for expert-choice routers, whose tokens get 0 … E
experts, k is the paired tokens' observed mean number of experts (tokens no expert picked have no top-1
and are not paired). Mixtral's paper reads repeat rates well above
chance as routing that follows syntax and position more than topic; a skewed load alone raises Σ p_e²
above 1/E, so compare with the data baseline.

`transitions`: for each MoE layer and the next MoE layer of the same stack, how a token's top-1 expert at
the first maps to its top-1 at the second, within one forward pass (same sample, position, step and call):
`count` and `share` = P(next expert | expert).
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .frames import sql, stack_of

NEIGHBOURS = ("raster", "grid")
COLUMNS = [
    "layer",
    "neighbours",
    "pairs",
    "top1_repeat",
    "top1_in_topk",
    "baseline_top1",
    "baseline_topk",
    "uniform_top1",
    "uniform_topk",
]


def neighbour_pairs_sql(
    run: Run, neighbours: Literal["raster", "grid"] = "raster", *, ranks: int = 1
) -> tuple[str, str]:
    """(CTE text, what was paired): `top AS (...), pairs AS (...)` with one row per pair of neighbouring
    top-1 decisions — `layer, sample, router, call, position_a, step_a, expert_a, position_b, step_b,
    expert_b`, and with `ranks` = k > 1 also each decision's experts at ranks 1 … k − 1 (`x1_a`, `x1_b`,
    ...; NULL where dropped or absent) — and `sequence`, `raster` or `grid` (see the module docstring).
    Shared by every analysis that pairs neighbouring tokens, so all of them key on the same (sample, step,
    router, call)."""
    if neighbours not in NEIGHBOURS:
        raise InputError(f"neighbours must be one of {', '.join(NEIGHBOURS)}, not {neighbours!r}")
    grid = run.info.patch_grid is not None
    if not grid and neighbours == "grid":
        raise InputError(f"run {run.name!r} has no patch grid; neighbours='grid' needs a diffusion run")
    per_step = grid or run.info.is_diffusion
    same = "b.sample = a.sample AND b.router = a.router AND b.call = a.call"
    if per_step:
        same += " AND b.step = a.step"
    others = [f"x{r}" for r in range(1, ranks)]
    select = ", ".join(
        [
            "SELECT a.layer, a.sample, a.router, a.call",
            "a.position AS position_a, a.step AS step_a, a.expert AS expert_a",
            "b.position AS position_b, b.step AS step_b, b.expert AS expert_b",
            *[f"a.{x} AS {x}_a, b.{x} AS {x}_b" for x in others],
        ]
    )
    if others:  # one row per decision: its top-1 and the experts at the other ranks
        columns = ", ".join(f"max(CASE WHEN rank = {r} THEN expert END) AS x{r}" for r in range(1, ranks))
        source = f"""(SELECT * FROM (
                         SELECT sample, position, step, router, call, layer,
                                max(CASE WHEN rank = 0 THEN expert END) AS expert, {columns}
                         FROM assignments WHERE NOT dropped
                         GROUP BY sample, position, step, router, call, layer) WHERE expert IS NOT NULL)"""
        top1 = "TRUE"
    else:
        source, top1 = "assignments", "d.rank = 0 AND NOT d.dropped"
    carried = "".join(f", d.{x}" for x in others)
    if not grid:
        top = f"""top AS (SELECT d.sample, d.position, d.step, d.router, d.call, d.layer, d.expert{carried}
                          FROM {source} d WHERE {top1})"""
        pairs = f"{select} FROM top a JOIN top b ON {same} AND b.position = a.position + 1"
        return f"{top},\n pairs AS ({pairs})", "sequence"
    top = f"""top AS (SELECT d.sample, d.position, d.step, d.router, d.call, d.layer, d.expert{carried},
                             t.row, t.col
                      FROM {source} d JOIN tokens t ON t.sample = d.sample AND t.position = d.position
                                                   AND t.stack = {stack_of(run, "d")}
                      WHERE {top1} AND t.row IS NOT NULL AND t.col IS NOT NULL)"""
    if neighbours == "raster":
        pairs = f"{select} FROM top a JOIN top b ON {same} AND b.position = a.position + 1 AND b.row = a.row"
        return f"{top},\n pairs AS ({pairs})", "raster"
    offsets = "offsets(d_row, d_col) AS (VALUES (0, 1), (1, 0))"
    pairs = f"""{select} FROM top a CROSS JOIN offsets o
                JOIN top b ON {same} AND b.row = a.row + o.d_row AND b.col = a.col + o.d_col"""
    return f"{top},\n {offsets},\n pairs AS ({pairs})", "grid"


def repeat_rate(run: Run, neighbours: Literal["raster", "grid"] = "raster") -> pd.DataFrame:
    """`layer, neighbours, pairs, top1_repeat, top1_in_topk, baseline_top1, baseline_topk, uniform_top1,
    uniform_topk` per layer (see the module docstring); `neighbours` matters only on patch-grid runs.

    One pass over the pairs: counts per (layer, first top-1, second top-1) with how many put the first
    top-1 among the second's experts, and per (layer, expert) how many of the pairs' decisions chose it
    at any rank; the rates and chance levels are finished in pandas."""
    sizes: dict[int, tuple[int, int]] = {}
    variable = {r.layer for r in run.info.routers if r.choice == "expert"}
    for router in run.info.routers:
        layer = router.layer
        size = (router.n_experts, router.top_k)
        sizes[layer] = max(sizes.get(layer, size), size)
    k = max(top_k for _, top_k in sizes.values())
    ctes, paired = neighbour_pairs_sql(run, neighbours, ranks=k)
    second = " OR ".join(["expert_b = expert_a", *[f"x{r}_b = expert_a" for r in range(1, k)]])
    chosen = " UNION ALL ".join(
        f"SELECT layer, {column} AS expert FROM pairs"
        for column in ["expert_a", "expert_b", *[f"x{r}_{end}" for r in range(1, k) for end in "ab"]]
    )
    counts = sql(
        run,
        f"""WITH {ctes},
            by_top AS (SELECT layer, expert_a, expert_b, count(*) AS n,
                              sum(CASE WHEN {second} THEN 1 ELSE 0 END) AS in_topk
                       FROM pairs GROUP BY layer, expert_a, expert_b),
            by_set AS (SELECT layer, expert, count(*) AS n FROM ({chosen}) WHERE expert IS NOT NULL
                       GROUP BY layer, expert)
        SELECT 0 AS part, layer, expert_a, expert_b, n, in_topk FROM by_top
        UNION ALL
        SELECT 1 AS part, layer, expert AS expert_a, -1 AS expert_b, n, 0 AS in_topk FROM by_set""",
    )
    if counts.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for layer, part in counts.groupby("layer", sort=True):
        n_experts = sizes[int(layer)][0]
        pairs, sets = part[part["part"] == 0], part[part["part"] == 1]
        n = pairs["n"].to_numpy(dtype=np.int64)
        first = pairs["expert_a"].to_numpy(dtype=np.int64)
        second_top = pairs["expert_b"].to_numpy(dtype=np.int64)
        total = int(n.sum())
        tops = np.bincount(first, n, n_experts) + np.bincount(second_top, n, n_experts)  # both ends' top-1
        chosen_by = np.bincount(sets["expert_a"].to_numpy(dtype=np.int64), sets["n"], n_experts)
        ends = 2.0 * total
        rows.append(
            {
                "layer": layer,
                "neighbours": paired,
                "pairs": total,
                "top1_repeat": int(n[first == second_top].sum()) / total,
                "top1_in_topk": int(pairs["in_topk"].sum()) / total,
                "baseline_top1": float(np.dot(tops, tops)) / (ends * ends),
                "baseline_topk": float(np.dot(tops, chosen_by)) / (ends * ends),
                "uniform_top1": 1.0 / n_experts,
                "uniform_topk": (
                    float(chosen_by.sum()) / ends if int(layer) in variable else sizes[int(layer)][1]
                )
                / n_experts,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def transitions(run: Run) -> pd.DataFrame:
    """`layer, next_layer, expert, next_expert, count, share` for consecutive MoE layers of each stack.

    A token's two decisions are matched on (sample, position, step, call): the same token in the same
    forward pass (diffusion: the same sampler step) at the same call of a router run several times per
    pass."""
    order = sorted(run.info.routers, key=lambda r: (r.stack, r.layer, r.id))
    pairs = [(a.id, b.id) for a, b in itertools.pairwise(order) if a.stack == b.stack and a.layer != b.layer]
    if not pairs:
        return pd.DataFrame(columns=["layer", "next_layer", "expert", "next_expert", "count", "share"])
    values = ", ".join(f"({a}, {b})" for a, b in pairs)
    table = sql(
        run,
        f"""WITH top AS (SELECT sample, position, step, call, router, layer, expert FROM assignments
                         WHERE rank = 0 AND NOT dropped),
                 links(first, second) AS (VALUES {values})
            SELECT a.layer, b.layer AS next_layer, a.expert, b.expert AS next_expert, count(*) AS count
            FROM links JOIN top a ON a.router = links.first
            JOIN top b ON b.router = links.second AND b.sample = a.sample AND b.position = a.position
                       AND b.step = a.step AND b.call = a.call
            GROUP BY ALL ORDER BY ALL""",
    )
    table["share"] = table["count"] / table.groupby(["layer", "expert"])["count"].transform("sum")
    return table
