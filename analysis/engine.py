"""DuckDB over a run's Parquet files: the embedded engine every analysis aggregates with.

Analyses aggregate first in SQL (on runs larger than memory DuckDB streams the files) and compute on the
small result in pandas. `connect(run)` opens an in-memory database with one view per table and a
`routers` table from the manifest, so queries join facts with dimensions by name.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from routescope.hooks import Run

ROUTER_COLUMNS = ("id", "path", "layer", "kind", "stack", "n_experts", "top_k", "call_count")


def quote_path(path: object) -> str:
    """A file path as a DuckDB string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def connect(run: Run, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views `samples`, `tokens`, `assignments`, `decisions`, `steps`
    over the run's files and a `routers` table from its manifest."""
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for table in run.manifest["tables"]:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({quote_path(run.table_path(table))})")
    routers = pd.DataFrame(
        [{c: r.get(c) for c in ROUTER_COLUMNS} for r in run.routers], columns=list(ROUTER_COLUMNS)
    )
    con.register("routers_frame", routers)
    con.execute("CREATE TABLE routers AS SELECT * FROM routers_frame")
    con.unregister("routers_frame")
    return con
