"""`routescope report`: one registered analysis of a run, as a table, CSV, JSON, Markdown or LaTeX."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from .console import out
from .hooks import InputError, Store

FORMATS = ("table", "csv", "json", "markdown", "latex")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    from .analysis import ANALYSES

    parser.add_argument("--store", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--kind", required=True, choices=sorted(ANALYSES), help="which analysis")
    parser.add_argument("--by", help="label for specialization/nmi: domain, class, token_id, row, step, ...")
    parser.add_argument("--layer", type=int, help="keep one layer's rows")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--out", help="write to this file instead of the terminal")


def render(table: pd.DataFrame, fmt: str) -> str:
    """A table as text: aligned, CSV, JSON records, Markdown or LaTeX (booktabs)."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(table.to_json(orient="records")), indent=1)
    if fmt == "markdown":
        header = "| " + " | ".join(map(str, table.columns)) + " |"
        rule = "|" + "---|" * len(table.columns)
        rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
        return "\n".join([header, rule, *rows])
    if fmt == "latex":
        columns = "l" * len(table.columns)
        body = [" & ".join(_latex(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
        head = " & ".join(_latex(c) for c in table.columns) + r" \\"
        lines = [rf"\begin{{tabular}}{{{columns}}}", r"\toprule", head, r"\midrule", *body, r"\bottomrule"]
        return "\n".join([*lines, r"\end{tabular}"])
    return table.to_string(index=False)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _latex(value: object) -> str:
    text = _cell(value)
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
    ):
        text = text.replace(char, escaped)
    return text


def cmd_report(args: argparse.Namespace) -> int:
    from .analysis import ANALYSES

    analysis = ANALYSES[args.kind]
    run = Store(args.store).open(args.run)
    if analysis.needs_label and not args.by:
        raise InputError(
            f"--kind {args.kind} needs --by LABEL (e.g. {', '.join(run.label_columns) or 'token_id'})"
        )
    if args.by and not analysis.needs_label:
        raise InputError(f"--kind {args.kind} takes no --by")
    if analysis.needs_layer:
        if args.layer is None:
            raise InputError(f"--kind {args.kind} needs --layer L")
        table = analysis.function(run, args.layer)
    else:
        table = analysis.function(run, args.by) if analysis.needs_label else analysis.function(run)
    if args.layer is not None and not analysis.needs_layer:
        if "layer" not in table.columns:
            raise InputError(f"--kind {args.kind} has no layer column")
        table = table[table["layer"] == args.layer]
    text = render(table.reset_index(drop=True), args.format)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        out(f"wrote {len(table)} rows to {args.out}")
    else:
        out(text)
    return 0
