"""Load figures: how each layer's assignments spread over its experts (`expert_load`, `balance`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from routescope.store import InputError

from .lines import integer_axis, panels
from .parts import full_range, heatmap, label_axes, matrix, require
from .theme import Layout, paper_layout

BALANCE_METRICS = ("max_over_mean", "cv", "norm_entropy", "gini")


def figure_load(
    table: pd.DataFrame,
    *,
    value: str = "load",
    sort: bool = False,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Layer × expert heatmap of `value` (`load` share or `count`) from `expert_load`.

    `sort=True` sorts each layer's experts by load (x becomes the load rank): with hundreds of experts
    the shape of the load curve reads better than which expert is which."""
    require(table, ["layer", "expert", value], "load")
    experts = full_range(table["expert"])
    z = matrix(table, "layer", "expert", value, column_values=experts, fill=0.0)
    if sort:
        z = pd.DataFrame(-np.sort(-z.to_numpy(dtype=float), axis=1), index=z.index, columns=experts)
    fig = go.Figure(heatmap(z, colorbar="load share" if value == "load" else value))
    label_axes(fig, "expert", "layer")
    if sort:
        fig.update_xaxes(title_text="expert rank by load")
    fig.update_xaxes(**integer_axis(pd.Series(experts)))
    fig.update_yaxes(autorange="reversed", **integer_axis(pd.Series(z.index)))
    n_layers = len(z.index)
    return paper_layout(fig, **layout, default_height=min(4.5, 0.9 + 0.22 * n_layers))


def figure_balance(
    table: pd.DataFrame,
    *,
    metrics: Sequence[str] = BALANCE_METRICS,
    x: str = "layer",
    **layout: Unpack[Layout],
) -> go.Figure:
    """One panel per balance metric against layer, from `balance(run)`; from `balance(run, by=("layer",
    "step"))` with `x="step"`, one line per layer across the sampler's steps."""
    require(table, [x, *metrics], "balance")
    other = [c for c in ("layer", "step") if c in table.columns and c != x]
    group = other[0] if other and table[other[0]].nunique() > 1 else None
    if group is None and table[x].duplicated().any():
        raise InputError(f"figure balance: several rows per {x}; pass the table of balance(run) or x='step'")
    fig, rows = panels(table, list(metrics), x, group=group)
    return paper_layout(fig, **layout, default_height=1.2 + 1.2 * rows)
