"""Comparing two runs on the same inputs: router agreement (OLMoE's router saturation, batch effects).

For decisions present in both runs (same sample, position, step, layer and call): `top1_agreement` = the
share whose top-1 expert is the same, `topk_overlap` = mean |E_a ∩ E_b| / k. Two checkpoints on the same
text give OLMoE's saturation curve; the same model at batch size 1 and 32 shows batch dependence.
"""

from __future__ import annotations

import pandas as pd

from routescope.hooks import InputError, Run

from .engine import connect, quote_path

KEYS = ("sample", "position", "step", "layer", "call")


def agreement(run_a: Run, run_b: Run) -> pd.DataFrame:
    """`layer, decisions, top1_agreement, topk_overlap` over the decisions both runs recorded."""
    con = connect(run_a)
    try:
        con.execute(
            f"CREATE VIEW other AS SELECT * FROM read_parquet({quote_path(run_b.table_path('assignments'))})"
        )
        keys = ", ".join(KEYS)
        on = " AND ".join(f"a.{k} = b.{k}" for k in KEYS)
        table = con.execute(
            f"""WITH a AS (SELECT {keys}, list(expert ORDER BY rank) AS experts FROM assignments
                           WHERE NOT dropped GROUP BY ALL),
                     b AS (SELECT {keys}, list(expert ORDER BY rank) AS experts FROM other
                           WHERE NOT dropped GROUP BY ALL)
                SELECT a.layer, count(*) AS decisions,
                       avg(CASE WHEN a.experts[1] = b.experts[1] THEN 1.0 ELSE 0.0 END) AS top1_agreement,
                       avg(len(list_intersect(a.experts, b.experts)) / greatest(len(a.experts), 1))
                           AS topk_overlap
                FROM a JOIN b ON {on} GROUP BY a.layer ORDER BY a.layer"""
        ).df()
    finally:
        con.close()
    if table.empty:
        raise InputError(f"runs {run_a.name!r} and {run_b.name!r} share no decisions; record the same inputs")
    return table
