"""HTML the pages draw themselves: text with each token coloured by its expert, and the patch grid.

Every piece of text that came from a user or a model (tokens, run names, labels) goes through
`html.escape` here, so no markup from an input reaches the page; Streamlit's `st.html` sanitises what is
left as a second line of defence. Each token and patch carries `data-position` and `data-expert`
attributes (and `data-nll` where the run recorded token loss), so tests and browsers read back exactly
what was drawn. Expert colours come from `routescope.figures.theme.expert_colour`, the one palette for
experts drawn as categories; colouring by loss uses `theme.loss_colour`, a sequential scale from 0 nats.
"""

from __future__ import annotations

import html
import re
from typing import Literal

import pandas as pd

from ..figures.theme import expert_colour, loss_colour

ColourBy = Literal["expert", "loss"]

UNCERTAIN_STYLE = "outline: 2px solid #c62828; outline-offset: -1px;"
"""How an uncertain token or patch is marked: a red outline."""
UNROUTED_COLOUR = "#e0e0e0"


def _visible(token: str) -> str:
    """A token as it reads in running text, with newlines and tabs shown (and kept as line breaks)."""
    return token.replace("\t", "→\t").replace("\r", "").replace("\n", "↵\n")


def _is_routed(expert: object) -> bool:
    return not pd.isna(expert)  # None, NaN or pd.NA: the router never saw this token


def _is_true(value: object) -> bool:
    return not pd.isna(value) and bool(value)


def _tooltip(row: pd.Series) -> str:
    parts = [f"position {int(row['position'])}"]
    if _is_routed(row["expert"]):
        parts.append(f"expert {int(row['expert'])} (weight {float(row['weight']):.3f})")
        parts.append(f"entropy {float(row['norm_entropy']):.2f} of max, margin {float(row['margin']):.3f}")
        if _is_true(row.get("dropped")):
            parts.append("dropped by capacity")
    else:
        parts.append("not routed")
    if _has_loss(row):
        parts.append(f"loss {float(row['nll']):.3f} nats")
    return html.escape(" · ".join(parts), quote=True)


def _has_loss(row: pd.Series) -> bool:
    return "nll" in row.index and not pd.isna(row["nll"])


def loss_top(routing: pd.DataFrame) -> float:
    """The top of the loss colour scale for these tokens: their largest next-token loss (1 if none)."""
    values = routing["nll"].dropna() if "nll" in routing.columns else pd.Series(dtype=float)
    return float(values.max()) if len(values) and float(values.max()) > 0 else 1.0


def _background(row: pd.Series, n_experts: int, colour_by: ColourBy, top: float) -> str:
    if colour_by == "loss":
        return loss_colour(float(row["nll"]), top) if _has_loss(row) else UNROUTED_COLOUR
    return expert_colour(int(row["expert"]), n_experts) if _is_routed(row["expert"]) else UNROUTED_COLOUR


def tokens_html(
    routing: pd.DataFrame, uncertain: pd.Series, n_experts: int, colour_by: ColourBy = "expert"
) -> str:
    """The sample's text, one `<span>` per token, coloured by its top-1 expert (or, with `colour_by="loss"`,
    by its next-token loss from 0 to the sample's largest, grey where it has none); uncertain ones
    outlined."""
    if colour_by not in ("expert", "loss"):
        raise ValueError(f"colour_by must be 'expert' or 'loss', not {colour_by!r}")
    top = loss_top(routing)
    spans = []
    for index, row in routing.iterrows():
        routed = _is_routed(row["expert"])
        colour = _background(row, n_experts, colour_by, top)
        style = f"background: {colour};" + (UNCERTAIN_STYLE if bool(uncertain.loc[index]) else "")
        if _is_true(row.get("generated")):
            style += " font-style: italic;"
        expert = str(int(row["expert"])) if routed else ""
        token = "" if pd.isna(row["token"]) else str(row["token"])
        nll = f' data-nll="{float(row["nll"])!r}"' if _has_loss(row) else ""
        spans.append(
            f'<span class="rs-token" data-position="{int(row["position"])}" data-expert="{expert}"{nll} '
            f'data-uncertain="{str(bool(uncertain.loc[index])).lower()}" title="{_tooltip(row)}" '
            f'style="{style} border-radius: 3px; padding: 0 1px;">{html.escape(_visible(token))}</span>'
        )
    body = "".join(spans)
    return (
        '<div class="rs-tokens" style="font-family: monospace; white-space: pre-wrap; line-height: 1.9;'
        f' color: #111;">{body}</div>'
    )


def patch_grid_html(routing: pd.DataFrame, uncertain: pd.Series, n_experts: int, cell: int = 36) -> str:
    """The patch grid as a table: each cell coloured by its patch's top-1 expert and labelled with it."""
    rows = int(routing["row"].max()) + 1 if len(routing) else 0
    cols = int(routing["col"].max()) + 1 if len(routing) else 0
    cells: dict[tuple[int, int], str] = {}
    for index, row in routing.iterrows():
        routed = _is_routed(row["expert"])
        colour = expert_colour(int(row["expert"]), n_experts) if routed else UNROUTED_COLOUR
        extra = UNCERTAIN_STYLE if bool(uncertain.loc[index]) else ""
        expert = str(int(row["expert"])) if routed else ""
        cells[(int(row["row"]), int(row["col"]))] = (
            f'<td class="rs-patch" data-position="{int(row["position"])}" data-expert="{expert}" '
            f'title="{_tooltip(row)}" style="background: {colour}; {extra} width: {cell}px; '
            f'height: {cell}px; text-align: center; padding: 0;">{expert}</td>'
        )
    body = "".join(
        "<tr>" + "".join(cells.get((r, c), "<td></td>") for c in range(cols)) + "</tr>" for r in range(rows)
    )
    return (
        '<table class="rs-grid" style="border-collapse: separate; border-spacing: 2px; '
        f'font-family: monospace; color: #111;">{body}</table>'
    )


def loss_legend_html(top: float, steps: int = 5) -> str:
    """A row of swatches from 0 to `top` nats on the loss colour scale."""
    values = [top * i / (steps - 1) for i in range(steps)]
    swatches = "".join(
        f'<span class="rs-loss-legend" data-nll="{value!r}" style="background: {loss_colour(value, top)};'
        f' border-radius: 3px; padding: 0 6px; margin-right: 4px;">{value:.2f}</span>'
        for value in values
    )
    return f'<div style="font-family: monospace; color: #111;">loss (nats): {swatches}</div>'


def legend_html(experts: list[int], n_experts: int) -> str:
    """A row of swatches, one per expert that appears."""
    swatches = "".join(
        f'<span class="rs-legend" data-expert="{int(e)}" style="background: {expert_colour(e, n_experts)};'
        f' border-radius: 3px; padding: 0 6px; margin-right: 4px;">{int(e)}</span>'
        for e in sorted(experts)
    )
    return f'<div style="font-family: monospace; color: #111;">expert: {swatches}</div>'


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]<>#|~$:])")


def literal(text: str) -> str:
    """`text` with the characters Streamlit's Markdown acts on (emphasis, code, links, HTML, headings,
    tables, `:directives:`) backslash-escaped, so a run name or message in a caption or error reads
    exactly as written."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))
