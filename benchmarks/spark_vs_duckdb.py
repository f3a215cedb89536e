"""Spark (local mode) against DuckDB on the same synthetic run: wall time per analysis and equality.

The run comes from `_synthetic_run.py` (planted routing written through the real `RunWriter`; 100 M
assignment rows by default: 3.125 M tokens × 8 layers × top-4 of 64 experts, one domain label per
sample; generated once and cached in `--store`). Each analysis is computed by `compute()` twice: on
DuckDB (the default engine) and inside `use_engine("spark")` on a local Spark (`local[*]`, 2 GB driver);
the two tables must be equal (sorted by their key columns; floats to a relative 1e-9). Spark's start-up
(JVM, session) is timed apart; the first Spark query also pays its code generation.

On one machine Spark is expected to be slower: the point is that the same analysis code runs unchanged
on a cluster (docs/scale.md). This prints measurements; it is not a test and asserts nothing.

    .venv/bin/python benchmarks/spark_vs_duckdb.py [--rows N] [--store DIR] [--kinds load,balance,...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from _synthetic_run import Shape, synthetic_run

from routescope.analysis import compute, use_engine

KINDS = {
    "load": {},
    "balance": {},
    "specialization": {"label": "domain"},
    "nmi": {"label": "domain"},
    "uncertainty": {},
    "coactivation": {"layer": 0},
}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in frame.columns if frame[c].dtype.kind in "iuO" or str(frame[c].dtype) == "str"]
    return frame.sort_values(keys or list(frame.columns)).reset_index(drop=True)


def _equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(_sorted(a), _sorted(b), check_dtype=False, rtol=1e-9, atol=1e-12)
    except AssertionError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000, help="assignment rows of the synthetic run")
    parser.add_argument("--store", default=str(Path(tempfile.gettempdir()) / "routescope-bench"))
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    os.environ.setdefault("ROUTESCOPE_SPARK_MASTER", "local[*]")

    start = time.perf_counter()
    run = synthetic_run(Path(args.store), Shape(rows=args.rows), progress=print)
    print(
        f"run {run.name}: {run.manifest['rows']['assignments']:,} assignment rows "
        f"({time.perf_counter() - start:.0f} s to open or generate)"
    )

    from pyspark.sql import SparkSession

    start = time.perf_counter()
    SparkSession.builder.master(os.environ["ROUTESCOPE_SPARK_MASTER"]).config(
        "spark.driver.memory", "2g"
    ).config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").config(
        "spark.sql.shuffle.partitions", "8"
    ).getOrCreate().sparkContext.setLogLevel("ERROR")
    print(f"Spark session start: {time.perf_counter() - start:.1f} s")

    print("| analysis | DuckDB s | Spark s | Spark ÷ DuckDB | equal |")
    print("|---|---|---|---|---|")
    totals = [0.0, 0.0]
    for kind in args.kinds.split(","):
        options = dict(KINDS[kind])
        label, layer = options.pop("label", None), options.pop("layer", None)
        start = time.perf_counter()
        duck = compute(kind, run, label=label, layer=layer, **options)
        duck_s = time.perf_counter() - start
        start = time.perf_counter()
        with use_engine("spark"):
            spark = compute(kind, run, label=label, layer=layer, **options)
        spark_s = time.perf_counter() - start
        totals[0] += duck_s
        totals[1] += spark_s
        print(
            f"| {kind} | {duck_s:.2f} | {spark_s:.2f} | {spark_s / duck_s:.1f} | {_equal(duck, spark)} |",
            flush=True,
        )
    print(f"| all | {totals[0]:.2f} | {totals[1]:.2f} | {totals[1] / totals[0]:.1f} | |")
    print(f"cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
