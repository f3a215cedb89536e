"""Router saturation over a checkpoint series (OLMoE's figure): saturation against checkpoint, one line
per layer, from `saturation_series` (`routescope figure --kind saturation --run FINAL --compare A B C`).

A figure of its own because its x axis is the series (checkpoints named by their runs, in the order
given), not a layer or a sampler step as in the other line charts.
"""

from __future__ import annotations

from typing import Unpack

import pandas as pd
import plotly.graph_objects as go

from .lines import DASHES, group_colours
from .parts import plain, require
from .theme import Layout, paper_layout


def figure_saturation(
    table: pd.DataFrame,
    *,
    value: str = "saturation",
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per layer, `value` (OLMoE's saturation: mean top-k overlap with the reference run; or
    `top1_agreement`) of every checkpoint of the series, checkpoints in order and labelled by run name."""
    require(table, ["checkpoint", "run", "layer", value], "saturation")
    names = table.drop_duplicates("checkpoint").sort_values("checkpoint")
    layers = sorted(table["layer"].unique())
    fig = go.Figure()
    for i, (layer, colour) in enumerate(zip(layers, group_colours(layers), strict=True)):
        part = table[table["layer"] == layer].sort_values("checkpoint")
        fig.add_scatter(
            x=part["checkpoint"].tolist(),
            y=part[value].tolist(),
            name=f"layer {int(layer)}",
            mode="lines+markers",
            line={"color": colour, "dash": DASHES[i % len(DASHES)] if len(layers) > 8 else "solid"},
        )
    fig.update_xaxes(
        title_text="checkpoint",
        tickmode="array",
        tickvals=names["checkpoint"].tolist(),
        ticktext=[plain(str(n)) for n in names["run"]],
    )
    title = "saturation (top-k overlap)" if value == "saturation" else value.replace("_", " ")
    fig.update_yaxes(title_text=f"{title} with the reference", range=[0, 1.02])
    fig.update_layout(showlegend=len(layers) > 1)
    return paper_layout(fig, **layout, default_height=2.2)
