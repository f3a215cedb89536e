"""Probe figures for the dashboard's Interventions page: what an edit of the routing did.

Each builder draws one table of the probe analyses as it is: `figure_ablation` the base, ablated and
random-ablation quality per group (`ablation_loss`, `ablation_denoising`, `ablation_accuracy`; the random
bar is the mean over seeds with its sample standard deviation as the error bar), `figure_flip_rate` the
top-1 flip rate per margin bucket under noise (`flip_rate`), `figure_set_share` the share of decisions
dispatched inside a forced expert set (`set_share`, one series per run when a `run` column holds several),
`figure_batch_dependence` the share of decisions that change in a batch (`batch_dependence`), and
`figure_changes` the share of decisions whose top-1 expert or expert set changed, per layer
(`decision_changes`, one row per decision, grouped here).
"""

from __future__ import annotations

from typing import Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .parts import plain, require
from .theme import CATEGORICAL, Layout, axis_title, paper_layout

ABLATION_SERIES = {"base": "base", "ablated": "ablated", "random_mean": "random (mean ± sd)"}


def _group_labels(table: pd.DataFrame, group: str) -> list[str]:
    """The x categories: timestep buckets as `t LOW–HIGH`, other groups as their (escaped) values."""
    if {"t_low", "t_high"} <= set(table.columns):
        return [f"t {int(lo)}–{int(hi)}" for lo, hi in zip(table["t_low"], table["t_high"], strict=True)]
    return [plain(value) for value in table[group]]


def figure_ablation(
    table: pd.DataFrame,
    *,
    group: str,
    value_title: str = "loss (nats per token)",
    **layout: Unpack[Layout],
) -> go.Figure:
    """Grouped bars per value of `group`: the base model, the ablation, and the random ablations' mean with
    the sample standard deviation over seeds as an error bar (hover: min–max). Runs without random
    ablations get two bars per group."""
    require(table, [group, "base", "ablated", "random_mean"], "ablation")
    labels = _group_labels(table, group)
    fig = go.Figure()
    for colour, (column, name) in zip(CATEGORICAL, ABLATION_SERIES.items(), strict=False):
        values = table[column].to_numpy(dtype=float)
        if column == "random_mean" and not np.isfinite(values).any():
            continue
        bar: dict[str, object] = {}
        if column == "random_mean":
            spread = table.get("random_sd", pd.Series(np.nan, index=table.index)).to_numpy(dtype=float)
            bar["error_y"] = {"type": "data", "array": np.nan_to_num(spread).tolist(), "visible": True}
            bounds = table[["random_min", "random_max"]].to_numpy(dtype=float)
            bar["customdata"] = bounds
            bar["hovertemplate"] = (
                "%{x}: %{y:.4g} (min %{customdata[0]:.4g}, max %{customdata[1]:.4g})<extra>random</extra>"
            )
        else:
            bar["hovertemplate"] = f"%{{x}}: %{{y:.4g}}<extra>{name}</extra>"
        fig.add_bar(x=labels, y=values.tolist(), name=name, marker={"color": colour}, **bar)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text=axis_title(group), type="category")
    fig.update_yaxes(title_text=value_title, rangemode="tozero")
    return paper_layout(fig, **layout, default_height=2.2)


def figure_flip_rate(
    table: pd.DataFrame,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per bucket of the base run's top-1 − top-2 margin: the share of decisions whose top-1 expert flipped
    under noise and the share whose expert set changed (`flip_rate(base, noisy)`); with a `layer` column
    (`by_layer=True`) one flip-rate series per layer."""
    require(table, ["margin_low", "margin_high", "decisions", "flip_rate", "set_change_rate"], "flip-rate")
    fig = go.Figure()
    if "layer" in table.columns:
        groups = [(f"layer {int(layer)}", part) for layer, part in table.groupby("layer", sort=True)]
        columns = {"flip_rate": ""}
    else:
        groups = [("", table)]
        columns = {"flip_rate": "top-1 flipped", "set_change_rate": "expert set changed"}
    colours = iter(CATEGORICAL * 4)
    for prefix, part in groups:
        labels = [f"{lo:g}–{hi:g}" for lo, hi in zip(part["margin_low"], part["margin_high"], strict=True)]
        for column, name in columns.items():
            fig.add_bar(
                x=labels,
                y=part[column].tolist(),
                name=" ".join(p for p in (prefix, name) if p),
                marker={"color": next(colours)},
                customdata=part["decisions"].to_numpy(dtype=float),
                hovertemplate="margin %{x}: %{y:.3%} of %{customdata:,.0f} decisions<extra></extra>",
            )
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="base run's top-1 − top-2 margin", type="category")
    fig.update_yaxes(title_text="share of decisions", rangemode="tozero")
    return paper_layout(fig, **layout, default_height=2.2)


def figure_set_share(
    table: pd.DataFrame,
    *,
    label: str | None = None,
    **layout: Unpack[Layout],
) -> go.Figure:
    """The share of decisions dispatched only to experts of the forced set, per layer (and value of
    `label`), one bar series per value of the `run` column if there is one (the forced run and its base)."""
    require(table, ["layer", "decisions", "in_set_share"], "set-share")
    if label is not None:
        require(table, [label], "set-share")
    runs = list(dict.fromkeys(table["run"])) if "run" in table.columns else [None]
    fig = go.Figure()
    for colour, run in zip(CATEGORICAL * 4, runs, strict=False):
        part = table if run is None else table[table["run"] == run]
        labels = [
            f"layer {int(layer)}" + ("" if label is None else f" · {plain(value)}")
            for layer, value in zip(part["layer"], part[label] if label else part["layer"], strict=True)
        ]
        fig.add_bar(
            x=labels,
            y=part["in_set_share"].tolist(),
            name=plain(run) if run is not None else "in the set",
            marker={"color": colour},
            customdata=part["decisions"].to_numpy(dtype=float),
            hovertemplate="%{x}: %{y:.3f} of %{customdata:,.0f} decisions<extra></extra>",
        )
    fig.update_layout(barmode="group", showlegend=len(runs) > 1)
    fig.update_xaxes(type="category")
    fig.update_yaxes(title_text="share inside the expert set", range=[0, 1.05])
    return paper_layout(fig, **layout, default_height=2.2)


def figure_batch_dependence(
    table: pd.DataFrame,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per router, the share of decisions that change when the inputs share a batch
    (`batch_dependence(alone, batched)`); 0 everywhere for batch-independent routing."""
    require(table, ["router", "layer", "decisions", "changed", "changed_share"], "batch-dependence")
    stacks = table["stack"].nunique() if "stack" in table.columns else 1
    labels = [
        (f"{plain(stack)} " if stacks > 1 else "") + f"layer {int(layer)}"
        for stack, layer in zip(table.get("stack", table["layer"]), table["layer"], strict=True)
    ]
    if len(set(labels)) < len(labels):
        labels = [f"{name} · router {int(r)}" for name, r in zip(labels, table["router"], strict=True)]
    share = table["changed_share"].to_numpy(dtype=float)
    fig = go.Figure()
    fig.add_bar(
        x=labels,
        y=share.tolist(),
        name="changed",
        marker={"color": CATEGORICAL[1]},
        customdata=table[["changed", "decisions"]].to_numpy(dtype=float),
        hovertemplate="%{x}: %{customdata[0]:,.0f} of %{customdata[1]:,.0f} decisions changed<extra></extra>",
    )
    fig.update_xaxes(type="category")
    top = float(np.nanmax(share)) if share.size else 0.0
    fig.update_yaxes(title_text="share of decisions changed", range=[0, max(top * 1.15, 0.01)])
    return paper_layout(fig, **layout, default_height=2.0)


CHANGE_SERIES = {"flipped": "top-1 expert changed", "set_changed": "expert set changed"}


def change_shares(table: pd.DataFrame) -> pd.DataFrame:
    """`layer, decisions, flipped, set_changed` per layer: the share of the per-decision table's rows whose
    top-1 expert, and whose expert set, differ between the two runs."""
    return (
        table.groupby("layer", sort=True)
        .agg(
            decisions=("flipped", "size"),
            flipped=("flipped", "mean"),
            set_changed=("set_changed", "mean"),
        )
        .reset_index()
    )


def figure_changes(
    table: pd.DataFrame,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per layer, the share of decisions whose top-1 expert changed and whose expert set changed against
    the base run, from the per-decision table of `decision_changes(base, other)` (any probe: noise,
    forcing, ablation, batching)."""
    require(table, ["layer", "flipped", "set_changed"], "changes")
    shares = change_shares(table)
    labels = [f"layer {int(layer)}" for layer in shares["layer"]]
    fig = go.Figure()
    for colour, (column, name) in zip(CATEGORICAL, CHANGE_SERIES.items(), strict=False):
        fig.add_bar(
            x=labels,
            y=shares[column].tolist(),
            name=name,
            marker={"color": colour},
            customdata=shares["decisions"].to_numpy(dtype=float),
            hovertemplate=f"%{{x}}: %{{y:.3%}} of %{{customdata:,.0f}} decisions<extra>{name}</extra>",
        )
    top = float(np.nanmax(shares[list(CHANGE_SERIES)].to_numpy(dtype=float)))
    fig.update_layout(barmode="group")
    fig.update_xaxes(type="category")
    fig.update_yaxes(title_text="share of decisions changed", range=[0, max(top * 1.15, 0.01)])
    return paper_layout(fig, **layout, default_height=2.2)
