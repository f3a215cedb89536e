"""Specialization: which labels (domain, class, token id, patch row, step, ...) each expert takes.

For a group (by default a layer), a label value D and an expert e, on routed, non-dropped assignments:
- `count` = assignments of D's tokens to e;
- `share` = count / Σ_e count — the share of D's assignments that go to e (OLMoE's domain share; the
  shares of one label value sum to 1 over the experts, so the uniform baseline is 1/E);
- `lift` = share / load_e, with load_e = e's share of all the group's assignments: P(D | e) / P(D), 1 when
  the expert takes D at D's base rate, > 1 when it specialises in D;
- `uniform_lift` = share · E: the share against the uniform baseline 1/E.
`label_nmi` is the normalised mutual information between label and expert per group, computed on the
same assignment counts: I(L; E) / mean(H(L), H(E)) (the arithmetic normalisation scikit-learn uses by
default), 0 when routing ignores the label and 1 when each label value has its own experts. Its `p_value`
comes from a permutation test over the run's units of independence (`units.py`, `permutation.py`):
a label constant within units (domain, class) is shuffled between units, a label that varies inside
them (position, step, token id) within each unit; the null is "the expert a row gets does not depend on
its label" and `null_mean` is the NMI expected by chance at this sample size (plug-in NMI is biased
upward, most for many-valued labels). Pearson's χ² stays as a descriptive statistic (`chi2`, `dof`):
it treats every assignment as independent, which they are not, so it has no p-value here.

Zero-computation experts (manifest `routers[].zero_experts`, LongCat-Flash) are left out of every count,
and E is the number of experts that compute; a decision may have any number of assignments (expert
choice, zero experts), and every count is over assignments, so no formula assumes a fixed k.

Counting conventions: `ranks="all"` counts every chosen expert (OLMoE), `ranks="top1"` only the first
(the Mixtral paper's figures); `weight="count"` counts assignments, `weight="gate"` sums the gate weights
the model applied. Defaults: all ranks, counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .contingency import unit_tables
from .frames import (
    check_by,
    computing_sql,
    counting,
    counting_label,
    experts_per_group,
    label_join,
    sql,
)
from .information import nmi
from .permutation import DEFAULT_PERMUTATIONS, check_permutations, shuffled_labels


def label_counts(
    run: Run, label: str, by: Sequence[str] = ("layer",), *, ranks: str = "all", weight: str = "count"
) -> pd.DataFrame:
    """`<by>, expert, <label>, count`: the expert × label contingency table per group (aggregated in SQL);
    `count` is a gate-weight sum with `weight="gate"`."""
    columns = check_by(by)
    where, measure = counting(ranks, weight)
    where += computing_sql(run)
    join, expr = label_join(run, label)
    keys = ", ".join(f"a.{c}" for c in columns)
    return sql(
        run,
        f'SELECT {keys}, a.expert, {expr} AS "{label}", {measure} AS count FROM assignments a {join} '
        f"WHERE NOT a.dropped{where} GROUP BY ALL ORDER BY ALL",
    )


def specialization(
    run: Run,
    label: str,
    by: Sequence[str] = ("layer",),
    *,
    ranks: str = "all",
    weight: str = "count",
    n_permutations: int | None = None,
    seed: int = 0,
    unit: str | None = None,
) -> pd.DataFrame:
    """`<by>, expert, <label>, count, share, lift, uniform_lift` (see the module docstring); with
    `n_permutations`, also `null_lift` (the lift expected by chance: its permutation mean) and `p_value`
    (one-sided, lift at least as large under the label shuffled over units)."""
    columns = check_by(by)
    table = label_counts(run, label, columns, ranks=ranks, weight=weight)
    if table.empty:
        return table.assign(share=[], lift=[], uniform_lift=[])
    per_label = table.groupby([*columns, label], dropna=False)["count"].transform("sum")
    per_expert = table.groupby([*columns, "expert"])["count"].transform("sum")
    per_group = table.groupby(columns)["count"].transform("sum")
    table["share"] = table["count"] / per_label
    table["lift"] = table["share"] / (per_expert / per_group)
    sizes = experts_per_group(run, columns)
    if isinstance(sizes, int):
        n_experts = pd.Series(sizes, index=table.index)
    else:
        key = "router" if "router" in columns else "layer"
        n_experts = table[key].map(sizes)
    table["uniform_lift"] = table["share"] * n_experts
    if n_permutations is not None:
        table = _lift_null(run, table, label, columns, ranks, weight, n_permutations, seed, unit)
    table.attrs["counting"] = counting_label(ranks, weight)
    return table


def _lifts(joint: np.ndarray) -> np.ndarray:
    """Lift P(e | D) / P(e) of every cell of a `[B, L, E]` batch of label × expert counts."""
    with np.errstate(divide="ignore", invalid="ignore"):
        share = joint / joint.sum(axis=2, keepdims=True)
        load = joint.sum(axis=1, keepdims=True) / joint.sum(axis=(1, 2), keepdims=True)
        return share / load


def _lift_null(
    run: Run,
    table: pd.DataFrame,
    label: str,
    columns: list[str],
    ranks: str,
    weight: str,
    n_permutations: int,
    seed: int,
    unit: str | None,
) -> pd.DataFrame:
    tables = unit_tables(run, label, columns, ranks=ranks, weight=weight, unit=unit)
    frames = []
    for key, data in tables.items():
        observed = _lifts(data.observed[None])[0]
        total = np.zeros_like(observed)
        exceed = np.zeros_like(observed)
        for batch in shuffled_labels(
            data.labels, groups=data.units, scope=data.scope, n_permutations=n_permutations, seed=seed
        ):
            lifts = np.nan_to_num(_lifts(data.joint(batch)), nan=0.0)
            total += lifts.sum(axis=0)
            exceed += (lifts >= observed[None] - 1e-12).sum(axis=0)
        n_label, n_expert = observed.shape
        frames.append(
            pd.DataFrame(
                {
                    **{c: v for c, v in zip(columns, key, strict=True)},
                    label: np.repeat(data.values, n_expert),
                    "expert": np.tile(np.arange(n_expert), n_label),
                    "null_lift": (total / n_permutations).ravel(),
                    "p_value": ((1 + exceed) / (1 + n_permutations)).ravel(),
                }
            )
        )
    null = pd.concat(frames, ignore_index=True)
    table = table.assign(**{label: table[label].astype(str)})
    return table.merge(null, on=[*columns, label, "expert"], how="left")


NMI_COLUMNS = ["nmi", "p_value", "null_mean", "n_permutations", "method", "unit", "chi2", "dof"]


def label_nmi(
    run: Run,
    label: str,
    by: Sequence[str] = ("layer",),
    *,
    ranks: str = "all",
    weight: str = "count",
    n_permutations: int | None = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    unit: str | None = None,
) -> pd.DataFrame:
    """`<by>, nmi, p_value, null_mean, n_permutations, method, unit, chi2, dof`: NMI of `label` and the
    chosen expert, with its permutation test (see the module docstring; `n_permutations=None` skips the
    test and leaves `p_value` and `null_mean` empty). Label values and experts never seen in a group are
    left out of χ²."""
    columns = check_by(by)
    if n_permutations is not None:
        check_permutations(n_permutations)
    tables = unit_tables(run, label, columns, ranks=ranks, weight=weight, unit=unit)
    values = next(iter(tables.values())).values if tables else []
    if n_permutations is not None and len(values) < 2:
        raise InputError(
            f"label {label!r} has {len(values)} value(s) in run {run.name!r}; a permutation test needs "
            "two or more (pass n_permutations=None for the NMI alone)"
        )
    rows = []
    for key, data in tables.items():
        counts = data.observed
        kept = counts[counts.sum(axis=1) > 0][:, counts.sum(axis=0) > 0]
        if min(kept.shape) > 1:
            from scipy.stats import chi2_contingency  # scipy loads only for the statistic

            chi2, _, dof, _ = chi2_contingency(kept, correction=False)
        else:
            chi2, dof = 0.0, 0
        row = {
            **dict(zip(columns, key, strict=True)),
            "nmi": float(nmi(counts[None])[0]),
            "p_value": np.nan,
            "null_mean": np.nan,
            "n_permutations": 0,
            "method": "none",
            "unit": data.unit,
            "chi2": float(chi2),
            "dof": int(dof),
        }
        if n_permutations is not None and min(kept.shape) > 1:
            null = data.null(nmi, n_permutations=n_permutations, seed=seed)
            row.update(
                p_value=null.p_value,
                null_mean=null.null_mean,
                n_permutations=null.n_permutations,
                method=null.method,
            )
        elif n_permutations is not None:
            row.update(p_value=1.0, method="one label value or expert in this group: nothing to test")
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*columns, *NMI_COLUMNS])
    table.attrs["counting"] = counting_label(ranks, weight)
    return table


def peak_lift(specialization: pd.DataFrame, label: str) -> pd.DataFrame:
    """Per layer and expert, the `label` value it prefers most: `layer, expert, top_value, count, share,
    lift` from the table of `specialization(run, label)` — the row of largest lift (ties: more
    assignments, then the first value in sorted order)."""
    needed = ["layer", "expert", label, "count", "share", "lift"]
    missing = [c for c in needed if c not in specialization.columns]
    if missing:
        raise InputError(f"peak lift needs specialization(run, {label!r}); the table lacks {missing}")
    rows = specialization.dropna(subset=["lift"]).assign(_value=lambda t: t[label].astype(str))
    rows = rows.sort_values(
        ["layer", "expert", "lift", "count", "_value"], ascending=[True, True, False, False, True]
    )
    top = rows.groupby(["layer", "expert"], as_index=False, sort=True).head(1)
    out = top[["layer", "expert", label, "count", "share", "lift"]].rename(columns={label: "top_value"})
    return out.reset_index(drop=True)
