"""The prune probe's figure: next-token loss against the share of experts disabled, one line per criterion.

Why a figure of its own: the question a pruning study asks is which criterion's curve stays lowest as the
share grows (REAP against frequency against random), so every criterion shares one axis, starting at the
base model's loss at share 0 (`routescope.analysis.pruning.prune_curve`).
"""

from __future__ import annotations

from typing import Unpack

import pandas as pd
import plotly.graph_objects as go

from .lines import DASHES
from .parts import plain, require
from .theme import CATEGORICAL, Layout, paper_layout


def figure_prune_curve(table: pd.DataFrame, **layout: Unpack[Layout]) -> go.Figure:
    """Loss (nats per token) against the pruned share of each layer's experts, one line per criterion
    (hover: the experts disabled in all, and the change against the base model)."""
    require(table, ["criterion", "ratio", "loss", "delta", "experts_off"], "prune-curve")
    fig = go.Figure()
    for i, (criterion, part) in enumerate(table.groupby("criterion", sort=True)):
        part = part.sort_values("ratio")
        fig.add_scatter(
            x=part["ratio"].tolist(),
            y=part["loss"].tolist(),
            name=plain(str(criterion)),
            mode="lines+markers",
            line={"color": CATEGORICAL[i % len(CATEGORICAL)], "dash": DASHES[i % len(DASHES)]},
            customdata=part[["experts_off", "delta"]].to_numpy(),
            hovertemplate="share %{x:.3g}: %{y:.4g} nats/token (%{customdata[1]:+.4g}; "
            "%{customdata[0]} experts off)<extra>" + plain(str(criterion)) + "</extra>",
        )
    fig.update_xaxes(title_text="share of each layer's experts pruned", tickformat=".0%", rangemode="tozero")
    fig.update_yaxes(title_text="loss (nats per token)")
    return paper_layout(fig, **layout, default_height=2.2)
