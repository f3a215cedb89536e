"""Per-layer (or per-step) line charts: several series on one axis, or one small panel per metric.

Balance, uncertainty, NMI, repeat rates and agreement are all "a few numbers per layer"; they differ
only in which columns they plot and whether those share a scale. Lines carry markers so that a model
with three MoE layers still reads as three points, and the x axis labels every layer up to a dozen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .axes import nice_stride
from .parts import plain
from .theme import CATEGORICAL, SEQUENTIAL, axis_title, pt

DASHES = ("solid", "dash", "dot", "dashdot")


def integer_axis(values: pd.Series) -> dict[str, object]:
    """Tick settings for an integer axis: every value up to a dozen, then a nice stride."""
    return {"tick0": int(values.min()), "dtick": integer_stride(values), "tickmode": "linear"}


def integer_stride(values: pd.Series) -> int:
    """The tick stride `integer_axis` uses for these values."""
    return nice_stride(int(values.max()) - int(values.min()) + 1)


def group_colours(groups: Sequence[object]) -> list[str]:
    """Okabe–Ito for up to eight groups; beyond that, viridis samples in group order (e.g. many layers)."""
    if len(groups) <= len(CATEGORICAL):
        return CATEGORICAL[: len(groups)]
    from plotly.colors import sample_colorscale

    return sample_colorscale(SEQUENTIAL, list(np.linspace(0, 1, len(groups))))


def series(
    table: pd.DataFrame,
    columns: Mapping[str, str],
    x: str,
    *,
    dashed: Mapping[str, str] | None = None,
    y_title: str,
) -> go.Figure:
    """One line per column (`columns` maps column → legend name) against `x`; `dashed` maps a column
    to a reference column drawn dashed in the same colour (a baseline)."""
    table = table.sort_values(x)
    fig = go.Figure()
    for i, (column, name) in enumerate(columns.items()):
        colour = CATEGORICAL[i % len(CATEGORICAL)]
        fig.add_scatter(
            x=table[x].tolist(),
            y=table[column].tolist(),
            name=plain(name),
            mode="lines+markers",
            line={"color": colour},
        )
        reference = (dashed or {}).get(column)
        if reference:
            fig.add_scatter(
                x=table[x].tolist(),
                y=table[reference].tolist(),
                name=plain(f"{name}, chance"),
                mode="lines",
                line={"color": colour, "dash": "dash", "width": 1},
            )
    fig.update_xaxes(title_text=axis_title(x), **integer_axis(table[x]))
    fig.update_yaxes(title_text=y_title)
    fig.update_layout(showlegend=len(fig.data) > 1)
    return fig


def panels(
    table: pd.DataFrame, metrics: Sequence[str], x: str, *, group: str | None = None
) -> tuple[go.Figure, int]:
    """One small panel per metric (own y scale) against `x`, one line per value of `group` if given;
    returns the figure and its number of panel rows (two panels per row)."""
    cols = min(len(metrics), 2)
    rows = -(-len(metrics) // cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.18, vertical_spacing=0.2)
    groups = sorted(table[group].unique()) if group else [None]
    colours = group_colours(groups)
    for i, metric in enumerate(metrics):
        row, col = i // cols + 1, i % cols + 1
        for g, colour in zip(groups, colours, strict=True):
            part = (table if g is None else table[table[group] == g]).sort_values(x)
            fig.add_scatter(
                x=part[x].tolist(),
                y=part[metric].tolist(),
                name=plain(f"{axis_title(group)} {g}" if group else axis_title(metric)),
                legendgroup=str(g),
                showlegend=group is not None and i == 0,
                mode="lines+markers" if len(part) <= 50 else "lines",
                line={"color": colour},
                row=row,
                col=col,
            )
        fig.update_yaxes(title_text=axis_title(metric), title_font_size=pt(7), row=row, col=col)
        fig.update_xaxes(**integer_axis(table[x]), row=row, col=col)
        if row == rows:
            fig.update_xaxes(title_text=axis_title(x), row=row, col=col)
    return fig, rows
