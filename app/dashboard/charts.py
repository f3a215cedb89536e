"""The Tokens page's one chart: a token's router × expert weight matrix as a heatmap.

`routescope.figures` holds the shared figure builders (one per kind, used by the CLI export too); this
chart lives here until that package has a kind for a single token's weights.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

VALUE_TITLES = {"weight": "gate weight", "prob": "router probability"}


def weight_heatmap(matrix: pd.DataFrame, value: str = "weight") -> go.Figure:
    """Rows = routers (layers), columns = experts, colour = the token's weight (or probability)."""
    figure = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(dtype=float),
            x=[str(e) for e in matrix.columns],
            y=[str(r) for r in matrix.index],
            colorscale="Blues",
            zmin=0.0,
            zmax=1.0,
            colorbar={"title": {"text": VALUE_TITLES.get(value, value)}},
            hovertemplate="%{y}, expert %{x}: %{z:.3f}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    figure.update_layout(
        xaxis={"title": {"text": "expert"}, "type": "category"},
        yaxis={"title": {"text": "router"}, "type": "category", "autorange": "reversed"},
        height=120 + 28 * len(matrix.index),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )
    return figure
