"""Expert × expert figures: co-activation lift (OLMoE), layer-to-layer transitions, and router-score
similarity with MC-SMoE merge groups (`coactivation`, `transitions`, `expert_similarity`)."""

from __future__ import annotations

from typing import Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .lines import integer_axis
from .parts import full_range, grey_gaps, heatmap, lift_heatmap, matrix, pick_layer, require
from .theme import Layout, paper_layout


def _square(fig: go.Figure, experts: list[int], x_title: str, y_title: str) -> None:
    ticks = integer_axis(pd.Series(experts))
    fig.update_xaxes(title_text=x_title, constrain="domain", **ticks)
    fig.update_yaxes(title_text=y_title, autorange="reversed", scaleanchor="x", constrain="domain", **ticks)


def figure_coactivation(
    table: pd.DataFrame,
    *,
    value: str = "lift",
    n_experts: int | None = None,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Expert × expert heatmap of one layer's co-activation from `coactivation(run, layer)`: `lift` on a
    log₂ scale centred at 1 (independent choice), or `p_b_given_a` / `count` on viridis. Row a, column
    b; pairs never chosen together are lift 0 (the bottom colour); the diagonal is undefined (grey)."""
    require(table, ["expert_a", "expert_b", value], "coactivation")
    size = n_experts or int(max(table["expert_a"].max(), table["expert_b"].max())) + 1
    experts = list(range(size))
    z = matrix(table, "expert_a", "expert_b", value, index_values=experts, column_values=experts, fill=0.0)
    values = np.array(z, dtype=float)  # a copy: pandas hands out read-only views
    np.fill_diagonal(values, np.nan)  # an expert with itself: undefined
    z = pd.DataFrame(values, index=z.index, columns=z.columns)
    trace = lift_heatmap(z) if value == "lift" else heatmap(z, colorbar=value.replace("_", " "))
    fig = grey_gaps(go.Figure(trace))
    _square(fig, experts, "co-chosen expert", "expert")
    return paper_layout(fig, **layout, aspect=0.85)


def figure_transitions(
    table: pd.DataFrame,
    *,
    layer: int | None = None,
    value: str = "share",
    **layout: Unpack[Layout],
) -> go.Figure:
    """Heatmap of P(top-1 expert at the next MoE layer | top-1 expert at `layer`) from `transitions(run)`;
    a sharp diagonal-like pattern means experts form paths through depth."""
    require(table, ["layer", "next_layer", "expert", "next_expert", value], "transitions")
    part = pick_layer(table, layer, "transitions")
    first, second = int(part["layer"].iloc[0]), int(part["next_layer"].iloc[0])
    rows = full_range(part["expert"])
    cols = full_range(part["next_expert"])
    z = matrix(part, "expert", "next_expert", value, index_values=rows, column_values=cols, fill=0.0)
    colorbar = "P(next | expert)" if value == "share" else value
    fig = go.Figure(heatmap(z, colorbar=colorbar, zmax=1.0 if value == "share" else None))
    fig.update_xaxes(title_text=f"expert at layer {second}", **integer_axis(pd.Series(cols)))
    fig.update_yaxes(
        title_text=f"expert at layer {first}", autorange="reversed", **integer_axis(pd.Series(rows))
    )
    return paper_layout(fig, **layout, aspect=0.85)


def figure_expert_similarity(
    table: pd.DataFrame,
    *,
    groups: pd.DataFrame | None = None,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Expert × expert router-score similarity from `expert_similarity(run, layer)`; with `groups` (the
    table of `merge_groups`) experts are ordered by group, most used first, and groups are outlined."""
    require(table, ["expert_a", "expert_b", "similarity"], "expert-similarity")
    experts = full_range(table["expert_a"])
    order = experts
    if groups is not None:
        require(groups, ["expert", "group", "usage"], "expert-similarity (groups)")
        ranked = groups.sort_values(["group", "usage", "expert"], ascending=[True, False, True])
        order = [int(e) for e in ranked["expert"]]
    z = matrix(table, "expert_a", "expert_b", "similarity", index_values=order, column_values=order)
    off_diagonal = table.loc[table["expert_a"] != table["expert_b"], "similarity"]
    low = float(off_diagonal.min()) if len(off_diagonal) else 0.0
    fig = go.Figure(heatmap(z, colorbar="similarity", zmin=low, zmax=1.0))
    if groups is None:
        _square(fig, experts, "expert", "expert")
    else:
        labels = [str(e) for e in order]
        fig.data[0].update(x=labels, y=labels)
        fig.update_xaxes(title_text="expert (by merge group)", type="category", constrain="domain")
        fig.update_yaxes(title_text="expert", type="category", autorange="reversed", scaleanchor="x")
        sizes = ranked.groupby("group", sort=True).size().to_numpy()
        start = 0
        for size in sizes:
            fig.add_shape(
                type="rect",
                x0=start - 0.5,
                x1=start + size - 0.5,
                y0=start - 0.5,
                y1=start + size - 0.5,
                line={"color": "white", "width": 1},
            )
            start += size
    return paper_layout(fig, **layout, aspect=0.85)
