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
default), 0 when routing ignores the label and 1 when each label value has its own experts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from routescope.hooks import Run

from .frames import check_by, experts_per_group, label_join, sql


def label_counts(run: Run, label: str, by: Sequence[str] = ("layer",)) -> pd.DataFrame:
    """`<by>, expert, <label>, count`: the expert × label contingency table per group (aggregated in SQL)."""
    columns = check_by(by)
    join, expr = label_join(run, label)
    keys = ", ".join(f"a.{c}" for c in columns)
    return sql(
        run,
        f'SELECT {keys}, a.expert, {expr} AS "{label}", count(*) AS count FROM assignments a {join} '
        f"WHERE NOT a.dropped GROUP BY ALL ORDER BY ALL",
    )


def specialization(run: Run, label: str, by: Sequence[str] = ("layer",)) -> pd.DataFrame:
    """`<by>, expert, <label>, count, share, lift, uniform_lift` (see the module docstring)."""
    columns = check_by(by)
    table = label_counts(run, label, columns)
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
    return table


def _nmi(counts: np.ndarray) -> float:
    joint = counts / counts.sum()
    p_label, p_expert = joint.sum(axis=1), joint.sum(axis=0)
    nonzero = joint > 0
    mutual = float((joint[nonzero] * np.log(joint[nonzero] / np.outer(p_label, p_expert)[nonzero])).sum())

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    denominator = (entropy(p_label) + entropy(p_expert)) / 2
    return mutual / denominator if denominator > 0 else 0.0


def label_nmi(run: Run, label: str, by: Sequence[str] = ("layer",)) -> pd.DataFrame:
    """`<by>, nmi, chi2, dof, p_value`: normalised mutual information between `label` and the chosen
    expert, and Pearson's chi-square test of their independence on the same label × expert counts (no
    continuity correction; experts and labels never seen in the group are left out)."""
    columns = check_by(by)
    table = label_counts(run, label, columns)
    rows = []
    for group, part in table.groupby(columns, sort=True):
        matrix = part.pivot_table(index=label, columns="expert", values="count", aggfunc="sum", fill_value=0)
        key = group if isinstance(group, tuple) else (group,)
        counts = matrix.to_numpy(dtype=float)
        if min(counts.shape) > 1:
            from scipy.stats import chi2_contingency  # scipy loads only for the test

            chi2, p_value, dof, _ = chi2_contingency(counts, correction=False)
        else:
            chi2, p_value, dof = 0.0, 1.0, 0
        rows.append(
            {
                **dict(zip(columns, key, strict=True)),
                "nmi": _nmi(counts),
                "chi2": float(chi2),
                "dof": int(dof),
                "p_value": float(p_value),
            }
        )
    return pd.DataFrame(rows, columns=[*columns, "nmi", "chi2", "dof", "p_value"])
