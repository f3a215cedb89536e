"""Batch dependence: does a sequence's routing change when other sequences share its batch?

"Buffer Overflow in MoE" shows that routing with cross-batch dependencies (a capacity shared by the
batch, expert-choice routing) lets one sequence change another's experts. Given the same inputs recorded
alone and in a batch (`routescope.probes.probe_batch`), a decision *changed* when its set of
(expert, dropped) pairs differs between the runs: a different expert, or a token dropped in one run and
dispatched in the other. Gate weights are compared separately (`max_weight_diff`, over the experts both
runs chose): batched matrix products round differently, so weights may differ in the last float bits
while no decision changes.
"""

from __future__ import annotations

import pandas as pd

from routescope.store import InputError, Run

from .engine import connect, quote_path

KEYS = ("sample", "position", "step", "router", "call")


def batch_dependence(alone: Run, batched: Run) -> pd.DataFrame:
    """`router, layer, stack, decisions, changed, changed_share, dropped_alone, dropped_batched,
    max_weight_diff` per router, over the decisions both runs recorded."""
    con = connect(alone)
    try:
        con.execute(
            "CREATE VIEW other AS SELECT * FROM "
            f"read_parquet({quote_path(batched.table_path('assignments'))})"
        )
        keys = ", ".join(KEYS)
        on = " AND ".join(f"a.{k} = b.{k}" for k in KEYS)
        per = (
            "SELECT {keys}, any_value(layer) AS layer, "
            "list_sort(list(CAST(expert AS VARCHAR) || CASE WHEN dropped THEN '!' ELSE '' END)) AS picks, "
            "bool_or(dropped) AS dropped FROM {table} GROUP BY {keys}"
        )
        table = con.execute(
            f"""WITH a AS ({per.format(keys=keys, table="assignments")}),
                     b AS ({per.format(keys=keys, table="other")}),
                     w AS (SELECT a.router, max(abs(a.weight - b.weight)) AS max_weight_diff
                           FROM assignments a JOIN other b ON {on} AND a.expert = b.expert GROUP BY a.router)
                SELECT a.router, any_value(a.layer) AS layer, any_value(r.stack) AS stack,
                       count(*) AS decisions,
                       sum(CASE WHEN a.picks <> b.picks THEN 1 ELSE 0 END) AS changed,
                       sum(CASE WHEN a.dropped THEN 1 ELSE 0 END) AS dropped_alone,
                       sum(CASE WHEN b.dropped THEN 1 ELSE 0 END) AS dropped_batched,
                       any_value(w.max_weight_diff) AS max_weight_diff
                FROM a JOIN b ON {on} JOIN routers r ON r.id = a.router LEFT JOIN w ON w.router = a.router
                GROUP BY a.router ORDER BY a.router"""
        ).df()
    finally:
        con.close()
    if table.empty:
        raise InputError(
            f"runs {alone.name!r} and {batched.name!r} share no decisions; record the same inputs"
        )
    for column in ("decisions", "changed", "dropped_alone", "dropped_batched"):
        table[column] = table[column].astype("int64")
    table.insert(5, "changed_share", table["changed"] / table["decisions"])
    return table
