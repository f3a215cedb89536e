"""Modality figures for runs recorded with images: how visual and text tokens split the experts.

`modality-specialization` draws, per layer, the total-variation distance between the top-1 expert
distributions of visual and text tokens beside the mean of its within-input permutation null (dashed),
with layers whose permutation p is below 0.05 filled; the hover names the unit of independence (the
input), the number of inputs and permutations. The expert × modality lift map at one layer is
`specialization`'s heatmap drawn from the `modality` table (registry.py).
"""

from __future__ import annotations

from typing import Unpack

import pandas as pd
import plotly.graph_objects as go

from .lines import series
from .parts import require
from .theme import CATEGORICAL, Layout, paper_layout

SIGNIFICANT = 0.05
"""Layers with a permutation p below this are drawn filled (no correction across layers)."""


def figure_modality_specialization(table: pd.DataFrame, **layout: Unpack[Layout]) -> go.Figure:
    """TVD(visual, text top-1 experts) per layer from `modality_specialization(run)`, its permutation
    null's mean dashed; filled markers where p < 0.05."""
    require(table, ["layer", "tvd", "null_mean", "p_value", "unit", "n_units", "n_permutations"], "modality")
    part = table.sort_values("layer")
    fig = series(
        part,
        {"tvd": "visual vs text"},
        "layer",
        dashed={"tvd": "null_mean"},
        y_title="TVD of top-1 experts",
    )
    significant = part["p_value"] < SIGNIFICANT
    fig.update_traces(
        selector={"name": "visual vs text"},
        marker={
            "color": [CATEGORICAL[0] if s else "white" for s in significant],
            "line": {"color": CATEGORICAL[0], "width": 1},
            "size": 7,
        },
        customdata=part[["p_value", "n_units", "n_permutations", "unit"]].to_numpy(),
        hovertemplate="layer %{x}: TVD %{y:.3f}, p = %{customdata[0]:.3g} "
        "(%{customdata[1]} %{customdata[3]}s, %{customdata[2]} permutations)<extra></extra>",
    )
    fig.update_traces(selector={"name": "visual vs text, chance"}, name="permutation null (mean)")
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(showlegend=True)
    return paper_layout(fig, **layout, default_height=2.2)
