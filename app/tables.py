"""Tables as text for people and papers: aligned, CSV, JSON, Markdown, or LaTeX (booktabs) ready to `\\input`.

One renderer shared by `routescope report` and the figure export (`routescope figure --all` writes each
per-layer table as CSV and LaTeX next to its figure). Kept free of plotly so the CLI stays quick to start.
"""

from __future__ import annotations

import json

import pandas as pd

FORMATS = ("table", "csv", "json", "markdown", "latex")

LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def render(table: pd.DataFrame, fmt: str) -> str:
    """A table as text: aligned, CSV, JSON records, Markdown or LaTeX (booktabs: numbers right-aligned,
    every LaTeX special character escaped, so the output compiles as it is)."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(table.to_json(orient="records")), indent=1)
    if fmt == "markdown":
        header = "| " + " | ".join(_markdown(c) for c in table.columns) + " |"
        rule = "|" + "---|" * len(table.columns)
        rows = ["| " + " | ".join(_markdown(v) for v in row) + " |" for row in table.itertuples(index=False)]
        return "\n".join([header, rule, *rows])
    if fmt == "latex":
        columns = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) else "l" for c in table.columns)
        body = [" & ".join(_latex(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
        head = " & ".join(_latex(c) for c in table.columns) + r" \\"
        lines = [rf"\begin{{tabular}}{{{columns}}}", r"\toprule", head, r"\midrule", *body, r"\bottomrule"]
        return "\n".join([*lines, r"\end{tabular}"])
    return table.to_string(index=False)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _markdown(value: object) -> str:
    """A Markdown table cell: pipes and line breaks cannot break the table, and HTML in a label (user
    text) is shown as text, not rendered, where the Markdown becomes a web page."""
    text = _cell(value).replace("\n", " ").replace("|", "\\|")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _latex(value: object) -> str:
    return "".join(LATEX_SPECIALS.get(char, char) for char in _cell(value))
