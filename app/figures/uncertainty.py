"""Uncertainty figures (GW-MoE): how sure routers are per layer, the distribution of per-token entropy or
margin, and which label values (tokens, domains, classes) hold the uncertain decisions, from
`uncertainty(run)`, the decisions table itself and `uncertainty_by_label(run, label)`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from routescope.store import InputError

from .lines import group_colours, panels
from .parts import pick_layer, plain, require
from .theme import CATEGORICAL, TICK_PT, Layout, axis_title, paper_layout, pt

UNCERTAINTY_METRICS = ("mean_norm_entropy", "mean_margin", "uncertain_share")
UNIT_RANGE = ("norm_entropy", "margin", "max_prob")
"""Decision columns that live in [0, 1]; histograms of others span [0, their maximum]."""
HISTOGRAM_TITLES = {
    "entropy": "router entropy (nats)",
    "norm_entropy": "router entropy / ln E",
    "margin": "top-1 − top-2 probability",
    "max_prob": "top-1 probability",
}


def figure_uncertainty(
    table: pd.DataFrame,
    *,
    metrics: Sequence[str] = UNCERTAINTY_METRICS,
    x: str = "layer",
    **layout: Unpack[Layout],
) -> go.Figure:
    """One panel per uncertainty metric against layer, from `uncertainty(run)` (or against step, one line
    per layer, from `uncertainty(run, by=("layer", "step"))` with `x="step"`)."""
    require(table, [x, *metrics], "uncertainty")
    other = [c for c in ("layer", "step") if c in table.columns and c != x]
    group = other[0] if other and table[other[0]].nunique() > 1 else None
    fig, rows = panels(table, list(metrics), x, group=group)
    return paper_layout(fig, **layout, default_height=1.2 + 1.2 * rows)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin of `edges` (the last bin closed, as numpy's)."""
    counts, _ = np.histogram(values, bins=edges)
    return counts / max(len(values), 1)


def figure_uncertainty_histogram(
    decisions: pd.DataFrame,
    *,
    value: str = "norm_entropy",
    by: str = "layer",
    bins: int = 20,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Distribution of one per-decision column (`entropy`, `norm_entropy`, `margin`, `max_prob`) as a
    share-per-bin line for each value of `by` (layer, or a label such as domain joined on): where the
    uncertain tokens are."""
    require(decisions, [value, by], "uncertainty-histogram")
    if bins < 2:
        raise InputError("bins must be ≥ 2")
    top = 1.0 if value in UNIT_RANGE else float(decisions[value].max())
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    groups = sorted(decisions[by].dropna().unique(), key=lambda v: (str(type(v)), v))
    fig = go.Figure()
    for group, colour in zip(groups, group_colours(groups), strict=True):
        values = decisions.loc[decisions[by] == group, value].to_numpy(dtype=float)
        fig.add_scatter(
            x=centres,
            y=histogram(values, edges),
            name=plain(f"{axis_title(by)} {group}" if by == "layer" else group),
            mode="lines",
            line={"color": colour, "shape": "hvh"},
        )
    fig.update_xaxes(title_text=HISTOGRAM_TITLES.get(value, axis_title(value)), range=[0, edges[-1]])
    fig.update_yaxes(title_text="share of decisions", rangemode="tozero")
    fig.update_layout(showlegend=len(groups) > 1)
    return paper_layout(fig, **layout, default_height=2.2)


def figure_binned_histogram(
    table: pd.DataFrame,
    *,
    value: str = "norm_entropy",
    by: str = "layer",
    **layout: Unpack[Layout],
) -> go.Figure:
    """The same lines as `figure_uncertainty_histogram`, from a table already binned where the data lives
    (`by, bin_low, bin_high, share`: one row per group and bin), so a run of millions of decisions never
    has to be loaded to draw its distribution."""
    require(table, [by, "bin_low", "bin_high", "share"], "binned-histogram")
    groups = sorted(table[by].dropna().unique(), key=lambda v: (str(type(v)), v))
    fig = go.Figure()
    for group, colour in zip(groups, group_colours(groups), strict=True):
        part = table[table[by] == group].sort_values("bin_low")
        centres = (part["bin_low"].to_numpy(dtype=float) + part["bin_high"].to_numpy(dtype=float)) / 2
        fig.add_scatter(
            x=centres,
            y=part["share"].tolist(),
            name=plain(f"{axis_title(by)} {group}" if by == "layer" else group),
            mode="lines",
            line={"color": colour, "shape": "hvh"},
        )
    top = float(table["bin_high"].max())
    fig.update_xaxes(title_text=HISTOGRAM_TITLES.get(value, axis_title(value)), range=[0, top])
    fig.update_yaxes(title_text="share of decisions", rangemode="tozero")
    fig.update_layout(showlegend=len(groups) > 1)
    return paper_layout(fig, **layout, default_height=2.2)


def figure_uncertain_labels(
    table: pd.DataFrame,
    *,
    label: str,
    layer: int | None = None,
    top: int = 15,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Horizontal bars of the `top` most uncertain values of `label` at one layer, from
    `uncertainty_by_label(run, label)`: each value's uncertain share (decisions with entropy / ln E at or
    above the threshold), most uncertain on top, with its number of decisions written beside the bar.
    Label values are escaped; whitespace tokens show as ␣ ↵ ⇥."""
    require(table, ["layer", label, "decisions", "uncertain_share"], "uncertain-labels")
    if top < 1:
        raise InputError("top must be ≥ 1")
    part = pick_layer(table, layer, "uncertain-labels")
    part = part.sort_values("uncertain_share", ascending=False, kind="stable").head(top)
    positions = list(range(len(part)))
    labels = [plain(value) for value in part[label]]
    share = part["uncertain_share"].to_numpy(dtype=float)
    entropy = part.get("mean_norm_entropy", pd.Series(np.nan, index=part.index)).to_numpy(dtype=float)
    fig = go.Figure(
        go.Bar(
            x=share.tolist(),
            y=positions,
            orientation="h",
            marker={"color": CATEGORICAL[1]},
            text=[f"{int(n):,}" for n in part["decisions"]],
            textposition="outside",
            textfont={"size": pt(TICK_PT)},
            cliponaxis=False,
            hovertext=labels,
            customdata=list(zip(part["decisions"].tolist(), entropy.tolist(), strict=True)),
            hovertemplate=(
                "%{hovertext}: %{x:.3f} uncertain of %{customdata[0]:,} decisions "
                "(mean entropy / ln E %{customdata[1]:.3f})<extra></extra>"
            ),
        )
    )
    fig.update_yaxes(
        title_text=axis_title(label),
        tickmode="array",
        tickvals=positions,
        ticktext=labels,
        autorange="reversed",
        ticks="",
    )
    highest = float(share.max()) if share.size else 0.0
    fig.update_xaxes(
        title_text="uncertain share (bar labels: decisions)", range=[0, max(highest * 1.3, 0.05)]
    )
    return paper_layout(fig, **layout, default_height=min(6.0, 0.8 + 0.15 * len(part)))
