"""Label figures: which labels (domain, class, token, position, step) experts take, and how much routing
depends on each label (`specialization`, `label_nmi`, `sensitivity`, `embeddings`)."""

from __future__ import annotations

from typing import Unpack

import pandas as pd
import plotly.graph_objects as go

from routescope.store import InputError

from .axes import MAX_TICKS, SORTED_TICKS, block_order, thin_ticks
from .lines import series
from .parts import grey_gaps, heatmap, lift_heatmap, matrix, pick_layer, plain, require
from .theme import CATEGORICAL, SEQUENTIAL, Layout, axis_title, paper_layout

SPECIALIZATION_COLUMNS = ("layer", "router", "step", "call", "expert")
VALUE_COLUMNS = ("count", "share", "lift", "uniform_lift")
OTHER_COLOUR = "#BBBBBB"


def figure_specialization(
    table: pd.DataFrame,
    *,
    layer: int | None = None,
    value: str = "lift",
    sort: bool = True,
    max_labels: int = 30,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Expert × label heatmap for one layer from `specialization(run, label)`: `lift` on a log₂ scale
    centred at 1 (`share` or `uniform_lift` on viridis).

    Experts are sorted so that those preferring the same label sit together (`sort`); labels with many
    values (token ids) keep the `max_labels` most frequent, in frequency order."""
    labels = [c for c in table.columns if c not in (*SPECIALIZATION_COLUMNS, *VALUE_COLUMNS)]
    if len(labels) != 1:
        raise InputError("figure specialization needs the table of specialization(run, label)")
    label = labels[0]
    require(table, ["layer", "expert", label, "count", value], "specialization")
    part = pick_layer(table, layer, "specialization")
    totals = part.groupby(label, dropna=False)["count"].sum().sort_values(ascending=False, kind="stable")
    kept = list(totals.index[:max_labels]) if len(totals) > max_labels else sorted(totals.index, key=str)
    part = part[part[label].isin(kept)]
    experts = sorted(int(e) for e in part["expert"].unique())
    z = matrix(part, "expert", label, value, index_values=experts, column_values=kept, fill=0.0)
    if sort:
        z = z.loc[block_order(z)]
    z.index = [str(e) for e in z.index]
    z.columns = [plain(v) for v in z.columns]
    counted = f"<br>{table.attrs['counting']}" if table.attrs.get("counting") else ""  # ranks, weights
    fig = go.Figure(
        lift_heatmap(z, colorbar=f"lift{counted}<br>")
        if value == "lift"
        else heatmap(z, colorbar=axis_title(value) + counted)
    )
    grey_gaps(fig)
    x_title = axis_title(label)
    if len(totals) > max_labels:
        x_title += f" ({max_labels} most frequent of {len(totals):,})"
    crowded = sum(len(str(v)) for v in z.columns) > 30
    fig.update_xaxes(title_text=x_title, type="category", tickangle=-45 if crowded else 0)
    # a sorted expert axis is only readable with its labels: all of them up to SORTED_TICKS rows
    y_ticks = thin_ticks(list(z.index), SORTED_TICKS if sort else MAX_TICKS)
    fig.update_yaxes(title_text="expert", type="category", autorange="reversed", **y_ticks)
    rows = len(experts)
    return paper_layout(fig, **layout, default_height=min(6.0, 1.3 + 0.1 * rows))


def figure_nmi(
    table: pd.DataFrame,
    *,
    label: str | None = None,
    **layout: Unpack[Layout],
) -> go.Figure:
    """NMI of the label and the chosen expert per layer, from `label_nmi(run, label)`."""
    require(table, ["layer", "nmi"], "nmi")
    name = f"NMI with {label}" if label else "NMI"
    if table.attrs.get("counting"):  # which assignments counted (ranks, gate weights)
        name += f" ({table.attrs['counting']})"
    fig = series(table, {"nmi": name}, "layer", y_title=_nmi_title(label))
    fig.update_yaxes(rangemode="tozero")
    return paper_layout(fig, **layout, default_height=1.8)


def figure_sensitivity(
    table: pd.DataFrame,
    **layout: Unpack[Layout],
) -> go.Figure:
    """NMI of the expert with each label (class, position, step, ...) per layer, one line per label, from
    `sensitivity(run)`: which label routing follows (DiT-MoE: position and step, hardly class)."""
    require(table, ["layer", "label", "nmi"], "sensitivity")
    wide = table.pivot_table(index="layer", columns="label", values="nmi").reset_index()
    order = table.groupby("label")["nmi"].mean().sort_values(ascending=False).index
    fig = series(wide, {label: axis_title(label) for label in order}, "layer", y_title=_nmi_title(None))
    fig.update_yaxes(rangemode="tozero")
    return paper_layout(fig, **layout, default_height=2.2)


def _nmi_title(label: str | None) -> str:
    return f"NMI(expert; {axis_title(label)})" if label else "NMI(expert; label)"


def figure_embedding(
    table: pd.DataFrame,
    *,
    color: str | None = None,
    axis_names: tuple[str, str] = ("dimension 1", "dimension 2"),
    max_categories: int = len(CATEGORICAL) - 1,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Scatter of the `x, y` columns of an embeddings table, coloured by a label column.

    A float column gets a viridis colour bar; any other column is a category: its `max_categories` most
    frequent values get Okabe–Ito colours and the rest are drawn grey as "other"."""
    require(table, ["x", "y"], "embedding")
    marker = {"size": 3 if len(table) > 2000 else 4, "opacity": 0.8, "line": {"width": 0}}
    fig = go.Figure()
    if color is None:
        fig.add_scatter(x=table["x"], y=table["y"], mode="markers", marker=marker, showlegend=False)
    elif color not in table.columns:
        columns = ", ".join(map(str, table.columns))
        raise InputError(f"figure embedding: no column {color!r}; columns: {columns}")
    elif pd.api.types.is_float_dtype(table[color]):
        fig.add_scatter(
            x=table["x"],
            y=table["y"],
            mode="markers",
            marker={
                **marker,
                "color": table[color],
                "colorscale": SEQUENTIAL,
                "showscale": True,
                "colorbar": {"title": {"text": axis_title(color)}},
            },
            showlegend=False,
        )
    else:
        values = table[color].astype("string").fillna("(none)")
        frequent = values.value_counts(sort=True).index[:max_categories]
        shown = sorted(frequent, key=_natural) + (["other"] if values.nunique() > max_categories else [])
        for i, value in enumerate(shown):
            mask = ~values.isin(frequent) if value == "other" else values == value
            colour = OTHER_COLOUR if value == "other" else CATEGORICAL[i]
            fig.add_scatter(
                x=table.loc[mask.to_numpy(), "x"],
                y=table.loc[mask.to_numpy(), "y"],
                mode="markers",
                name=plain(value),
                marker={**marker, "color": colour},
            )
        fig.update_layout(legend_title_text=plain(axis_title(color)))
    fig.update_xaxes(title_text=axis_names[0], showticklabels=False, ticks="")
    fig.update_yaxes(title_text=axis_names[1], showticklabels=False, ticks="")
    return paper_layout(fig, **layout, aspect=0.9)


def _natural(value: object) -> tuple[int, float, str]:
    """Sort numbers numerically and text alphabetically."""
    try:
        return (0, float(str(value)), "")
    except ValueError:
        return (1, 0.0, str(value))
