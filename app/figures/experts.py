"""Expert figures for the dashboard's Experts and Tokens pages: the layer × expert overview (load, or each
expert's strongest label preference), an expert's co-activated partners, its load across steps, and one
token's router × expert weights.

Like every builder, each takes a tidy table (an analysis's, or a dashboard view derived from one) and only
draws it: `figure_expert_overview` reads `layer, expert, <value>` (+ `top_value` for the hover),
`figure_partners` the rows of `coactivation(run, layer)`, `figure_expert_steps` the rows of `steps(run)`,
`figure_token_weights` a router × expert matrix.
"""

from __future__ import annotations

from typing import Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from routescope.store import InputError

from .lines import integer_axis, series
from .parts import full_range, grey_gaps, heatmap, lift_heatmap, matrix, plain, require
from .theme import CATEGORICAL, Layout, axis_title, paper_layout

WEIGHT_TITLES = {"weight": "gate weight", "prob": "router probability"}


def figure_expert_overview(
    table: pd.DataFrame,
    *,
    value: str = "lift",
    label: str | None = None,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Layer × expert heatmap of `value`: `lift` (each expert's strongest preference for one value of
    `label`, log₂ scale centred at 1; hovering names that value from `top_value`) or `load` (viridis).

    Experts a layer never chose have no lift and stay grey."""
    require(table, ["layer", "expert", value], "expert-overview")
    experts = full_range(table["expert"])
    z = matrix(table, "layer", "expert", value, column_values=experts)
    if value == "lift":
        trace = lift_heatmap(z, colorbar="peak lift")
        if "top_value" in table.columns:
            top = table.pivot(index="layer", columns="expert", values="top_value").reindex(
                index=z.index, columns=experts
            )
            names = top.map(lambda v: "" if pd.isna(v) else plain(v)).to_numpy(dtype=object)
            trace.update(
                customdata=np.dstack([z.to_numpy(dtype=float), names]),
                hovertemplate=f"layer %{{y}}, expert %{{x}}: lift %{{customdata[0]:.3g}} for "
                f"{plain(axis_title(label or 'label'))} %{{customdata[1]}}<extra></extra>",
            )
        fig = grey_gaps(go.Figure(trace))
    else:
        fig = go.Figure(heatmap(z.fillna(0.0), colorbar="load share" if value == "load" else value))
    fig.update_xaxes(title_text="expert", **integer_axis(pd.Series(experts)))
    fig.update_yaxes(title_text="layer", autorange="reversed", **integer_axis(pd.Series(z.index)))
    rows = len(z.index)
    return paper_layout(fig, **layout, default_height=min(4.5, 0.9 + 0.22 * rows))


def figure_partners(
    table: pd.DataFrame,
    *,
    expert: int,
    n: int = 10,
    **layout: Unpack[Layout],
) -> go.Figure:
    """The `n` experts most often chosen together with `expert`, from `coactivation(run, layer)`: bars of
    P(partner | expert), and as dots the P(partner) that independent choice would give (= P / lift)."""
    require(table, ["expert_a", "expert_b", "count", "p_b_given_a", "lift"], "partners")
    part = table[table["expert_a"] == int(expert)]
    if part.empty:
        raise InputError(f"figure partners: expert {expert} was never chosen together with another")
    part = part.sort_values(["p_b_given_a", "expert_b"], ascending=[False, True]).head(n)
    labels = [str(int(e)) for e in part["expert_b"]]
    lift = part["lift"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        chance = np.where(lift > 0, part["p_b_given_a"].to_numpy(dtype=float) / lift, np.nan)
    fig = go.Figure()
    fig.add_bar(
        x=labels,
        y=part["p_b_given_a"].tolist(),
        name=f"P(partner | expert {int(expert)})",
        marker={"color": CATEGORICAL[0]},
        customdata=np.stack([part["count"].to_numpy(dtype=float), lift], axis=1),
        hovertemplate="expert %{x}: %{y:.3f} (%{customdata[0]:.0f} tokens, lift %{customdata[1]:.3g})"
        "<extra></extra>",
    )
    fig.add_scatter(
        x=labels,
        y=chance.tolist(),
        name="if independent",
        mode="markers",
        marker={"color": CATEGORICAL[1], "symbol": "line-ew-open", "size": 10, "line": {"width": 1.5}},
    )
    fig.update_xaxes(title_text="co-chosen expert", type="category")
    fig.update_yaxes(title_text="P(co-chosen)", rangemode="tozero")
    return paper_layout(fig, **layout, default_height=2.0)


def figure_expert_steps(
    table: pd.DataFrame,
    *,
    expert: int,
    **layout: Unpack[Layout],
) -> go.Figure:
    """One expert's load share at every sampler (or generation) step, one line per layer, from
    `steps(run)`; steps where the expert was not chosen count as 0."""
    require(table, ["layer", "step", "expert", "load"], "expert-steps")
    steps = sorted(int(s) for s in table["step"].unique())
    part = table[table["expert"] == int(expert)]
    wide = part.pivot_table(index="step", columns="layer", values="load", aggfunc="sum")
    layers = sorted(int(v) for v in table["layer"].unique())
    wide = wide.reindex(index=steps, columns=layers).fillna(0.0)
    wide.columns = [f"layer {c}" for c in wide.columns]
    wide = wide.reset_index()
    fig = series(wide, {c: c for c in wide.columns if c != "step"}, "step", y_title="load share")
    fig.update_yaxes(rangemode="tozero")
    return paper_layout(fig, **layout, default_height=2.0)


def figure_token_weights(
    weights: pd.DataFrame,
    *,
    value: str = "weight",
    **layout: Unpack[Layout],
) -> go.Figure:
    """One token's router × expert matrix (rows named by router, columns experts) of gate weights or
    router probabilities, on a fixed 0–1 colour scale."""
    if weights.empty:
        raise InputError("figure token-weights: the matrix is empty")
    z = weights.copy()
    z.index = [plain(r) for r in z.index]
    z.columns = [str(c) for c in z.columns]
    fig = go.Figure(heatmap(z, colorbar=WEIGHT_TITLES.get(value, value), zmin=0.0, zmax=1.0))
    fig.data[0].update(xgap=1, ygap=1)
    fig.update_xaxes(title_text="expert", type="category")
    fig.update_yaxes(title_text="router", type="category", autorange="reversed")
    rows = len(z.index)
    return paper_layout(fig, **layout, default_height=min(5.0, 0.8 + 0.2 * rows))
