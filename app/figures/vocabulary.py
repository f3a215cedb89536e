"""Vocabulary specialization (OLMoE): how much of a token id's routing one expert takes, per layer.

`vocabulary_specialization(run)` gives, per layer and token id, `share`: the share of the id's
occurrences routed first to its most frequent expert. The figure draws, per layer, the cumulative
distribution of `share` over token occurrences (each id weighted by its `count`), so frequent tokens
count as often as they are routed. A router that decides by the token id alone piles up at 1. A router
that ignores the id does not sit at 1/E: a token seen n times has a top share of at least 1/n and, with
skewed loads, near the largest load, so the chance level is `baseline_share` (the expected top share of a
token-blind router with the layer's observed loads, per token count), drawn as the same CDF dashed in
the layer's colour ("chance (observed loads)"); the uniform router's 1/E is a grey vertical line when
`n_experts` is given. A CDF needs no bin width and shows the median and the tails at once; lines of
several layers stay readable on one axis, where histograms overlap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from routescope.store import InputError

from .lines import group_colours
from .parts import require
from .theme import Layout, paper_layout, pt

TARGET_NOUNS = {"input": "token", "next": "next token", "predicted": "predicted token"}
"""What a `token_id` of the table is, by the analysis' `target`, as the x axis names it."""


def weighted_cdf(share: pd.Series, count: pd.Series) -> tuple[list[float], list[float]]:
    """(x, y) of the step CDF of `share` weighted by `count`: y at x is the weight of shares ≤ x over the
    total, from (0, 0) to each distinct share."""
    frame = pd.DataFrame({"share": share.to_numpy(dtype=float), "count": count.to_numpy(dtype=float)})
    sums = frame.groupby("share", sort=True)["count"].sum()
    total = float(sums.sum())
    if total <= 0:
        raise InputError("figure vocabulary: the token counts sum to 0")
    return [0.0, *sums.index.tolist()], [0.0, *(np.cumsum(sums.to_numpy()) / total).tolist()]


def figure_vocabulary(
    table: pd.DataFrame,
    *,
    n_experts: int | Mapping[int, int] | None = None,
    min_count: int = 1,
    chance: bool = True,
    target: str = "input",
    **layout: Unpack[Layout],
) -> go.Figure:
    """One step line per layer: the share of token occurrences whose id routes at most x of its top-1
    choices to one expert (`vocabulary_specialization(run)`, ids seen fewer than `min_count` times left
    out), and with `chance` (when the table has `baseline_share`) the same CDF of the chance level dashed.
    `n_experts` (one number, or per layer) marks the uniform-router level 1/E with a grey line. `target`
    names what the table keys on (`vocabulary_specialization(run, target=...)`: the token itself, the
    next one, or the model's predicted next token), for the x axis title."""
    require(table, ["layer", "token_id", "count", "share"], "vocabulary")
    if target not in TARGET_NOUNS:
        raise InputError(f"target must be one of {', '.join(TARGET_NOUNS)}, not {target!r}")
    if min_count < 1:
        raise InputError("min_count must be ≥ 1")
    kept = table[table["count"] >= min_count]
    if kept.empty:
        raise InputError(f"figure vocabulary: no token id is seen {min_count} times or more")
    layers = sorted(int(v) for v in kept["layer"].unique())
    fig = go.Figure()
    for layer, colour in zip(layers, group_colours(layers), strict=True):
        part = kept[kept["layer"] == layer]
        x, y = weighted_cdf(part["share"], part["count"])
        fig.add_scatter(
            x=x,
            y=y,
            name=f"layer {layer}",
            mode="lines",
            line={"color": colour, "shape": "hv"},
            hovertemplate=f"layer {layer}: %{{y:.1%}} of tokens at share ≤ %{{x:.3g}}<extra></extra>",
        )
    if chance and "baseline_share" in kept.columns:
        for i, (layer, colour) in enumerate(zip(layers, group_colours(layers), strict=True)):
            part = kept[kept["layer"] == layer]
            x, y = weighted_cdf(part["baseline_share"], part["count"])
            fig.add_scatter(
                x=x,
                y=y,
                name="chance (observed loads)",
                legendgroup="chance",
                showlegend=i == 0,
                mode="lines",
                line={"color": colour, "shape": "hv", "dash": "dash", "width": 1},
                hovertemplate=f"layer {layer}, chance: %{{y:.1%}} of tokens at share ≤ %{{x:.3g}}"
                "<extra></extra>",
            )
    sizes = _sizes(n_experts, layers)
    for size in sorted(set(sizes)):
        fig.add_vline(
            x=1.0 / size,
            line={"color": "grey", "dash": "dash", "width": 1},
            annotation={"text": f"1/{size}", "font": {"size": pt(7)}},
            annotation_position="top right",
        )
    fig.update_xaxes(title_text=f"share routed to the {TARGET_NOUNS[target]}'s top expert", range=[0, 1.02])
    fig.update_yaxes(title_text="share of tokens (cumulative)", range=[0, 1.02])
    fig.update_layout(showlegend=len(fig.data) > 1)
    return paper_layout(fig, **layout, default_height=2.4)


def _sizes(n_experts: int | Mapping[int, int] | None, layers: list[int]) -> list[int]:
    """The numbers of experts of the drawn layers (none when not given)."""
    if n_experts is None:
        return []
    if isinstance(n_experts, Mapping):
        return [int(n_experts[layer]) for layer in layers if layer in n_experts]
    return [int(n_experts)]
