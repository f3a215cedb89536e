"""Shared plumbing of the analyses: checked grouping columns, label joins, and SQL run on a run.

Every analysis aggregates in DuckDB first (so runs larger than memory stream from Parquet) and finishes on
the small result in pandas. Labels come from three places: the fact tables themselves (`step`, `position`,
`rank`, ...), the tokens table (`token_id`, `row`, `col`, joined on sample, position and the router's stack)
and the samples table (`domain`, `class`, `branch` and any user label).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routescope.store import InputError, RouterInfo, Run

from .engine import connect, current_engine, quote_path

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
            f"JOIN tokens t ON t.sample = {fact}.sample AND t.position = {fact}.position "
            f"AND t.stack = {stack_of(run, fact)}"
        )
        return join, f"t.{label}"
    if label in run.label_columns:
        return f"JOIN samples s ON s.sample = {fact}.sample", f's."{label}"'
    choices = [*FACT_LABELS, *TOKEN_LABELS, *run.label_columns]
    raise InputError(f"run {run.name!r} has no label {label!r}; labels: {', '.join(choices)}")


def stack_of(run: Run, fact: str = "a") -> str:
    """SQL expression for the stack (`decoder`, `encoder`) of the router of each row of `fact`.

    A literal when every router is in one stack, else a CASE over router ids. Joining the `routers` table
    instead gives the planner a tokens × routers product to join with the facts: on a 100 M-row run it
    built a hash table of 25 M assignment rows (1.9 GB) for `vocabulary_specialization`."""
    stacks: dict[str, list[int]] = {}
    for router in run.info.routers:
        stacks.setdefault(router.stack, []).append(router.id)
    names = sorted(stacks)
    if not names:
        return "NULL"
    *cases, last = names
    if not cases:
        return _literal(last)
    whens = " ".join(
        f"WHEN {fact}.router IN ({', '.join(map(str, stacks[name]))}) THEN {_literal(name)}" for name in cases
    )
    return f"CASE {whens} ELSE {_literal(last)} END"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql(run: Run, query: str, views: Mapping[str, Path] | None = None) -> pd.DataFrame:
    """Run one query over the run's tables and return a DataFrame (on Spark inside `use_engine("spark")`);
    `views` adds more Parquet files under names of their own (e.g. another run's assignments)."""
    if current_engine() == "spark":
        from .spark import spark_sql

        return spark_sql(run, query, views)
    con = connect(run)
    try:
        for name, path in (views or {}).items():
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({quote_path(path)})")
        return con.execute(query).df()
    finally:
        con.close()


def experts_per_group(run: Run, by: list[str]) -> dict[int, int] | int:
    """Number of experts that compute (zero-computation experts left out): per layer or per router when
    grouping by them, else the largest router's."""
    ids = computing_ids(run, by)
    return {key: len(v) for key, v in ids.items()} if isinstance(ids, dict) else len(ids)


def computing_ids(run: Run, by: list[str]) -> dict[int, list[int]] | list[int]:
    """Ids of the experts that compute (`range(n_experts)` without the router's `zero_experts`): per router
    or per layer when grouping by them (a layer's routers pooled), else the largest router's."""

    def ids(r: RouterInfo) -> list[int]:
        zero = set(r.zero_experts)
        return [e for e in range(r.n_experts) if e not in zero]

    routers = run.info.routers
    if "router" in by:
        return {r.id: ids(r) for r in routers}
    if "layer" in by:
        pooled: dict[int, set[int]] = {}
        for r in routers:
            pooled.setdefault(r.layer, set()).update(ids(r))
        return {layer: sorted(v) for layer, v in pooled.items()}
    return ids(max(routers, key=lambda r: r.n_experts))


def computing_sql(run: Run, fact: str = "a") -> str:
    """A WHERE clause part (`" AND …"`, or `""` when the run has none) that leaves out the assignments to
    zero-computation experts (manifest `routers[].zero_experts`, e.g. LongCat-Flash's identity experts)."""
    parts = [
        f"({fact}.router = {r.id} AND {fact}.expert IN ({', '.join(str(int(e)) for e in r.zero_experts)}))"
        for r in run.info.routers
        if r.zero_experts
    ]
    return f" AND NOT ({' OR '.join(parts)})" if parts else ""


RANKS = ("all", "top1")
"""Which of a decision's experts count: every chosen expert (`all`, as OLMoE counts) or only the first
(`top1`, as the Mixtral paper's figures show)."""
WEIGHTS = ("count", "gate")
"""What an assignment contributes: 1 (`count`) or the gate weight the model applied (`gate`)."""


def counting(ranks: str = "all", weight: str = "count", fact: str = "a") -> tuple[str, str]:
    """(extra WHERE condition, aggregate) for the counting convention: `ranks` picks the assignments that
    count, `weight` what each contributes. Both are validated here, once."""
    if ranks not in RANKS:
        raise InputError(f"unknown ranks {ranks!r}; choose from {', '.join(RANKS)}")
    if weight not in WEIGHTS:
        raise InputError(f"unknown weight {weight!r}; choose from {', '.join(WEIGHTS)}")
    where = f" AND {fact}.rank = 0" if ranks == "top1" else ""
    measure = f"sum({fact}.weight)" if weight == "gate" else "count(*)"
    return where, measure


def counting_label(ranks: str = "all", weight: str = "count") -> str:
    """How assignments were counted, in words, for figure captions and the dashboard (stored in a table's
    `attrs["counting"]`)."""
    which = "all k ranks" if ranks == "all" else "top-1 only"
    what = "gate-weighted" if weight == "gate" else "counts"
    return f"{which}, {what}"


def norm_entropy_sql(entropy: str = "d.entropy", n_experts: str = "r.n_experts") -> str:
    """SQL for the normalised router entropy H / ln E of a decision, in [0, 1] (1: probability spread
    evenly over the E experts). The one definition every analysis, view and dashboard table uses; a
    one-expert router counts as E = 2, so it reads 0, never a division by zero."""
    return f"{entropy} / ln(greatest({n_experts}, 2))"


def norm_entropy(entropy: np.ndarray | pd.Series | float, n_experts: Any) -> Any:
    """`norm_entropy_sql` in numpy/pandas: entropy (nats) over ln E, E counted as at least 2."""
    return entropy / np.log(np.maximum(n_experts, 2))


def load_entropy(share: np.ndarray, axis: int = -1) -> np.ndarray:
    """Normalised entropy of expert load shares along `axis` (the E experts): −Σ p ln p / ln E; 1 for a
    one-expert layer, whose load is as even as it can be."""
    n = share.shape[axis]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(share > 0, share * np.log(share), 0.0).sum(axis=axis)
    return norm_entropy(entropy, n) if n > 1 else np.ones_like(entropy)
