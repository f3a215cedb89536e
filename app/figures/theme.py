"""The paper look, in one place: the `routescope-paper` plotly template, column widths, fonts, colours.

Figures go into papers without hand-editing, so sizes are physical. Plotly lays a figure out in CSS pixels
and Chromium (which kaleido drives for export) prints 96 CSS pixels per inch, so a figure laid out
`inches × 96` pixels wide comes out of the PDF and SVG export at that many inches, and a font of
`pt × 96 / 72` pixels prints at `pt` points. PNG export multiplies by `dpi / 96`.

Colours are colour-blind safe: Okabe–Ito for categories, viridis for magnitudes, and a diverging
red–blue scale for ratios such as lift, drawn on log₂ so that 1 (no preference) is the neutral middle.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import plotly.graph_objects as go
import plotly.io as pio

from routescope.store import InputError

TEMPLATE = "routescope-paper"
CSS_DPI = 96
"""CSS pixels per inch, as Chromium prints them."""
Width = Literal["single", "double"]
COLUMN_INCHES: dict[str, float] = {"single": 3.3, "double": 6.9}
"""Text widths of one column and of a full two-column page (ACL, NeurIPS, ICML, IEEE are all ≈ these)."""
FONT_PT = 8.0
TICK_PT = 7.0
FONT_FAMILY = "Helvetica, Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif"

CATEGORICAL = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
"""Okabe & Ito (2008), ordered so that the first colours stay distinct in greyscale too."""
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
"""ColorBrewer RdBu, reversed: blue below the neutral middle, red above it."""
LOSS_SCALE = "OrRd"
"""ColorBrewer OrRd for per-token loss behind text: light for low loss, orange-red for high."""
LOSS_SPAN = (0.05, 0.75)
"""The part of `LOSS_SCALE` used behind text, so dark text stays legible on the highest loss too."""
LIFT_RANGE = 4.0
"""Lift colour scales saturate at 2^±4 (16× over or under the base rate)."""

AXIS_TITLES: dict[str, str] = {
    "layer": "layer",
    "next_layer": "next layer",
    "expert": "expert",
    "expert_a": "expert",
    "expert_b": "expert",
    "next_expert": "expert at next layer",
    "step": "step",
    "step_a": "step",
    "step_b": "step",
    "timestep": "timestep (noise level)",
    "sigma": "noise level σ",
    "token": "token",
    "token_id": "token id",
    "row": "patch row",
    "col": "patch column",
    "max_over_mean": "max / mean load",
    "cv": "CV of load",
    "norm_entropy": "load entropy (norm.)",
    "gini": "Gini of load",
    "dead_experts": "dead experts",
    "aux_loss": "aux. balance loss",
    "mean_entropy": "router entropy (nats)",
    "mean_norm_entropy": "router entropy (norm.)",
    "mean_margin": "top-1 − top-2 margin",
    "uncertain_share": "uncertain share",
    "nmi": "NMI",
}
"""Axis titles by column name: figures are labelled by what is on the axis, never by a variable."""


def pt(points: float) -> float:
    """A size in points as CSS pixels (what plotly's font sizes and line widths are in)."""
    return points * CSS_DPI / 72


def width_px(width: Width | float) -> int:
    """A width as layout pixels: "single" (3.3 in), "double" (6.9 in) or a number of inches."""
    if isinstance(width, str):
        if width not in COLUMN_INCHES:
            raise InputError(f"width {width!r} must be one of {', '.join(COLUMN_INCHES)} or inches")
        inches = COLUMN_INCHES[width]
    else:
        inches = float(width)
    if not 0.5 <= inches <= 20:
        raise InputError(f"width {inches} in is not a plausible figure width (0.5–20 in)")
    return round(inches * CSS_DPI)


def axis_title(column: str) -> str:
    """The axis title for a table column (`AXIS_TITLES`, else the column name with spaces)."""
    return AXIS_TITLES.get(column, column.replace("_", " "))


def template() -> go.layout.Template:
    """The `routescope-paper` template, registered with plotly the first time it is asked for."""
    if TEMPLATE not in pio.templates:
        pio.templates[TEMPLATE] = _build_template()
    return pio.templates[TEMPLATE]


def _build_template() -> go.layout.Template:
    axis = {
        "showline": True,
        "linecolor": "black",
        "linewidth": 0.75,
        "mirror": False,
        "ticks": "outside",
        "ticklen": 3,
        "tickwidth": 0.75,
        "tickcolor": "black",
        "tickfont": {"size": pt(TICK_PT)},
        "title": {"font": {"size": pt(FONT_PT)}, "standoff": 4},
        "showgrid": False,
        "zeroline": False,
        "automargin": True,
    }
    colorbar = {
        "thickness": 8,
        "outlinewidth": 0,
        "ticks": "outside",
        "ticklen": 2,
        "tickfont": {"size": pt(TICK_PT)},
        "title": {"font": {"size": pt(FONT_PT)}, "side": "right"},
    }
    layout = go.Layout(
        font={"family": FONT_FAMILY, "size": pt(FONT_PT), "color": "black"},
        colorway=CATEGORICAL,
        colorscale={"sequential": SEQUENTIAL, "diverging": DIVERGING},
        coloraxis={"colorbar": colorbar},
        paper_bgcolor="white",
        plot_bgcolor="white",
        margin={"l": 4, "r": 4, "t": 6, "b": 4, "pad": 0},
        xaxis=axis,
        yaxis=axis,
        legend={
            "font": {"size": pt(TICK_PT)},
            "bgcolor": "rgba(0,0,0,0)",
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "y": 1.02,
            "yanchor": "bottom",
            "itemwidth": 30,
        },
        hoverlabel={"font": {"size": pt(FONT_PT)}},
    )
    data = {
        "heatmap": [go.Heatmap(colorbar=colorbar)],
        "scatter": [go.Scatter(line={"width": 1.25}, marker={"size": 4})],
        "bar": [go.Bar(marker={"line": {"width": 0}})],
    }
    return go.layout.Template(layout=layout, data=data)


class Layout(TypedDict, total=False):
    """The size and title every figure builder takes (`**layout`), applied by `paper_layout`."""

    width: Width | float
    """`single` (3.3 in) or `double` (6.9 in) column, or inches."""
    height: float | None
    """Inches (None: the builder's default height, else `aspect` × width)."""
    title: str | None
    """A title above the figure (None: none; a paper's caption says what a figure shows)."""


def paper_layout(
    fig: go.Figure,
    *,
    width: Width | float = "single",
    height: float | None = None,
    aspect: float = 0.75,
    title: str | None = None,
    default_height: float | None = None,
) -> go.Figure:
    """Apply the template and the physical size (height in inches, else the builder's `default_height`,
    else `aspect` × width) to `fig`.

    No title unless one is given: a paper's caption says what a figure shows."""
    height = height or default_height
    template()
    w = width_px(width)
    h = round(height * CSS_DPI) if height is not None else round(w * aspect)
    fig.update_layout(template=TEMPLATE, width=w, height=h)
    if title:
        fig.update_layout(title={"text": title, "font": {"size": pt(FONT_PT + 1)}}, margin={"t": pt(20)})
    return fig


def expert_colour(expert: int, n_experts: int) -> str:
    """A light background colour per expert, for the dashboard's token text and patch grids: experts are
    spread evenly around the hue circle (any number of them stays distinct from its neighbours), at a
    lightness where dark text on top stays legible."""
    hue = round(360 * (int(expert) % max(n_experts, 1)) / max(n_experts, 1))
    return f"hsl({hue}, 70%, 78%)"


def loss_colour(nll: float, top: float) -> str:
    """A background colour for a token's next-token loss `nll` (nats) on a scale from 0 to `top` (values
    above `top` take its colour), from `LOSS_SCALE`'s light end to a legible orange-red."""
    from plotly.colors import sample_colorscale

    fraction = min(max(float(nll) / top, 0.0), 1.0) if top > 0 else 0.0
    low, high = LOSS_SPAN
    return str(sample_colorscale(LOSS_SCALE, [low + (high - low) * fraction])[0])
