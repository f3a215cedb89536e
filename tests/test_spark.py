"""The Spark engine gives the analyses the same numbers as DuckDB on the same run.

A real recording (the bundled tiny Mixtral on labelled texts, with probabilities) is analysed twice — once
on DuckDB, once inside `use_engine("spark")` on a local Spark — and every table must match. The dialect
rewrites are checked as strings without Spark. Spark tests skip only when pyspark (the optional extra
`routescope[spark]`) is not installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import routescope
from routescope.analysis import compute, current_engine, use_engine
from routescope.analysis.spark import to_spark_sql
from routescope.cli import main
from routescope.hooks import LoadedModel
from routescope.store import InputError, Run, Store

needs_spark = pytest.mark.skipif(
    importlib.util.find_spec("pyspark") is None,
    reason="pyspark is not installed (optional extra: pip install 'routescope[spark]')",
)

TEXTS = [
    "def add(a, b): return a + b",
    "The river bent around the hill.",
    '{"key": [1, 2, 3]}',
    "for i in range(10): print(i)",
    "Rain fell on the quiet town all night.",
    '{"name": "x", "size": 4}',
]
DOMAINS = ["code", "prose", "json", "code", "prose", "json"]

CASES: dict[str, dict] = {
    "load": {},
    "balance": {"capacity_factor": 1.25},  # aux_loss (probs: posexplode) and overflow (decimal literal)
    "specialization": {"label": "domain"},
    "nmi": {"label": "domain"},
    "uncertainty": {},
    "uncertain-labels": {"label": "domain"},
    "coactivation": {"layer": 1},  # bit_or of 1 << expert
    "vocabulary": {},
    "paths": {},  # string_agg ... ORDER BY
    "repeat": {},  # list / list_contains
    "transitions": {},
    "summary": {},  # count(DISTINCT ...) FILTER (WHERE ...)
}


@pytest.fixture(scope="module")
def run(tiny_lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Run:
    store = Store(tmp_path_factory.mktemp("spark") / "store")
    return routescope.record(
        tiny_lm, TEXTS, store=store, name="spark", labels={"domain": DOMAINS}, probs=True, progress=False
    )


@pytest.fixture(scope="module")
def spark_session() -> Iterator[None]:
    yield
    if importlib.util.find_spec("pyspark") is not None:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in frame.columns if frame[c].dtype.kind in "iuO" or str(frame[c].dtype) == "str"]
    return frame.sort_values(keys or list(frame.columns)).reset_index(drop=True)


@needs_spark
@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CASES))
def test_spark_gives_the_duckdb_table(run: Run, spark_session: None, kind: str) -> None:
    options = dict(CASES[kind])
    label, layer = options.pop("label", None), options.pop("layer", None)
    duck = compute(kind, run, label=label, layer=layer, **options)
    with use_engine("spark"):
        assert current_engine() == "spark"
        spark = compute(kind, run, label=label, layer=layer, **options)
    assert current_engine() == "duckdb"
    assert len(duck) > 0
    assert list(spark.columns) == list(duck.columns)
    pd.testing.assert_frame_equal(_sorted(spark), _sorted(duck), check_dtype=False, rtol=1e-9, atol=1e-12)


@needs_spark
@pytest.mark.slow
def test_agreement_of_two_runs_on_spark(run: Run, spark_session: None, tiny_lm: LoadedModel) -> None:
    """Two runs (the second at batch size 1, with other pads) joined through an extra view on both engines."""
    other = routescope.record(
        tiny_lm, TEXTS, store=Store(run.path.parent), name="spark-b", batch_size=1, progress=False
    )
    duck = compute("agreement", run, other=other)
    with use_engine("spark"):
        spark = compute("agreement", run, other=other)
    assert duck["decisions"].sum() == len(run.decisions())
    pd.testing.assert_frame_equal(_sorted(spark), _sorted(duck), check_dtype=False, rtol=1e-9, atol=1e-12)


@needs_spark
@pytest.mark.slow
def test_report_engine_option(run: Run, spark_session: None, tmp_path: Path) -> None:
    store = str(run.path.parent)
    outputs = {}
    for engine in ("duckdb", "spark"):
        out = tmp_path / f"{engine}.csv"
        argv = ["report", "--store", store, "--run", run.name, "--kind", "balance", "--engine", engine]
        assert main([*argv, "--format", "csv", "--out", str(out)]) == 0
        outputs[engine] = pd.read_csv(out)
    pd.testing.assert_frame_equal(outputs["spark"], outputs["duckdb"], rtol=1e-9)
    assert outputs["spark"]["n_experts"].tolist() == [r["n_experts"] for r in run.routers]


def test_dialect_rewrites() -> None:
    assert (
        to_spark_sql("SELECT layer, unnest(range(len(probs))) AS expert, unnest(probs) AS p FROM decisions")
        == "SELECT layer, posexplode(probs) AS (expert, p) FROM decisions"
    )
    assert (
        to_spark_sql("bit_or(CAST(1 AS UBIGINT) << CAST(expert AS UBIGINT))")
        == "bit_or(CAST(1 AS BIGINT) << CAST(expert AS BIGINT))"
    )
    assert (
        to_spark_sql("string_agg(CAST(expert AS VARCHAR), '>' ORDER BY layer, call) AS path")
        == "string_agg(CAST(expert AS STRING), '>') WITHIN GROUP (ORDER BY layer, call) AS path"
    )
    assert to_spark_sql("list(expert), list_contains(c.experts, a.expert)") == (
        "collect_list(expert), array_contains(c.experts, a.expert)"
    )
    assert to_spark_sql("ceil(1.25 * total / r.n_experts), x.a1, 'v1.5'") == (
        "ceil(1.25D * total / r.n_experts), x.a1, 'v1.5'"
    )
    assert to_spark_sql("SELECT layer, count(*) FROM assignments GROUP BY ALL") == (
        "SELECT layer, count(*) FROM assignments GROUP BY ALL"
    )


def test_unknown_engine_is_a_one_line_error() -> None:
    with (
        pytest.raises(InputError, match="unknown engine 'polars'; choose from duckdb, spark"),
        use_engine("polars"),
    ):
        pass
    assert current_engine() == "duckdb"
