"""What `cache.table` and `cache.pair_table` may compute: the analysis registry, seen from the dashboard.

Every table a page shows is a registered kind of `routescope.analysis` — a report kind of `ANALYSES` or a
view of `VIEWS` (one sample's tokens, one token's weights, histograms, a run's own small tables) — and is
computed by `analysis.compute`, which checks its options in one place. No SQL lives in the dashboard. The
per-sample helpers are re-exported here for the pages and for code that imported them from this module.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd

from routescope.analysis import KINDS, compute, side_by_side
from routescope.analysis.views import (
    label_choices,
    router_names,
    token_routing,
    token_weights,
    uncertain,
    weight_matrix,
)
from routescope.store import InputError, Run

__all__ = [
    "PAIR_TABLES",
    "TABLES",
    "label_choices",
    "router_names",
    "token_routing",
    "token_weights",
    "uncertain",
    "weight_matrix",
]

TABLES: dict[str, Callable[..., pd.DataFrame]] = {
    kind: partial(compute, kind)
    for kind, analysis in KINDS.items()
    if not (analysis.other or analysis.series)
}
"""Everything `cache.table(run, kind, **options)` may compute: every registered analysis and view of one
run, through `compute` (so `label=` and `layer=` mean what they mean to `routescope report`)."""


def _side_by_side(run: Run, other: Run, *, analysis: str, **options: Any) -> pd.DataFrame:
    try:
        return side_by_side([run, other], analysis, **options)
    except KeyError as exc:  # a metric only one run has (aux_loss needs probs): side_by_side cannot join it
        raise InputError(
            f"{analysis}: {exc.args[0]!r} is missing, a metric only one of {run.name!r} and {other.name!r} "
            "has (aux_loss needs both runs recorded with probs)"
        ) from None


def _compared(kind: str) -> Callable[..., pd.DataFrame]:
    def table(run: Run, other: Run, **options: Any) -> pd.DataFrame:
        return compute(kind, run, other=other, **options)

    return table


PAIR_TABLES: dict[str, Callable[..., pd.DataFrame]] = {
    **{kind: _compared(kind) for kind, analysis in KINDS.items() if analysis.other},
    "side_by_side": _side_by_side,
}
"""What `cache.pair_table(run, other, kind, **options)` may compute: every registered two-run analysis
(agreement, changes, flips, ...) and any one-run analysis side by side."""
