"""Placement figures: coverage curves, hot sets, device balance under placements, load drift between two
runs and cross-layer predictability (the tables of `routescope.analysis.placement` and `.drift`).

`PLACEMENT_FIGURES` are their figure kinds; `registry.FIGURES` includes them, so `routescope figure --kind`
and the dashboard's Placement page draw the same figures. The builders reuse the shared line helpers
(`lines.series`, `lines.panels`) and the load heatmap (`load.figure_load`) rather than drawing their own.
"""

from __future__ import annotations

from typing import Unpack

import pandas as pd
import plotly.graph_objects as go

from .kinds import FigureKind, FigureRequest, layer_sizes
from .lines import group_colours, integer_axis, panels, series
from .load import figure_load
from .parts import plain, require
from .theme import Layout, paper_layout

PLACEMENT_METRICS = ("balancedness", "max_share")


def figure_coverage(
    table: pd.DataFrame,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per layer, the share of assignments the N most-loaded experts cover against N, from `coverage(run)`;
    the dashed diagonal is a uniform router (N / E)."""
    require(table, ["layer", "top_n", "coverage", "expert_share"], "coverage")
    layers = sorted(table["layer"].unique())
    fig = go.Figure()
    for layer, colour in zip(layers, group_colours(layers), strict=True):
        part = table[table["layer"] == layer].sort_values("top_n")
        fig.add_scatter(
            x=part["top_n"].tolist(),
            y=part["coverage"].tolist(),
            name=plain(f"layer {layer}"),
            mode="lines+markers" if len(part) <= 32 else "lines",
            line={"color": colour},
        )
    widest = table.loc[table["top_n"].idxmax()]
    fig.add_scatter(
        x=[0, int(widest["top_n"])],
        y=[0.0, 1.0],
        name="uniform",
        mode="lines",
        line={"color": "grey", "dash": "dash", "width": 1},
    )
    fig.update_xaxes(title_text="N most-loaded experts", **integer_axis(table["top_n"]))
    fig.update_yaxes(title_text="share of assignments covered", range=[0, 1.02])
    return paper_layout(fig, **layout, default_height=2.4)


def figure_hot_set(
    table: pd.DataFrame,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per layer, the fewest experts covering each threshold's share of the assignments, from
    `hot_set(run)`; one line per threshold, a perfectly even layer's hot set dashed."""
    require(table, ["layer", "threshold", "hot_set", "uniform_hot_set"], "hot-set")
    wide = table.pivot_table(index="layer", columns="threshold", values=["hot_set", "uniform_hot_set"])
    flat = pd.DataFrame({"layer": wide.index})
    names, dashed = {}, {}
    for level in sorted(table["threshold"].unique()):
        column = f"{level:g}"
        flat[column] = wide[("hot_set", level)].to_numpy()
        flat[f"{column}_uniform"] = wide[("uniform_hot_set", level)].to_numpy()
        names[column] = f"{level:.0%} covered"
        dashed[column] = f"{column}_uniform"
    fig = series(flat, names, "layer", dashed=dashed, y_title="hot-set size (experts)")
    for trace in fig.data:
        if trace.name.endswith(", chance"):
            trace.name = trace.name.replace(", chance", ", even load")
    return paper_layout(fig, **layout, default_height=2.2)


def figure_placement(
    table: pd.DataFrame,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per layer and placement, balancedness (mean / max device load, 1 = even) and the busiest device's
    share of the assignments, from `device_load(run, devices=G)`."""
    require(table, ["layer", "placement", *PLACEMENT_METRICS], "placement")
    fig, rows = panels(table, list(PLACEMENT_METRICS), "layer", group="placement")
    devices = sorted(table["devices"].unique()) if "devices" in table.columns else []
    caption = f"{devices[0]} devices" if len(devices) == 1 else None
    if caption and "replicas" in table.columns and int(table["replicas"].max()) > 0:
        caption += f", {int(table['replicas'].max())} replicas"
    layout.setdefault("title", caption)
    return paper_layout(fig, **layout, default_height=1.2 + 1.2 * rows)


def figure_drift(
    table: pd.DataFrame,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per layer, how far the second run's expert load moved from the first's: total-variation distance,
    Jensen–Shannon divergence (bits) and the largest change of one expert's share, from
    `load_drift(run_a, run_b)`."""
    require(table, ["layer", "tv_distance", "js_divergence", "max_change"], "drift")
    names = {
        "tv_distance": "total variation",
        "js_divergence": "JS divergence",
        "max_change": "largest change",
    }
    fig = series(table, names, "layer", y_title="load drift")
    return paper_layout(fig, **layout, default_height=2.0)


def figure_drift_experts(table: pd.DataFrame, **layout: Unpack[Layout]) -> go.Figure:
    """Layer × expert heatmap of the change of each expert's load share between the two runs."""
    return figure_load(table, value="change", **layout)


def figure_predictability(
    table: pd.DataFrame,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per layer, how often the previous layer's top-1 expert predicts this layer's (most frequent
    successor) against always guessing the busiest expert (dashed), and the uncertainty coefficient
    I(A; B) / H(B), from `layer_predictability(run)`."""
    require(table, ["layer", "accuracy", "baseline_majority", "uncertainty_coefficient"], "predictability")
    fig = series(
        table,
        {"accuracy": "top-1 predicted", "uncertainty_coefficient": "entropy explained"},
        "layer",
        dashed={"accuracy": "baseline_majority"},
        y_title="from the previous layer",
    )
    fig.update_yaxes(range=[0, 1.02])
    return paper_layout(fig, **layout, default_height=2.2)


def _devices(request: FigureRequest) -> dict[str, int]:
    """Eight devices, or as many as the smallest layer has experts."""
    return {"devices": min(8, *layer_sizes(request.run).values())}


PLACEMENT_FIGURES: dict[str, FigureKind] = {
    "coverage": FigureKind(
        analysis="coverage",
        build=figure_coverage,
        description="per layer, the share of assignments the N most-loaded experts cover (Megatron's "
        "routing concentration)",
        standard=(),
    ),
    "hot-set": FigureKind(
        analysis="hot-set",
        build=figure_hot_set,
        description="per layer, the fewest experts covering 50/80/90 % of the assignments",
        standard=(),
        paper_table=True,
    ),
    "placement": FigureKind(
        analysis="placement",
        params=_devices,
        build=figure_placement,
        description="balancedness (mean/max device load) and the busiest device's share for contiguous, "
        "round-robin and balanced placements on 8 devices (fewer if a layer has fewer experts)",
        standard=(),
        paper_table=True,
    ),
    "drift": FigureKind(
        analysis="drift",
        build=figure_drift,
        description="load drift between two runs per layer: total variation, JS divergence (--compare)",
    ),
    "drift-experts": FigureKind(
        analysis="drift-experts",
        build=figure_drift_experts,
        description="layer × expert change of load share between two runs (--compare)",
    ),
    "predictability": FigureKind(
        analysis="predictability",
        build=figure_predictability,
        description="per layer, how often the previous layer's top-1 expert predicts this layer's",
        requires=("layers",),
        standard=(),
        paper_table=True,
    ),
}
"""The placement figure kinds (merged into `registry.FIGURES`)."""
