"""The reroute probe's figure: the share of sampled decisions with a better equal-compute route, per bin of
the router's margin or entropy, with its bootstrap interval over sequences (`analysis.reroute.reroute_share`).

A separate file because the probe's figure kinds are declared beside their builder and merged into
`registry.FIGURES` by name (as `placement.PLACEMENT_FIGURES`).
"""

from __future__ import annotations

from typing import Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .kinds import FigureKind
from .parts import require
from .theme import CATEGORICAL, Layout, paper_layout

AXIS = {
    "margin": "router's top-1 − top-2 probability margin (quantile bin)",
    "entropy": "router entropy, nats (quantile bin)",
}


def figure_reroute_share(table: pd.DataFrame, **layout: Unpack[Layout]) -> go.Figure:
    """Bars: per quantile bin of margin or entropy, the share of decisions for which one of the K drawn
    alternative top-k sets lowered the next-token loss, with the 95 % bootstrap interval over sequences;
    a dashed line: the share over all sampled decisions."""
    require(table, ["by", "bin", "low", "high", "decisions", "share", "ci_low", "ci_high"], "reroute-share")
    bins = table[table["bin"] != "(all)"]
    overall = table[table["bin"] == "(all)"]
    by = str(table["by"].iloc[0]) if len(table) else "margin"
    labels = [f"{lo:.2g}–{hi:.2g}" for lo, hi in zip(bins["low"], bins["high"], strict=True)]
    share = bins["share"].to_numpy(dtype=float)
    fig = go.Figure()
    fig.add_bar(
        x=labels,
        y=share.tolist(),
        name="share with a better route",
        marker={"color": CATEGORICAL[0]},
        error_y={
            "type": "data",
            "symmetric": False,
            "array": np.nan_to_num(bins["ci_high"].to_numpy(dtype=float) - share).tolist(),
            "arrayminus": np.nan_to_num(share - bins["ci_low"].to_numpy(dtype=float)).tolist(),
        },
        customdata=bins["decisions"].to_numpy(dtype=float),
        hovertemplate=f"{by} %{{x}}: %{{y:.1%}} of %{{customdata:,.0f}} decisions<extra></extra>",
    )
    if len(overall):
        fig.add_hline(
            y=float(overall["share"].iloc[0]),
            line={"dash": "dash", "color": CATEGORICAL[1]},
            annotation_text="all sampled decisions",
        )
    fig.update_xaxes(title_text=AXIS.get(by, by), type="category")
    fig.update_yaxes(title_text="share with a better route", rangemode="tozero")
    return paper_layout(fig, **layout, default_height=2.2)


REROUTE_FIGURES: dict[str, FigureKind] = {
    f"reroute-{by}": FigureKind(
        analysis="reroute-share",
        build=figure_reroute_share,
        params=lambda _request, by=by: {"by": by},
        description=f"reroute probe: share of sampled decisions with a better equal-compute route, by {by} "
        "bin (95 % bootstrap CI over sequences)",
        requires=("text",),
        standard=(),
    )
    for by in ("margin", "entropy")
}
