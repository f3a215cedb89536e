"""Shared plumbing of the analyses: checked grouping columns, label joins, and SQL run on a run.

Every analysis aggregates in DuckDB first (so runs larger than memory stream from Parquet) and finishes on
the small result in pandas. Labels come from three places: the fact tables themselves (`step`, `position`,
`rank`, ...), the tokens table (`token_id`, `row`, `col`, joined on sample, position and the router's stack)
and the samples table (`domain`, `class`, `branch` and any user label).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from routescope.hooks import InputError, Run

from .engine import connect, current_engine

GROUPS = ("layer", "router", "step", "call")
"""Fact-table columns an analysis may group by."""
FACT_LABELS = ("step", "position", "rank", "call")
TOKEN_LABELS = ("token_id", "token", "row", "col", "generated")


def check_by(by: Sequence[str]) -> list[str]:
    """Validate grouping columns; a typo is a one-line error naming the choices."""
    columns = [by] if isinstance(by, str) else list(by)
    bad = [c for c in columns if c not in GROUPS]
    if bad:
        raise InputError(f"cannot group by {', '.join(bad)}; choose from {', '.join(GROUPS)}")
    return columns


def label_join(run: Run, label: str, fact: str = "a") -> tuple[str, str]:
    """(JOIN clause, SQL expression) that bring `label` next to the fact table aliased `fact`."""
    if label in FACT_LABELS:
        return "", f"{fact}.{label}"
    if label in TOKEN_LABELS:
        join = (
            f"JOIN routers r ON r.id = {fact}.router "
            f"JOIN tokens t ON t.sample = {fact}.sample AND t.position = {fact}.position "
            "AND t.stack = r.stack"
        )
        return join, f"t.{label}"
    if label in run.label_columns:
        return f"JOIN samples s ON s.sample = {fact}.sample", f's."{label}"'
    choices = [*FACT_LABELS, *TOKEN_LABELS, *run.label_columns]
    raise InputError(f"run {run.name!r} has no label {label!r}; labels: {', '.join(choices)}")


def sql(run: Run, query: str) -> pd.DataFrame:
    """Run one query over the run's tables and return a DataFrame (on Spark inside `use_engine("spark")`)."""
    if current_engine() == "spark":
        from .spark import spark_sql

        return spark_sql(run, query)
    con = connect(run)
    try:
        return con.execute(query).df()
    finally:
        con.close()


def experts_per_group(run: Run, by: list[str]) -> dict[int, int] | int:
    """Number of experts: per layer or per router when grouping by them, else the largest router's."""
    if "router" in by:
        return {int(r["id"]): int(r["n_experts"]) for r in run.routers}
    if "layer" in by:
        sizes: dict[int, int] = {}
        for r in run.routers:
            sizes[int(r["layer"])] = max(sizes.get(int(r["layer"]), 0), int(r["n_experts"]))
        return sizes
    return max(int(r["n_experts"]) for r in run.routers)
