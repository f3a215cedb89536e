"""Spark SQL behind the analyses: the same queries over the same Parquet files, on a cluster if asked.

DuckDB is the embedded default and reads a run on one machine. When a run's tables outgrow one machine
(a sharded recording of billions of tokens on shared storage), `use_engine("spark")` sends every query
that an analysis issues through `frames.sql` to Spark instead: each of the run's tables becomes a temporary
view over its Parquet file (`spark.read.parquet`), `routers` becomes a temporary view built from the
manifest, and the result comes back as a pandas DataFrame, so the finishing code in pandas is unchanged
and the numbers are the same (tests/test_spark.py compares both engines on several analyses).

The analyses are written in DuckDB's dialect. Most of it is also Spark SQL (`GROUP BY ALL`, `ORDER BY ALL`,
`FILTER (WHERE ...)`, `<<`, `bit_or`, window functions; double-quoted identifiers once
`spark.sql.ansi.doubleQuotedIdentifiers` is on). The few DuckDB-only spellings are rewritten by the
declarative table `REWRITES` below, one tested rule per idiom; anything else fails in Spark with its own
message. Decimal literals become DOUBLE literals (as DuckDB's division does, rather than Spark's DECIMAL
rounded to six places), and any DECIMAL result column comes back as float64.

Which Spark: an active `SparkSession` (built by the caller, `spark-submit` or a notebook: any cluster and
configuration) is used as it is. Otherwise one is started with master `ROUTESCOPE_SPARK_MASTER` (default
`local[*]`) — set it to `spark://host:7077`, `yarn` or `k8s://...`; the store must then be on storage
every executor reads at the same path (NFS, or a mounted object store). pyspark is the optional extra
`routescope[spark]`; Spark needs Java 17 or newer.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from routescope.store import InputError, Run

from .engine import ROUTER_COLUMNS

MASTER_ENV = "ROUTESCOPE_SPARK_MASTER"
DEFAULT_MASTER = "local[*]"

REWRITES: tuple[tuple[str, str, str], ...] = (
    (
        r"unnest\(range\(len\(([\w.]+)\)\)\)\s+AS\s+(\w+),\s*unnest\(\1\)\s+AS\s+(\w+)",
        r"posexplode(\1) AS (\2, \3)",
        "a list's positions and values side by side (DuckDB: two unnests; Spark: one posexplode)",
    ),
    (r"\bAS\s+UBIGINT\b", "AS BIGINT", "Spark has no unsigned integers; bit 63 wraps to the sign bit"),
    (r"\blist\(", "collect_list(", "aggregate into a list"),
    (r"\barg_max\(", "max_by(", "value at the maximum"),
    (r"\barg_min\(", "min_by(", "value at the minimum"),
    (r"\bquantile_cont\(", "percentile(", "exact quantile"),
    (r"\blist_contains\(", "array_contains(", "membership in a list"),
    (r"\bAS\s+VARCHAR\)", "AS STRING)", "cast to text"),
    (
        r"\bstring_agg\(((?:[^()]|\([^()]*\))+?),\s*('[^']*')\s+ORDER BY\s+([^)]+)\)",
        r"string_agg(\1, \2) WITHIN GROUP (ORDER BY \3)",
        "ordered string aggregation",
    ),
    (
        r"(?<![\w.'\"])(\d+\.\d+)(?![\w.'\"])",
        r"\1D",
        "decimal literals as DOUBLE, so `1.25 * n / m` is not rounded to DECIMAL's scale as in Spark",
    ),
)
"""(DuckDB pattern, Spark replacement, what the idiom does): applied in order, case-insensitively."""

_SPARK_CONF = {
    "spark.sql.ansi.doubleQuotedIdentifiers": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
_LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
}

_lock = threading.RLock()
_registered: dict[str, Any] = {"key": None}


def to_spark_sql(query: str) -> str:
    """Rewrite the DuckDB-only idioms of `query` (see `REWRITES`) into Spark SQL."""
    for pattern, replacement, _why in REWRITES:
        query = re.sub(pattern, replacement, query, flags=re.IGNORECASE)
    return query


def session() -> Any:
    """The active SparkSession, or a new one on `ROUTESCOPE_SPARK_MASTER` (default `local[*]`)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise InputError(
            "the Spark engine needs pyspark: pip install 'routescope[spark]' (and Java 17+)"
        ) from None
    spark = SparkSession.getActiveSession()
    if spark is None:
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        builder = SparkSession.builder.master(os.environ.get(MASTER_ENV, DEFAULT_MASTER)).appName(
            "routescope"
        )
        for key, value in {**_LOCAL_CONF, **_SPARK_CONF}.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
    for key, value in _SPARK_CONF.items():
        spark.conf.set(key, value)
    return spark


def register(spark: Any, run: Run) -> None:
    """Temporary views `samples`, `tokens`, `assignments`, `decisions`, `steps`, ... over the run's Parquet
    files and `routers` from its manifest (skipped when this run is already the registered one)."""
    key = (str(run.path.resolve()), run.info.finished, id(spark))
    if _registered["key"] == key:
        return
    for table in run.info.tables:
        spark.read.parquet(str(run.table_path(table).resolve())).createOrReplaceTempView(table)
    routers = pd.DataFrame(
        [{c: r.to_dict().get(c) for c in ROUTER_COLUMNS} for r in run.info.routers],
        columns=list(ROUTER_COLUMNS),
    )
    schema = (
        "id INT, path STRING, layer INT, kind STRING, stack STRING, n_experts INT, top_k INT, call_count INT"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyspark warns about pandas 3; the conversions used here work
        spark.createDataFrame(
            routers.astype(object).where(routers.notna(), None), schema
        ).createOrReplaceTempView("routers")
    _registered["key"] = key


def spark_sql(run: Run, query: str, views: Mapping[str, Path] | None = None) -> pd.DataFrame:
    """Run one analysis query (DuckDB dialect) on Spark over the run's tables (and extra `views`: name →
    Parquet file); a pandas DataFrame back."""
    spark = session()
    with _lock:
        register(spark, run)
        for name, path in (views or {}).items():
            spark.read.parquet(str(Path(path).resolve())).createOrReplaceTempView(name)
        frame = spark.sql(to_spark_sql(query))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = frame.toPandas()
    return _plain_numbers(result)


def _plain_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """DECIMAL results (Spark's type for `1.25 * n`) as float64, like DuckDB's doubles."""
    for column in frame.columns:
        present = frame[column].dropna()
        if frame[column].dtype == object and len(present) and isinstance(present.iloc[0], Decimal):
            frame[column] = frame[column].astype("float64")
    return frame
