"""Sequence and comparison figures: repeat rates of consecutive tokens (Mixtral §5), agreement between
two runs (OLMoE's router saturation), any metric of two runs side by side, and an expert's top tokens
(`repeat_rate`, `agreement`, `side_by_side`, `top_tokens`)."""

from __future__ import annotations

from typing import Unpack

import pandas as pd
import plotly.graph_objects as go

from .lines import series
from .parts import plain, require
from .theme import CATEGORICAL, Layout, axis_title, paper_layout

REPEAT_SERIES = {
    "top1_repeat": ("same top-1", "baseline_top1", "uniform_top1"),
    "top1_in_topk": ("top-1 in next top-k", "baseline_topk", "uniform_topk"),
}
"""Per measured column of `repeat_rate`: legend name, its chance level under the observed loads, and the
uniform router's level."""


def figure_repeat(
    table: pd.DataFrame,
    *,
    uniform: bool = False,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per layer, the share of neighbouring tokens with the same top-1 expert and with the first token's
    top-1 among the second's top-k, from `repeat_rate(run)`, each with its chance level dashed: two tokens
    routed independently with the layer's observed loads (`baseline_top1` = Σ p², `baseline_topk` =
    Σ p·q). `uniform=True` adds the uniform router's levels (1/E, k/E) dotted."""
    needed = ["layer", "top1_repeat", "top1_in_topk", "baseline_top1", "baseline_topk"]
    require(table, needed + (["uniform_top1", "uniform_topk"] if uniform else []), "repeat")
    part = table.sort_values("layer")
    paired = set(part["neighbours"]) if "neighbours" in part.columns else {"sequence"}
    fig = series(
        part,
        {column: name for column, (name, _, _) in REPEAT_SERIES.items()},
        "layer",
        y_title="consecutive tokens" if paired <= {"sequence"} else "neighbouring patches",
    )
    x = part["layer"].tolist()
    for i, (name, baseline, flat) in enumerate(REPEAT_SERIES.values()):
        colour = CATEGORICAL[i % len(CATEGORICAL)]
        references = [(baseline, "chance (observed loads)", "dash")]
        if uniform:
            references.append((flat, "uniform router", "dot"))
        for column, label, dash in references:
            fig.add_scatter(
                x=x,
                y=part[column].tolist(),
                name=plain(f"{name}, {label}"),
                mode="lines",
                line={"color": colour, "dash": dash, "width": 1},
            )
    fig.update_layout(showlegend=True)
    fig.update_yaxes(rangemode="tozero")
    return paper_layout(fig, **layout, default_height=2.2)


def figure_agreement(
    table: pd.DataFrame,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Per layer, the share of decisions whose top-1 expert is the same in two runs and the mean top-k
    overlap, from `agreement(run_a, run_b)`."""
    require(table, ["layer", "top1_agreement", "topk_overlap"], "agreement")
    fig = series(
        table,
        {"top1_agreement": "same top-1", "topk_overlap": "top-k overlap"},
        "layer",
        y_title="agreement of the two runs",
    )
    fig.update_yaxes(range=[0, 1.02])
    return paper_layout(fig, **layout, default_height=2.0)


def figure_top_tokens(
    table: pd.DataFrame,
    *,
    value: str = "count",
    n: int = 20,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Horizontal bars of an expert's `n` most frequent tokens (`count`, or `share` of the token's
    occurrences that go to the expert), from `top_tokens(run, layer, expert)`; token text is escaped and
    whitespace shown as ␣ ↵ ⇥."""
    require(table, ["token_id", "token", value], "top-tokens")
    part = table.head(n)
    positions = list(range(len(part)))
    labels = [plain(t) for t in part["token"]]
    fig = go.Figure(
        go.Bar(
            x=part[value].tolist(),
            y=positions,
            orientation="h",
            marker={"color": CATEGORICAL[0]},
            customdata=part["token_id"].tolist(),
            hovertext=labels,
            hovertemplate="%{hovertext} (id %{customdata}): %{x:.4g}<extra></extra>",
        )
    )
    fig.update_yaxes(
        title_text="token",
        tickmode="array",
        tickvals=positions,
        ticktext=labels,
        autorange="reversed",
        ticks="",
    )
    fig.update_xaxes(title_text="assignments" if value == "count" else "share of the token's occurrences")
    return paper_layout(fig, **layout, default_height=min(6.0, 0.8 + 0.14 * len(part)))


def figure_side_by_side(
    table: pd.DataFrame,
    *,
    metric: str,
    runs: tuple[str, str],
    keys: list[str],
    **layout: Unpack[Layout],
) -> go.Figure:
    """One metric of two runs from `side_by_side([a, b], kind)`: against layer, one line per run, when
    the kind has one row per layer; otherwise one dot per row (`keys` in the hover) with the first run on
    x and the second on y, and the diagonal where both runs agree."""
    columns = [f"{metric}@{runs[0]}", f"{metric}@{runs[1]}"]
    require(table, [*keys, *columns], "side-by-side")
    if keys == ["layer"]:
        fig = series(table, {columns[0]: runs[0], columns[1]: runs[1]}, "layer", y_title=axis_title(metric))
        return paper_layout(fig, **layout, default_height=2.0)
    both = table.dropna(subset=columns)
    x, y = both[columns[0]].to_numpy(dtype=float), both[columns[1]].to_numpy(dtype=float)
    hover = [
        plain(", ".join(f"{k} {v}" for k, v in zip(keys, row, strict=True)))
        for row in both[keys].itertuples(index=False)
    ]
    fig = go.Figure()
    if len(both):
        low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        fig.add_scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            line={"color": "grey", "dash": "dash", "width": 1},
            name="equal",
            hoverinfo="skip",
        )
    fig.add_scatter(
        x=x.tolist(),
        y=y.tolist(),
        mode="markers",
        name=plain(metric),
        marker={"color": CATEGORICAL[0], "size": 4, "opacity": 0.8},
        hovertext=hover,
        hovertemplate="%{hovertext}: %{x:.4g} → %{y:.4g}<extra></extra>",
    )
    fig.update_xaxes(title_text=plain(f"{axis_title(metric)}, {runs[0]}"))
    fig.update_yaxes(title_text=plain(f"{axis_title(metric)}, {runs[1]}"))
    fig.update_layout(showlegend=False)
    return paper_layout(fig, **layout, aspect=0.9)
