"""Router saturation over a checkpoint series (OLMoE's figure): each checkpoint's routing against a reference.

OLMoE tracks how early a model's routing settles by comparing the experts chosen at checkpoint t with the
ones the final model chooses for the same tokens: saturation(t, layer) = mean over tokens of
|E_t ∩ E_ref| / k (top-1: the share of tokens with the same top-1 expert). One checkpoint against the
reference is `comparison.agreement`; this module only lays the series out — one `agreement` per run, in
the order given, so the same SQL (DuckDB or Spark) answers both, and a checkpoint that shares no decision
with the reference fails with `agreement`'s one-line error naming it. The runs must have been recorded on
the same inputs (the same texts, or the same classes, seed and steps for diffusion).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from routescope.store import InputError, Run

from .comparison import agreement

SERIES_COLUMNS = ("checkpoint", "run", "layer", "decisions", "saturation", "top1_agreement")


def saturation_series(reference: Run, runs: Sequence[Run]) -> pd.DataFrame:
    """`checkpoint, run, layer, decisions, saturation, top1_agreement`: for each run of `runs` (checkpoint
    = its index in the series), per layer, OLMoE's router saturation against `reference` — mean
    |E_run ∩ E_reference| / k over the decisions both recorded, k = the reference's experts per decision —
    and the share of decisions with the same top-1 expert.

    >>> # routescope report --kind saturation --run final --compare step-2 step-4 step-6   (CLI form)
    """
    if not runs:
        raise InputError("saturation compares a series of runs: give one or more", field="compare")
    parts = []
    for index, run in enumerate(runs):
        table = agreement(reference, run).rename(columns={"topk_overlap": "saturation"})
        table.insert(0, "run", run.name)
        table.insert(0, "checkpoint", index)
        parts.append(table)
    out = pd.concat(parts, ignore_index=True)
    return out[list(SERIES_COLUMNS)]
