"""DuckDB over a run's Parquet files: the embedded engine every analysis aggregates with.

Analyses aggregate first in SQL (on runs larger than memory DuckDB streams the files) and compute on the
small result in pandas. `connect(run)` opens an in-memory database with one view per table and a
`routers` table from the manifest, so queries join facts with dimensions by name.

`use_engine("spark")` sends the same queries (through `frames.sql`) to Spark over the same files instead
(`spark.py`); DuckDB stays the default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import duckdb
import pandas as pd

from routescope.store import InputError, Run

EngineName = Literal["duckdb", "spark"]
ENGINES: tuple[EngineName, ...] = ("duckdb", "spark")
_ENGINE: ContextVar[EngineName] = ContextVar("routescope_analysis_engine", default="duckdb")


def current_engine() -> EngineName:
    """The engine that `frames.sql` sends queries to in this context (`duckdb` unless `use_engine` says)."""
    return _ENGINE.get()


@contextmanager
def use_engine(name: str) -> Iterator[None]:
    """Within the block, analyses aggregate on `name` (`duckdb` or `spark`)::

    with use_engine("spark"):
        table = balance(run)
    """
    if name not in ENGINES:
        raise InputError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    token = _ENGINE.set(name)  # type: ignore[arg-type]
    try:
        yield
    finally:
        _ENGINE.reset(token)


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
    _disable_harmful_optimizers(con)
    for table in run.info.tables:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({quote_path(run.table_path(table))})")
    routers = pd.DataFrame(
        [{c: r.to_dict().get(c) for c in ROUTER_COLUMNS} for r in run.info.routers],
        columns=list(ROUTER_COLUMNS),
    )
    con.register("routers_frame", routers)
    con.execute("CREATE TABLE routers AS SELECT * FROM routers_frame")
    con.unregister("routers_frame")
    return con


HARMFUL_OPTIMIZERS = ("partial_aggregate_pushdown",)
"""DuckDB optimizers turned off on every connection. `partial_aggregate_pushdown` (in DuckDB 2.0) pushes a
GROUP BY below a join by pre-aggregating the fact side on the join keys; on assignments joined to tokens
(sample, position) every key is unique, so the "pre-aggregation" is a hash table of all 100 M rows: 53 s
CPU and 8.4 GB instead of 10.5 s and 1.1 GB for expert × token id counts (benchmarks/analysis_scale.py)."""


def _disable_harmful_optimizers(con: duckdb.DuckDBPyConnection) -> None:
    known = {row[0] for row in con.execute("SELECT name FROM duckdb_optimizers()").fetchall()}
    present = [name for name in HARMFUL_OPTIMIZERS if name in known]
    if present:
        con.execute(f"SET disabled_optimizers = '{','.join(present)}'")
