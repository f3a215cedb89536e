"""Routing along a sequence and through depth: repeat rates (Mixtral §5) and layer-to-layer transitions.

`repeat_rate`: for consecutive positions i, i+1 of one sequence (same sample, same router), the share whose
top-1 expert is the same (`top1_repeat`), and whose top-1 at i is among the k experts chosen at i+1
(`top1_in_topk`); random baselines 1/E and k/E. Mixtral's paper reads repeat rates well above these as
routing that follows syntax and position more than topic.

`transitions`: for each MoE layer and the next MoE layer of the same stack, how a token's top-1 expert at
the first maps to its top-1 at the second: `count` and `share` = P(next expert | expert).
"""

from __future__ import annotations

import itertools

import pandas as pd

from routescope.hooks import Run

from .frames import sql


def repeat_rate(run: Run) -> pd.DataFrame:
    """`layer, pairs, top1_repeat, top1_in_topk, baseline_top1, baseline_topk` per layer."""
    return sql(
        run,
        """WITH top AS (SELECT sample, position, router, call, layer, expert FROM assignments
                        WHERE rank = 0 AND NOT dropped),
                chosen AS (SELECT sample, position, router, call, list(expert) AS experts FROM assignments
                           WHERE NOT dropped GROUP BY ALL)
           SELECT a.layer, count(*) AS pairs,
                  avg(CASE WHEN a.expert = b.expert THEN 1.0 ELSE 0.0 END) AS top1_repeat,
                  avg(CASE WHEN list_contains(c.experts, a.expert) THEN 1.0 ELSE 0.0 END) AS top1_in_topk,
                  1.0 / any_value(r.n_experts) AS baseline_top1,
                  any_value(r.top_k) * 1.0 / any_value(r.n_experts) AS baseline_topk
           FROM top a
           JOIN top b ON b.sample = a.sample AND b.router = a.router AND b.call = a.call
                      AND b.position = a.position + 1
           JOIN chosen c ON c.sample = b.sample AND c.router = b.router AND c.call = b.call
                         AND c.position = b.position
           JOIN routers r ON r.id = a.router
           GROUP BY a.layer ORDER BY a.layer""",
    )


def transitions(run: Run) -> pd.DataFrame:
    """`layer, next_layer, expert, next_expert, count, share` for consecutive MoE layers of each stack."""
    order = sorted(run.routers, key=lambda r: (r["stack"], r["layer"], r["id"]))
    pairs = [
        (int(a["id"]), int(b["id"]))
        for a, b in itertools.pairwise(order)
        if a["stack"] == b["stack"] and a["layer"] != b["layer"]
    ]
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
