"""Figures of the per-token statistics a run records on request: expert saliency from output norms
(`saliency`, runs recorded with expert stats) and next-token loss against routing (`loss-by-uncertainty`,
`loss-by-expert`, `loss-by-label`, runs recorded with token loss).

The tables come from `routescope.analysis.saliency` and `.loss`; these builders only draw them.
`figure_saliency` is a layer × expert heatmap of one pruning criterion (chosen by `criterion`: the
dashboard's selector, the CLI's default REAP), experts a layer never routed to left grey. The loss
figures draw a mean nll per group, with an interval where the table carries one (`ci_low`, `ci_high`:
resampled over the run's unit of independence), else none — a figure never invents an interval its
table does not hold. `STATISTICS_FIGURES` are their figure kinds; `registry.FIGURES` includes them.
"""

from __future__ import annotations

from typing import Any, Literal, Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from routescope.store import InputError

from .kinds import FigureKind, FigureRequest
from .lines import group_colours, integer_axis
from .parts import full_range, grey_gaps, heatmap, label_axes, matrix, note_above, pick_layer, plain, require
from .theme import CATEGORICAL, Layout, axis_title, paper_layout

Criterion = Literal["frequency", "ean", "reap", "max_activation"]
CRITERIA: dict[str, str] = {
    "reap": "gate × output norm (REAP)",
    "ean": "mean output norm (EAN)",
    "max_activation": "max output norm",
    "frequency": "routing frequency",
}
"""The saliency criteria a figure can show, with their colour-bar titles (REAP first: the default)."""
LOSS_TITLE = "next-token loss (nats)"
TOP_VALUES = 15
"""Label values `figure_loss_by_label` draws (highest mean loss first)."""


def figure_saliency(
    table: pd.DataFrame,
    *,
    criterion: Criterion = "reap",
    **layout: Unpack[Layout],
) -> go.Figure:
    """Layer × expert heatmap of one saliency `criterion` of `saliency(run)` (`reap`, `ean`,
    `max_activation`, `frequency`); experts a layer never routed to have no norm and stay grey. Hover
    shows the tokens routed to the expert."""
    if criterion not in CRITERIA:
        raise InputError(f"criterion must be one of {', '.join(CRITERIA)}, not {criterion!r}")
    require(table, ["layer", "expert", "routed", criterion], "saliency")
    experts = full_range(table["expert"])
    z = table.pivot(index="layer", columns="expert", values=criterion).reindex(columns=experts)
    z = z.astype(float)  # unrouted experts stay NaN (a summing pivot would make them 0)
    routed = matrix(table, "layer", "expert", "routed", column_values=experts, fill=0.0)
    trace = heatmap(z, colorbar=CRITERIA[criterion])
    trace.update(
        customdata=routed.to_numpy(dtype=float),
        hovertemplate="expert %{x}, layer %{y}: %{z:.4g} ("
        + CRITERIA[criterion]
        + ") over %{customdata:,.0f} tokens<extra></extra>",
    )
    fig = grey_gaps(go.Figure(trace))
    label_axes(fig, "expert", "layer")
    fig.update_xaxes(**integer_axis(pd.Series(experts)))
    fig.update_yaxes(autorange="reversed", **integer_axis(pd.Series(z.index)))
    return paper_layout(fig, **layout, default_height=min(4.5, 0.9 + 0.22 * len(z.index)))


def _interval(part: pd.DataFrame) -> dict[str, Any]:
    """Plotly error bars from `ci_low`/`ci_high` around `mean_nll`, when the table holds them."""
    if not {"ci_low", "ci_high"} <= set(part.columns):
        return {}
    mean = part["mean_nll"].to_numpy(dtype=float)
    upper = np.nan_to_num(part["ci_high"].to_numpy(dtype=float) - mean)
    lower = np.nan_to_num(mean - part["ci_low"].to_numpy(dtype=float))
    return {"type": "data", "array": upper.tolist(), "arrayminus": lower.tolist(), "visible": True}


def _loss_title(table: pd.DataFrame) -> str:
    """The loss axis title: `next-token loss (nats)`, or `loss (nats) ± 95% CI` when the table carries an
    interval (short enough for one column; the unit it resamples is in the hover)."""
    if "ci_low" not in table.columns:
        return LOSS_TITLE
    level = float(table["level"].iloc[0]) if "level" in table.columns else 0.95
    return f"loss (nats) ± {level:.0%} CI"


def _ci_hover(table: pd.DataFrame, first: int) -> str:
    """Hover text of the interval held in customdata[first], customdata[first + 1] (empty without one)."""
    if "ci_low" not in table.columns:
        return ""
    unit = f" over {plain(table['unit'].iloc[0])}" if "unit" in table.columns else ""
    return f", CI %{{customdata[{first}]:.3f}}–%{{customdata[{first + 1}]:.3f}}{unit}"


def _custom(part: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """`columns` then the interval bounds (when the table has them) as hover data."""
    extra = ["ci_low", "ci_high"] if "ci_low" in part.columns else []
    return part[[*columns, *extra]].to_numpy(dtype=float)


def figure_loss_by_uncertainty(table: pd.DataFrame, **layout: Unpack[Layout]) -> go.Figure:
    """Per layer, one line of the mean next-token loss of the tokens in each bin of normalised router
    entropy (`loss_by_uncertainty(run)`; x: the bin's middle), with its interval as error bars when the
    table has one; hover shows the bin's tokens."""
    require(table, ["layer", "bin_low", "bin_high", "tokens", "mean_nll"], "loss-by-uncertainty")
    layers = sorted(int(v) for v in table["layer"].unique())
    fig = go.Figure()
    for layer, colour in zip(layers, group_colours(layers), strict=True):
        part = table[table["layer"] == layer].sort_values("bin_low")
        middle = ((part["bin_low"] + part["bin_high"]) / 2).to_numpy(dtype=float)
        fig.add_scatter(
            x=middle.tolist(),
            y=part["mean_nll"].tolist(),
            name=f"layer {layer}",
            mode="lines+markers",
            line={"color": colour},
            error_y=_interval(part),
            customdata=_custom(part, ["tokens"]),
            hovertemplate=f"layer {layer}, entropy %{{x:.2f}}: %{{y:.3f}} nats over %{{customdata[0]:,.0f}} "
            f"tokens{_ci_hover(part, 1)}<extra></extra>",
        )
    fig.update_xaxes(title_text="router entropy (norm.)", range=[0, 1])
    fig.update_yaxes(title_text=_loss_title(table))
    fig.update_layout(showlegend=len(layers) > 1)
    return paper_layout(fig, **layout, default_height=2.4)


def figure_loss_by_expert(
    table: pd.DataFrame,
    *,
    layer: int | None = None,
    **layout: Unpack[Layout],
) -> go.Figure:
    """At one layer, a bar per top-1 expert: the mean loss of the tokens it took first
    (`loss_by_expert(run)`), with its interval when the table has one, and the layer's token-weighted mean
    dashed; the permutation test of the spread between experts is written above the bars."""
    require(table, ["layer", "expert", "tokens", "mean_nll", "excess_nll"], "loss-by-expert")
    part = pick_layer(table, layer, "loss-by-expert").sort_values("expert")
    fig = go.Figure()
    fig.add_bar(
        x=part["expert"].astype(int).tolist(),
        y=part["mean_nll"].tolist(),
        name="mean loss",
        marker={"color": CATEGORICAL[0]},
        error_y=_interval(part),
        customdata=_custom(part, ["tokens", "excess_nll"]),
        hovertemplate="expert %{x}: %{y:.3f} nats (%{customdata[1]:+.3f} against the layer) over "
        f"%{{customdata[0]:,.0f}} tokens{_ci_hover(part, 2)}<extra></extra>",
    )
    tokens = part["tokens"].to_numpy(dtype=float)
    overall = float(np.average(part["mean_nll"].to_numpy(dtype=float), weights=tokens))
    fig.add_hline(y=overall, line={"color": "grey", "dash": "dash", "width": 1})
    if "p_value" in part.columns:
        note_above(fig, f"spread between experts: p = {float(part['p_value'].iloc[0]):.3g}")
    fig.update_xaxes(title_text=axis_title("expert"), type="category")
    fig.update_yaxes(title_text=_loss_title(part), rangemode="tozero")
    fig.update_layout(showlegend=False)
    return paper_layout(fig, **layout, default_height=2.2)


def figure_loss_by_label(
    table: pd.DataFrame,
    *,
    label: str,
    top: int = TOP_VALUES,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Horizontal bars of the mean loss per value of `label` (`loss_by_label(run, label)`), the `top`
    highest first, with the tokens of each value beside its bar (token text escaped)."""
    require(table, [label, "tokens", "mean_nll"], "loss-by-label")
    if top < 1:
        raise InputError("top must be ≥ 1")
    part = table.sort_values(["mean_nll", "tokens"], ascending=[False, False]).head(top)
    names = [plain(v) for v in part[label]]
    if len(set(names)) < len(names):  # two values that read alike (a token and its escaped form)
        names = [f"{n} ({i})" for i, n in enumerate(names)]
    fig = go.Figure()
    fig.add_bar(
        x=part["mean_nll"].tolist(),
        y=names,
        orientation="h",
        marker={"color": CATEGORICAL[1]},
        error_x=_interval(part),
        text=[f"{int(n):,}" for n in part["tokens"]],
        textposition="outside",
        customdata=_custom(part, ["tokens"]),
        hovertemplate=f"%{{y}}: %{{x:.3f}} nats over %{{customdata[0]:,.0f}} tokens{_ci_hover(part, 1)}"
        "<extra></extra>",
    )
    fig.update_yaxes(title_text=axis_title(label), autorange="reversed", type="category")
    fig.update_xaxes(title_text=_loss_title(part), rangemode="tozero")
    return paper_layout(fig, **layout, default_height=min(4.5, 0.8 + 0.16 * len(part)))


def _layer(request: FigureRequest) -> dict[str, Any]:
    return {"layer": request.layer}


STATISTICS_FIGURES: dict[str, FigureKind] = {
    "saliency": FigureKind(
        analysis="saliency",
        build=figure_saliency,
        description="layer × expert saliency from expert output norms: gate × norm (REAP); EAN, max norm "
        "and frequency with criterion=",
    ),
    "loss-by-uncertainty": FigureKind(
        analysis="loss-by-uncertainty",
        build=figure_loss_by_uncertainty,
        description="per layer, the mean next-token loss per bin of normalised router entropy",
        requires=("text",),
        standard=("text",),
    ),
    "loss-by-expert": FigureKind(
        analysis="loss-by-expert",
        build=figure_loss_by_expert,
        options=_layer,
        description="at one layer, the mean next-token loss of each top-1 expert's tokens, with the "
        "permutation test of their spread",
        layer="required",
        requires=("text",),
        standard=("text",),
    ),
    "loss-by-label": FigureKind(
        analysis="loss-by-label",
        build=figure_loss_by_label,
        options=lambda r: {"label": str(r.by)},
        description="the label values (domains, tokens, ...) with the highest mean next-token loss",
        requires=("text",),
        standard=("text",),
    ),
}
"""The figure kinds of the on-request statistics (merged into `registry.FIGURES`)."""
