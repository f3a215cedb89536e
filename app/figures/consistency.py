"""Figures of two runs on the same inputs, beyond agreement: how alike their routers order the experts
(`rank-consistency`), which decisions flip their expert set against the first run's distance to its top-k
boundary (`boundary-flips`), and which inputs routing replay breaks (`replay-samples`).

The tables come from `routescope.analysis.consistency` and `.replay`; these builders only draw them.
`CONSISTENCY_FIGURES` are their figure kinds (each takes the second run as `--compare`); `registry.FIGURES`
includes them, and the dashboard's Compare page draws the same kinds.
"""

from __future__ import annotations

from typing import Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .kinds import FigureKind
from .lines import integer_axis, series
from .parts import note_above, require
from .theme import CATEGORICAL, Layout, paper_layout

RANK_SERIES = {"mean_tau": "Kendall τ (mean)", "share_same_set": "same top-k set"}
REPLAY_SERIES = {"share_differing": "tokens differing in any layer", "share_decisions": "decisions differing"}


def figure_rank_consistency(table: pd.DataFrame, **layout: Unpack[Layout]) -> go.Figure:
    """Per layer, the mean Kendall τ-b between the two runs' router scores of a decision and the share of
    decisions with the identical top-k set (`rank_consistency(run, other)`); the lowest τ is dotted."""
    require(table, ["layer", "mean_tau", "min_tau", "share_same_set"], "rank-consistency")
    fig = series(table, RANK_SERIES, "layer", y_title="agreement of the two runs")
    part = table.sort_values("layer")
    fig.add_scatter(
        x=part["layer"].tolist(),
        y=part["min_tau"].tolist(),
        name="Kendall τ (lowest)",
        mode="lines",
        line={"color": CATEGORICAL[0], "dash": "dot", "width": 1},
    )
    low = float(np.nanmin(part[["mean_tau", "min_tau", "share_same_set"]].to_numpy(dtype=float)))
    fig.update_yaxes(range=[min(0.0, low) - 0.02, 1.02])
    fig.update_layout(showlegend=True)
    return paper_layout(fig, **layout, default_height=2.2)


def _margin_labels(part: pd.DataFrame) -> list[str]:
    return [f"{lo:.3g}–{hi:.3g}" for lo, hi in zip(part["margin_low"], part["margin_high"], strict=True)]


def figure_boundary_flips(table: pd.DataFrame, **layout: Unpack[Layout]) -> go.Figure:
    """Per quantile bin of the first run's top-k boundary margin p₍k₎ − p₍k+1₎, the share of decisions whose
    expert set differs in the second run (`boundary_flips(run, other)`; one series per layer with
    `by_layer=True`), with the Spearman correlation of margin and flip share written above."""
    require(table, ["bin", "margin_low", "margin_high", "decisions", "flip_share"], "boundary-flips")
    groups = (
        [(f"layer {int(layer)}", part) for layer, part in table.groupby("layer", sort=True)]
        if "layer" in table.columns
        else [("expert set differs", table)]
    )
    fig = go.Figure()
    for colour, (name, part) in zip(CATEGORICAL * 8, groups, strict=False):
        part = part.sort_values("bin")
        fig.add_bar(
            x=_margin_labels(part),
            y=part["flip_share"].tolist(),
            name=name,
            marker={"color": colour},
            customdata=part[["flips", "decisions"]].to_numpy(dtype=float),
            hovertemplate="margin %{x}: %{customdata[0]:,.0f} of %{customdata[1]:,.0f} decisions "
            "(%{y:.3%})<extra></extra>",
        )
    if "spearman" in table.columns and "layer" not in table.columns:
        rho = float(table["spearman"].iloc[0])
        note_above(
            fig, "Spearman ρ(margin, flips) = " + ("n/a (no spread)" if np.isnan(rho) else f"{rho:.2f}")
        )
    top = float(np.nanmax(table["flip_share"].to_numpy(dtype=float)))
    fig.update_layout(barmode="group", showlegend=len(groups) > 1)
    fig.update_xaxes(title_text="top-k boundary margin (first run)", type="category")
    fig.update_yaxes(title_text="share of expert sets flipped", range=[0, max(top * 1.15, 0.01)])
    return paper_layout(fig, **layout, default_height=2.2)


def figure_replay_samples(table: pd.DataFrame, **layout: Unpack[Layout]) -> go.Figure:
    """Per sample, the share of its tokens whose expert set differs in any layer between the two runs and
    the share of its (token, layer) decisions that differ (`replay_by_sample(run, other)`)."""
    require(table, ["sample", "tokens", *REPLAY_SERIES], "replay-samples")
    part = table.sort_values("sample")
    fig = go.Figure()
    for colour, (column, name) in zip(CATEGORICAL, REPLAY_SERIES.items(), strict=False):
        fig.add_bar(
            x=part["sample"].astype(int).tolist(),
            y=part[column].tolist(),
            name=name,
            marker={"color": colour},
            customdata=part["tokens"].to_numpy(dtype=float),
            hovertemplate=f"sample %{{x}}: %{{y:.3%}} ({name}) of %{{customdata:,.0f}} tokens<extra></extra>",
        )
    top = float(np.nanmax(part[list(REPLAY_SERIES)].to_numpy(dtype=float)))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="sample", **integer_axis(part["sample"]))
    fig.update_yaxes(title_text="share differing between runs", range=[0, max(top * 1.15, 0.01)])
    return paper_layout(fig, **layout, default_height=2.2)


CONSISTENCY_FIGURES: dict[str, FigureKind] = {
    "rank-consistency": FigureKind(
        analysis="rank-consistency",
        build=figure_rank_consistency,
        description="per layer, Kendall τ of the two runs' router scores and the share of identical top-k "
        "sets (--compare)",
        paper_table=True,
    ),
    "boundary-flips": FigureKind(
        analysis="boundary-flips",
        build=figure_boundary_flips,
        description="share of expert sets that flip in the second run per bin of the first run's top-k "
        "boundary margin (--compare)",
    ),
    "replay-samples": FigureKind(
        analysis="replay-samples",
        build=figure_replay_samples,
        description="routing replay per sample: share of its tokens whose expert set differs in any layer "
        "(--compare)",
    ),
}
"""The two-run consistency figure kinds (merged into `registry.FIGURES`)."""
