"""Expert paths through depth: the top-1 expert sequences tokens take most often (`expert_paths`), each
beside the share it would have if every layer chose on its own with its own load.

A path reads `3>7>1>0`, one expert per MoE layer in depth order, so the axis carries the paths as text;
bars are horizontal so that long paths (many layers) stay readable in one column. The independence
baseline is drawn as a second bar rather than a ratio: a lift of 40 on a path of share 0.001 and on one of
share 0.2 mean very different things, and the two bars show both numbers.
"""

from __future__ import annotations

from typing import Unpack

import pandas as pd
import plotly.graph_objects as go

from routescope.store import InputError

from .parts import plain, require
from .theme import CATEGORICAL, Layout, paper_layout

PATH_SERIES = {"share": "observed", "baseline_share": "layers independent"}
"""The two bars per path: its share of the stack's tokens and the product of its experts' loads."""


def path_labels(table: pd.DataFrame) -> list[str]:
    """Axis labels of the paths (escaped); prefixed by the stack when the table holds several stacks."""
    several = table["stack"].nunique() > 1
    return [
        plain(f"{stack}: {path}" if several else path)
        for stack, path in zip(table["stack"], table["path"], strict=True)
    ]


def figure_paths(
    table: pd.DataFrame,
    *,
    top: int | None = None,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Horizontal bars of the most frequent top-1 paths from `expert_paths(run)`, most frequent on top
    (the `top` first of each stack, else all rows): each path's share of its stack's tokens beside
    `baseline_share`, the share expected if each layer chose independently with its own load. Hovering
    shows the count and the lift (share / baseline)."""
    require(table, ["stack", "path", "count", "share", "baseline_share"], "paths")
    if top is not None and top < 1:
        raise InputError("top must be ≥ 1")
    part = table.sort_values(["stack", "count", "path"], ascending=[True, False, True], kind="stable")
    if top is not None:
        part = part.groupby("stack", sort=False).head(top)
    labels = path_labels(part)
    positions = list(range(len(part)))
    share = part["share"].to_numpy(dtype=float)
    baseline = part["baseline_share"].to_numpy(dtype=float)
    lift = share / baseline
    fig = go.Figure()
    for colour, (column, name) in zip(CATEGORICAL, PATH_SERIES.items(), strict=False):
        fig.add_bar(
            x=part[column].tolist(),
            y=positions,
            orientation="h",
            name=name,
            marker={"color": colour},
            hovertext=labels,
            customdata=list(zip(part["count"].tolist(), lift.tolist(), strict=True)),
            hovertemplate=(
                "%{hovertext}: %{x:.4g} (%{customdata[0]:,} tokens, lift %{customdata[1]:.3g})"
                f"<extra>{name}</extra>"
            ),
        )
    fig.update_layout(barmode="group", bargap=0.25, bargroupgap=0.0)
    fig.update_yaxes(
        title_text="top-1 expert path (layer by layer)",
        tickmode="array",
        tickvals=positions,
        ticktext=labels,
        autorange="reversed",
        ticks="",
    )
    fig.update_xaxes(title_text="share of tokens", rangemode="tozero")
    return paper_layout(fig, **layout, default_height=min(7.0, 0.9 + 0.16 * len(part)))
