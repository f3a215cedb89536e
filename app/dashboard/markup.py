"""HTML the pages draw themselves: text with each token coloured by its expert, and the patch grid.

Every piece of text that came from a user or a model (tokens, run names, labels) goes through
`html.escape` here, so no markup from an input reaches the page; Streamlit's `st.html` sanitises what is
left as a second line of defence. Each token and patch carries `data-position` and `data-expert`
attributes, so tests and browsers read back exactly what was drawn. Expert colours come from
`routescope.figures.theme.expert_colour`, the one palette for experts drawn as categories.
"""

from __future__ import annotations

import html
import re

import pandas as pd

from ..figures.theme import expert_colour

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
    return html.escape(" · ".join(parts), quote=True)


def tokens_html(routing: pd.DataFrame, uncertain: pd.Series, n_experts: int) -> str:
    """The sample's text, one `<span>` per token, coloured by its top-1 expert; uncertain ones outlined."""
    spans = []
    for index, row in routing.iterrows():
        routed = _is_routed(row["expert"])
        colour = expert_colour(int(row["expert"]), n_experts) if routed else UNROUTED_COLOUR
        style = f"background: {colour};" + (UNCERTAIN_STYLE if bool(uncertain.loc[index]) else "")
        if _is_true(row.get("generated")):
            style += " font-style: italic;"
        expert = str(int(row["expert"])) if routed else ""
        token = "" if pd.isna(row["token"]) else str(row["token"])
        spans.append(
            f'<span class="rs-token" data-position="{int(row["position"])}" data-expert="{expert}" '
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
