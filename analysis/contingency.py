"""Label × expert contingency tables kept apart by unit, so a permutation test can shuffle the label.

`label_nmi`, `specialization` and the claims need the same thing: per group (a layer, a layer and step,
...) the counts of assignments by label value and expert, and a way to recompute those counts with the
label shuffled as the null hypothesis allows (`permutation.py`). A `UnitTable` holds one group's counts
decomposed by *row*, where a row is what the label belongs to:

- a **unit** when the label is constant within units (domain, class, any sample label constant in the
  unit): rows are units and whole units are shuffled between each other (`scope="across"`);
- a **sample** when a sample-level label varies within its unit (the CFG `branch` within a generated
  image): samples are shuffled within their unit;
- a **decision** (one token × router × step × call) when the label is a token or fact column (position,
  patch row/col, step, token id): decisions are shuffled within their unit, a token's k assignments
  moving together;
- an **assignment** for `rank`, the one label that differs between a decision's assignments.

Counts are aggregated in SQL per (group, row, label, expert), so the shuffles work on small arrays: a
`[rows, E]` matrix of per-row expert counts and one label code per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .frames import FACT_LABELS, TOKEN_LABELS, check_by, counting, label_join, sql
from .permutation import Scope
from .units import SEQUENCE, unit_codes, unit_name, unit_sql

MAX_CELLS = 1 << 24
"""Label × expert cells filled at once when recomputing shuffled tables (bounds memory to ≈ 130 MB)."""


def label_scope(run: Run, label: str, unit: str | None = None) -> Scope:
    """`across` when `label` is a sample label constant within every unit, else `within`."""
    name = unit_name(run, unit)
    if label in FACT_LABELS or label in TOKEN_LABELS or label not in run.label_columns:
        return "within"
    if label == name:
        return "across"
    columns = ["sample", label] if name == SEQUENCE else ["sample", label, name]
    samples = run.samples(columns)
    key = "sample" if name == SEQUENCE else name
    varies = samples.groupby(key, dropna=False)[label].nunique(dropna=False).max()
    return "across" if not varies or varies <= 1 else "within"


def _row_keys(run: Run, label: str, scope: Scope) -> list[str]:
    """Columns that identify what the label belongs to (see the module docstring)."""
    if scope == "across":
        return []
    if label == "rank":
        return ["a.sample", "a.position", "a.step", "a.router", "a.call", "a.rank"]
    if label in run.label_columns:
        return ["a.sample"]
    return ["a.sample", "a.position", "a.step", "a.router", "a.call"]


@dataclass(frozen=True)
class UnitTable:
    """One group's assignments as `counts[r, e]` per row r and expert e, with the label code of each row
    (`labels`) and the unit code of each row (`units`)."""

    counts: np.ndarray
    labels: np.ndarray
    units: np.ndarray
    values: list[str]
    """The label value of each code."""
    scope: Scope
    unit: str

    def joint(self, labels: np.ndarray) -> np.ndarray:
        """`[B, L, E]` label × expert counts for a `[B, rows]` batch of row labels: one weighted `bincount`
        over the non-zero cells of `counts` (a decision has only k), in slices of bounded memory."""
        batch = labels.shape[0]
        n_labels, n_experts = len(self.values), self.counts.shape[1]
        rows, experts = np.nonzero(self.counts)
        weights = self.counts[rows, experts]
        cells = n_labels * n_experts
        step = max(1, MAX_CELLS // max(cells, 1))
        out = np.empty((batch, n_labels, n_experts))
        for start in range(0, batch, step):
            part = labels[start : start + step]
            size = len(part)
            key = (np.arange(size)[:, None] * n_labels + part[:, rows]) * n_experts + experts[None, :]
            out[start : start + size] = np.bincount(
                key.ravel(), weights=np.tile(weights, size), minlength=size * cells
            ).reshape(size, n_labels, n_experts)
        return out

    def per_unit(self, n_units: int | None = None) -> np.ndarray:
        """`[U, L·E]`: each unit's label × expert table, flattened — what a bootstrap over units resamples
        (`n_units` pads to the run's unit count, so tables of several groups line up)."""
        n_units = n_units or int(self.units.max()) + 1
        n_labels, n_experts = len(self.values), self.counts.shape[1]
        out = np.zeros((n_units, n_labels, n_experts))
        np.add.at(out, (self.units, self.labels), self.counts)
        return out.reshape(n_units, n_labels * n_experts)

    @property
    def observed(self) -> np.ndarray:
        """The `[L, E]` label × expert table of the run itself."""
        return self.joint(self.labels[None, :])[0]


def unit_tables(
    run: Run,
    label: str,
    by: Sequence[str] = ("layer",),
    *,
    ranks: str = "all",
    weight: str = "count",
    unit: str | None = None,
) -> dict[tuple, UnitTable]:
    """Group key (a tuple of the `by` values) → its `UnitTable`, aggregated in SQL once."""
    columns = check_by(by)
    where, measure = counting(ranks, weight)
    name = unit_name(run, unit)
    scope = label_scope(run, label, name)
    join, expr = label_join(run, label)
    unit_join, unit_expr = unit_sql(run, name)
    rows = _row_keys(run, label, scope)
    keys = [f"a.{c}" for c in columns]
    select = ", ".join([*keys, *rows])
    table = sql(
        run,
        f"""SELECT {select + ", " if select else ""}{unit_expr} AS unit_key, CAST({expr} AS VARCHAR) AS value,
                   a.expert, {measure} AS n
            FROM assignments a {join} {unit_join}
            WHERE NOT a.dropped AND {expr} IS NOT NULL{where} GROUP BY ALL""",
    )
    if table.empty:
        return {}
    codes = unit_codes(run, name)
    if name == SEQUENCE:
        table["unit"] = table["unit_key"].map(dict(zip(codes["sample"], codes["unit"], strict=True)))
    else:
        table["unit"] = pd.factorize(table["unit_key"], sort=True)[0]
    values = sorted(table["value"].unique())
    table["code"] = table["value"].map({v: i for i, v in enumerate(values)})
    row_columns = [r.split(".", 1)[1] for r in rows] or ["unit"]
    out: dict[tuple, UnitTable] = {}
    for group, part in table.groupby(columns, sort=True):
        key = group if isinstance(group, tuple) else (group,)
        row_id, _ = pd.factorize(pd.MultiIndex.from_frame(part[row_columns]))
        n_rows = int(row_id.max()) + 1
        n_experts = int(part["expert"].max()) + 1
        counts = np.zeros((n_rows, n_experts))
        np.add.at(counts, (row_id, part["expert"].to_numpy(dtype=np.int64)), part["n"].to_numpy(dtype=float))
        labels = np.zeros(n_rows, dtype=np.int64)
        labels[row_id] = part["code"].to_numpy()
        units = np.zeros(n_rows, dtype=np.int64)
        units[row_id] = part["unit"].to_numpy()
        if scope == "across" and pd.Series(labels).groupby(units).nunique().max() > 1:
            raise InputError(f"label {label!r} is not constant within units ({name})")  # pragma: no cover
        out[key] = UnitTable(counts, labels, units, values, scope, name)
    return out
