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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .frames import FACT_LABELS, TOKEN_LABELS, check_by, computing_sql, counting, label_join, sql
from .permutation import NullDistribution, Scope, permutation_null
from .units import SEQUENCE, unit_codes, unit_name, unit_sql

MAX_CELLS = 1 << 24
"""Label × expert cells filled at once when recomputing shuffled tables (bounds memory to ≈ 130 MB); the
dense path's one-hot label × row matrices are bounded the same way."""
DENSE = 32
"""`joint` multiplies dense matrices when the one-hot products (labels × rows × experts) number at most
`DENSE` × the non-zero cells of `counts` that `bincount` would visit: a BLAS multiply-add costs well under a
nanosecond, a `bincount` cell (key arithmetic, gather, scatter) tens. Sample labels shuffled across units
(a sequence's domain: few values, a dense `[U, E]` table) take the dense path; token-level labels (one
decision's k experts per row, many values) keep `bincount`."""
EXACT_F32 = float(1 << 24)
"""Below this total, integer counts add up exactly in float32 (every partial sum is an integer < 2^24)."""


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
        """`[B, L, E]` label × expert counts for a `[B, rows]` batch of row labels: a one-hot `[B·L, rows]` @
        `counts` product when that is cheap (`DENSE`), else one weighted `bincount` over the non-zero cells
        of `counts` (a decision has only k), in slices of bounded memory. Both give the same counts: exact
        for counts, within float rounding for gate weights."""
        if self._dense:
            return self._joint_dense(np.asarray(labels))
        return self._joint_sparse(np.asarray(labels))

    def null(
        self,
        statistic: Callable[[np.ndarray], np.ndarray],
        *,
        n_permutations: int,
        seed: int,
        scope: Scope | None = None,
    ) -> NullDistribution:
        """The permutation distribution of `statistic(joint)` with the row labels shuffled over this
        table's units (`scope`: the table's own, across or within units, unless given)."""
        return permutation_null(
            lambda labels: statistic(self.joint(labels)),
            self.labels,
            groups=self.units,
            scope=self.scope if scope is None else scope,
            unit=self.unit,
            n_permutations=n_permutations,
            seed=seed,
        )

    @cached_property
    def _cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, expert, weight) of every non-zero cell of `counts`."""
        rows, experts = np.nonzero(self.counts)
        return rows, experts, self.counts[rows, experts]

    @cached_property
    def _dense(self) -> bool:
        n_rows, n_experts = self.counts.shape
        return len(self.values) * n_rows * n_experts <= DENSE * max(len(self._cells[0]), 1)

    @cached_property
    def _dense_counts(self) -> np.ndarray:
        """`counts` as the dense product's right-hand side: float32 where that is exact (integer counts,
        total below 2^24 — half the memory traffic and twice the BLAS rate), else float64."""
        counts = self.counts
        if float(counts.sum()) < EXACT_F32 and bool((counts == np.round(counts)).all()) and counts.min() >= 0:
            return np.ascontiguousarray(counts, dtype=np.float32)
        return np.ascontiguousarray(counts, dtype=np.float64)

    def _joint_dense(self, labels: np.ndarray) -> np.ndarray:
        batch, n_rows = labels.shape
        n_labels, n_experts = len(self.values), self.counts.shape[1]
        counts = self._dense_counts
        codes = np.arange(n_labels, dtype=labels.dtype)[None, :, None]
        step = max(1, MAX_CELLS // max(n_labels * n_rows, 1))
        out = np.empty((batch, n_labels, n_experts))
        for start in range(0, batch, step):
            part = labels[start : start + step]
            size = len(part)
            onehot = (part[:, None, :] == codes).astype(counts.dtype).reshape(size * n_labels, n_rows)
            out[start : start + size] = (onehot @ counts).reshape(size, n_labels, n_experts)
        return out

    def _joint_sparse(self, labels: np.ndarray) -> np.ndarray:
        batch = labels.shape[0]
        n_labels, n_experts = len(self.values), self.counts.shape[1]
        rows, experts, weights = self._cells
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
        return self._joint_sparse(self.labels[None, :])[0]


def unit_tables(
    run: Run,
    label: str,
    by: Sequence[str] = ("layer",),
    *,
    ranks: str = "all",
    weight: str = "count",
    unit: str | None = None,
) -> dict[tuple, UnitTable]:
    """Group key (a tuple of the `by` values) → its `UnitTable`, aggregated in SQL once. Rows are numbered
    in the order of their keys (unit code, or sample, position, ...), whatever order SQL returns them in,
    so the shuffles of a seed — and the p-values — are the same on every call."""
    columns = check_by(by)
    where, measure = counting(ranks, weight)
    where += computing_sql(run)
    name = unit_name(run, unit)
    scope = label_scope(run, label, name)
    join, expr = label_join(run, label)
    unit_join, unit_expr = unit_sql(run, name)
    rows = _row_keys(run, label, scope)
    keys = [f"a.{c}" for c in columns]
    head = ", ".join(
        [*keys, *rows, f"{unit_expr} AS unit_key", f"CAST({expr} AS VARCHAR) AS value", "a.expert"]
    )
    if label in FACT_LABELS or label in TOKEN_LABELS or label not in run.label_columns:
        query = f"""SELECT {head}, {measure} AS n FROM assignments a {join} {unit_join}
                    WHERE NOT a.dropped AND {expr} IS NOT NULL{where} GROUP BY ALL"""
    else:
        # A sample label (domain, class): count per (group, sample, expert) on the assignments alone and
        # join the samples table to that small result, so the 100 M-row scan hashes three integers and
        # probes no join (100 M-row benchmark run: 5.0–5.5 s CPU against 6.2 s joining first). One sample is
        # one unit of a text run; units of several samples add their samples' counts up.
        inner = f"""SELECT {", ".join([*keys, "a.sample"])}, a.expert, {measure} AS n
                    FROM assignments a WHERE NOT a.dropped{where} GROUP BY ALL"""
        total, group = ("a.n", "") if name == SEQUENCE else ("sum(a.n)", " GROUP BY ALL")
        query = f"""SELECT {head}, {total} AS n FROM ({inner}) a {join} {unit_join}
                    WHERE {expr} IS NOT NULL{group}"""
    table = sql(run, query)
    if table.empty:
        return {}
    codes = unit_codes(run, name)
    if name == SEQUENCE:
        samples = codes["sample"].to_numpy(dtype=np.int64)
        lookup = np.full(int(samples.max()) + 1 if len(samples) else 1, -1, dtype=np.int64)
        lookup[samples] = codes["unit"].to_numpy(dtype=np.int64)
        table["unit"] = lookup[table["unit_key"].to_numpy(dtype=np.int64)]
    else:
        table["unit"] = pd.factorize(table["unit_key"], sort=True)[0]
    found, uniques = pd.factorize(table["value"])
    values = sorted(str(v) for v in uniques)
    rank = {v: i for i, v in enumerate(values)}
    table["code"] = np.array([rank[str(v)] for v in uniques], dtype=np.int64)[found]
    row_columns = [r.split(".", 1)[1] for r in rows] or ["unit"]
    out: dict[tuple, UnitTable] = {}
    for group, part in table.groupby(columns, sort=True):
        key = group if isinstance(group, tuple) else (group,)
        row_id = _row_ids(part, row_columns)
        n_rows = int(row_id.max()) + 1
        n_experts = int(part["expert"].max()) + 1
        cell = row_id * n_experts + part["expert"].to_numpy(dtype=np.int64)
        weights = part["n"].to_numpy(dtype=float)
        counts = np.bincount(cell, weights=weights, minlength=n_rows * n_experts).reshape(n_rows, n_experts)
        labels = np.zeros(n_rows, dtype=np.int64)
        labels[row_id] = part["code"].to_numpy()
        units = np.zeros(n_rows, dtype=np.int64)
        units[row_id] = part["unit"].to_numpy()
        if scope == "across" and pd.Series(labels).groupby(units).nunique().max() > 1:
            raise InputError(f"label {label!r} is not constant within units ({name})")  # pragma: no cover
        out[key] = UnitTable(counts, labels, units, values, scope, name)
    return out


def _row_ids(part: pd.DataFrame, row_columns: list[str]) -> np.ndarray:
    """Dense row codes numbered in the sorted order of the row keys (so they do not depend on the order of
    the SQL result)."""
    if len(row_columns) == 1:
        return pd.factorize(part[row_columns[0]], sort=True, use_na_sentinel=False)[0].astype(np.int64)
    codes = [pd.factorize(part[c], sort=True, use_na_sentinel=False)[0] for c in row_columns]
    order = np.lexsort(codes[::-1])
    new = np.zeros(len(order), dtype=bool)
    new[:1] = True
    for code in codes:
        ordered = code[order]
        new[1:] |= ordered[1:] != ordered[:-1]
    ids = np.empty(len(order), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids
