"""Comparing two runs on the same inputs: router agreement (OLMoE's router saturation, batch effects).

For decisions present in both runs (same sample, position, step, layer and call): `top1_agreement` = the
share whose top-1 expert is the same, `topk_overlap` = mean |E_a ∩ E_b| / k (k = the first run's number of
experts for the decision). Two checkpoints on the same text give OLMoE's saturation curve; the same model
at batch size 1 and 32 shows batch dependence. Plain joins and counts (no list functions), so the same
query runs on DuckDB and on Spark.
"""

from __future__ import annotations

import pandas as pd

from routescope.store import InputError, Run

from .frames import sql

KEYS = ("sample", "position", "step", "layer", "call")


def agreement(run_a: Run, run_b: Run) -> pd.DataFrame:
    """`layer, decisions, top1_agreement, topk_overlap` over the decisions both runs recorded."""
    keys = ", ".join(KEYS)
    on = " AND ".join(f"x.{k} = y.{k}" for k in KEYS)
    table = sql(
        run_a,
        f"""WITH a AS (SELECT {keys}, rank, expert FROM assignments WHERE NOT dropped),
                 b AS (SELECT {keys}, rank, expert FROM other WHERE NOT dropped),
                 k AS (SELECT {keys}, count(*) AS k FROM a GROUP BY {keys}),
                 shared AS (SELECT {", ".join(f"x.{k}" for k in KEYS)}, count(*) AS n
                            FROM a x JOIN b y ON {on} AND x.expert = y.expert
                            GROUP BY {", ".join(f"x.{k}" for k in KEYS)}),
                 top AS (SELECT {", ".join(f"x.{k}" for k in KEYS)},
                                CASE WHEN x.expert = y.expert THEN 1.0 ELSE 0.0 END AS same
                         FROM a x JOIN b y ON {on} AND x.rank = 0 AND y.rank = 0)
            SELECT x.layer, count(*) AS decisions, avg(x.same) AS top1_agreement,
                   avg(coalesce(s.n, 0) * 1.0 / k.k) AS topk_overlap
            FROM top x JOIN k ON {" AND ".join(f"k.{c} = x.{c}" for c in KEYS)}
            LEFT JOIN shared s ON {" AND ".join(f"s.{k} = x.{k}" for k in KEYS)}
            GROUP BY x.layer ORDER BY x.layer""",
        views={"other": run_b.table_path("assignments")},
    )
    if table.empty:
        raise InputError(f"runs {run_a.name!r} and {run_b.name!r} share no decisions; record the same inputs")
    return table
