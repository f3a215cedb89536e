"""Any analysis for two (or more) runs side by side: checkpoints, prompts, batch sizes, probes.

`side_by_side(runs, kind, ...)` computes `kind` on every run with the same options and joins the tables
on the kind's key columns (`registry.keys_of`), so a row holds one layer/expert/label's value in each run:
metric columns are suffixed with the run's name (`cv@base`, `cv@tuned`) and, for two runs, a
`<metric>@diff` column = second − first for every metric both runs have (`aux_loss` exists only for runs
recorded with probabilities). Rows present in only one run keep NaN on the other side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from routescope.store import InputError, Run

from .registry import ANALYSES, compute, keys_of


def side_by_side(
    runs: Sequence[Run], kind: str, *, label: str | None = None, layer: int | None = None, **params: Any
) -> pd.DataFrame:
    """`<keys>, <metric>@<run>...[, <metric>@diff]` for `kind` computed on each run."""
    if len(runs) < 2:
        raise InputError("side by side needs at least two runs")
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise InputError(f"side by side needs distinct runs, got {', '.join(names)}")
    if kind not in ANALYSES or ANALYSES[kind].other or ANALYSES[kind].series or not ANALYSES[kind].keys:
        raise InputError(f"{kind!r} cannot be put side by side; try load, balance, nmi, uncertainty, ...")
    keys = keys_of(kind, label)
    merged: pd.DataFrame | None = None
    found: list[list[str]] = []
    for run in runs:
        table = compute(kind, run, label=label, layer=layer, **params)
        metrics = [c for c in table.columns if c not in keys and pd.api.types.is_numeric_dtype(table[c])]
        found.append(metrics)
        table = table[[*keys, *metrics]].rename(columns={m: f"{m}@{run.name}" for m in metrics})
        merged = table if merged is None else merged.merge(table, on=keys, how="outer")
    assert merged is not None
    if len(runs) == 2:  # a metric only one run has (aux_loss needs probs) gets no difference column
        for metric in [m for m in found[0] if m in found[1]]:
            merged[f"{metric}@diff"] = merged[f"{metric}@{names[1]}"] - merged[f"{metric}@{names[0]}"]
    return merged.sort_values(keys, ignore_index=True)
