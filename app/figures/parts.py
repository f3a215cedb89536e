"""Pieces every builder uses: checking the table it was given, picking one layer, pivoting to a matrix,
heatmap traces for magnitudes and for lift, and making user text safe to draw.

Plotly draws text as pseudo-HTML (`<b>`, `<br>`, entities), so token text and label values are escaped
before they reach a figure; whitespace tokens are shown as visible symbols.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from routescope.store import InputError

from .theme import DIVERGING, LIFT_RANGE, SEQUENTIAL, TICK_PT, axis_title, pt

GAP_GREY = "#D9D9D9"
VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def require(table: pd.DataFrame, columns: Sequence[str], kind: str) -> None:
    """A one-line error when `table` is not the table figure `kind` draws."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"figure {kind} needs columns {', '.join(columns)}; the table lacks {', '.join(missing)}"
        )
    if table.empty:
        raise InputError(f"figure {kind}: the table is empty")


def pick_layer(table: pd.DataFrame, layer: int | None, kind: str, column: str = "layer") -> pd.DataFrame:
    """The rows of one layer; `layer` may be omitted when the table holds a single layer."""
    layers = sorted(int(v) for v in table[column].unique())
    if layer is None:
        if len(layers) == 1:
            return table
        raise InputError(f"figure {kind} shows one layer; pass a layer ({', '.join(map(str, layers))})")
    if int(layer) not in layers:
        raise InputError(f"figure {kind}: no layer {layer}; layers: {', '.join(map(str, layers))}")
    return table[table[column] == int(layer)]


def matrix(
    table: pd.DataFrame,
    index: str,
    columns: str,
    values: str,
    *,
    index_values: Sequence[object] | None = None,
    column_values: Sequence[object] | None = None,
    fill: float = np.nan,
) -> pd.DataFrame:
    """`values` pivoted to an `index` × `columns` matrix (sorted, or in the given orders), `fill` where
    the table has no row."""
    out = table.pivot_table(index=index, columns=columns, values=values, aggfunc="sum")
    if index_values is not None:
        out = out.reindex(index=list(index_values))
    if column_values is not None:
        out = out.reindex(columns=list(column_values))
    out.index.name, out.columns.name = index, columns
    return out if np.isnan(fill) else out.fillna(fill)


def full_range(values: pd.Series, size: int | None = None) -> list[int]:
    """0 … max (or size − 1): an integer axis with no gaps (experts nobody chose still get a row)."""
    top = int(values.max()) + 1 if size is None else int(size)
    return list(range(top))


def heatmap(
    z: pd.DataFrame, *, colorbar: str, zmin: float | None = 0.0, zmax: float | None = None
) -> go.Heatmap:
    """A magnitude heatmap (viridis) of a matrix; x = its columns, y = its index."""
    return go.Heatmap(
        z=z.to_numpy(dtype=float),
        x=list(z.columns),
        y=list(z.index),
        colorscale=SEQUENTIAL,
        zmin=zmin,
        zmax=zmax,
        colorbar={"title": {"text": colorbar}},
        hovertemplate=f"%{{x}}, %{{y}}: %{{z:.4g}} {colorbar}<extra></extra>",
    )


def lift_heatmap(lift: pd.DataFrame, *, colorbar: str = "lift") -> go.Heatmap:
    """A heatmap of log₂ lift centred at lift 1 (neutral, white), saturating at 2^±LIFT_RANGE; the colour
    bar is labelled in lift and hovering shows the lift itself. Lift 0 takes the bottom colour; NaN cells
    (undefined, e.g. an expert with itself) stay empty and show the grey of `grey_gaps`."""
    values = lift.to_numpy(dtype=float)
    with np.errstate(divide="ignore"):
        z = np.log2(values)
    finite = np.abs(z[np.isfinite(z)])
    top = float(min(LIFT_RANGE, max(1.0, np.ceil(finite.max())))) if finite.size else 1.0
    z[np.isneginf(z)] = -top  # lift 0 (never seen together): the bottom of the scale
    ticks = np.arange(-top, top + 1)
    return go.Heatmap(
        z=z,
        x=list(lift.columns),
        y=list(lift.index),
        customdata=values,
        colorscale=DIVERGING,
        zmid=0.0,
        zmin=-top,
        zmax=top,
        colorbar={
            "title": {"text": f"{colorbar} (log scale)"},
            "tickvals": ticks.tolist(),
            "ticktext": [_power_of_two(t) for t in ticks],
        },
        hovertemplate=f"%{{x}}, %{{y}}: {colorbar} %{{customdata:.3g}}<extra></extra>",
    )


def grey_gaps(fig: go.Figure) -> go.Figure:
    """A grey plot background, so undefined cells of a lift map are not mistaken for neutral white."""
    fig.update_layout(plot_bgcolor=GAP_GREY)
    return fig


def note_above(fig: go.Figure, text: str) -> None:
    """A one-line note in tick-sized type above the plot's top-left corner (a test's p-value, a
    correlation), with the top margin it needs."""
    fig.add_annotation(
        text=text,
        xref="paper",
        yref="paper",
        x=0,
        y=1,
        xanchor="left",
        yanchor="bottom",
        showarrow=False,
        font={"size": pt(TICK_PT)},
    )
    fig.update_layout(margin={"t": round(pt(14))})


def _power_of_two(exponent: float) -> str:
    value = 2.0**exponent
    return f"{value:g}" if value >= 1 else f"1/{1 / value:g}"


def label_axes(fig: go.Figure, x: str, y: str, **subplot: int) -> None:
    """Axis titles by column name (`theme.AXIS_TITLES`)."""
    fig.update_xaxes(title_text=axis_title(x), **subplot)
    fig.update_yaxes(title_text=axis_title(y), **subplot)


def plain(text: object) -> str:
    """User text made safe for a figure: HTML-escaped, whitespace shown (`␣`, `↵`, `⇥`)."""
    value = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    if value.strip() == "" or value != value.strip():
        value = "".join(VISIBLE.get(ch, ch) for ch in value)
    return html.escape(value, quote=False)
