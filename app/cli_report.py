"""`routescope report`: one registered analysis of a run, as a table, CSV, JSON, Markdown or LaTeX."""

from __future__ import annotations

import argparse
from pathlib import Path

from routescope.store import InputError, Store

from .console import out
from .tables import FORMATS, render


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    from routescope.analysis import ANALYSES

    parser.add_argument("--store", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--kind", required=True, choices=sorted(ANALYSES), help="which analysis")
    parser.add_argument("--by", help="label for specialization/nmi: domain, class, token_id, row, step, ...")
    parser.add_argument(
        "--layer", type=int, help="one layer: required by some kinds, a row filter for others"
    )
    parser.add_argument(
        "--compare", metavar="NAME", help="a second run: agreement needs it; other kinds go side by side"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an analysis option, e.g. capacity_factor=1.25, threshold=0.8, method=umap (repeatable)",
    )
    parser.add_argument(
        "--ci", type=float, metavar="LEVEL", help="bootstrap interval over samples, e.g. 0.95"
    )
    parser.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default="duckdb",
        help="aggregate with DuckDB (embedded) or Spark (pip install 'routescope[spark]'; docs/scale.md)",
    )
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--out", help="write to this file instead of the terminal")


BOOTSTRAP_PARAMS = ("n_boot", "seed", "threshold", "method")


def _params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param {pair!r} must look like KEY=VALUE")
        params[key.strip()] = value.strip()
    return params


def cmd_report(args: argparse.Namespace) -> int:
    from routescope.analysis import use_engine

    with use_engine(args.engine):
        return _report(args)


def _report(args: argparse.Namespace) -> int:
    from routescope.analysis import ANALYSES, bootstrap_ci, coerce_params, compute, side_by_side
    from routescope.analysis.registry import coerce_arguments

    store = Store(args.store)
    run = store.open(args.run)
    other = store.open(args.compare) if args.compare else None
    if args.ci is not None:
        if other is not None:
            raise InputError("--ci and --compare do not combine; bootstrap one run at a time")
        options = coerce_arguments(bootstrap_ci, _params(args.param), BOOTSTRAP_PARAMS, "--ci")
        table = bootstrap_ci(run, args.kind, label=args.by, level=args.ci, **options)
        if args.layer is not None:
            table = table[table["layer"] == args.layer]
    elif other is not None and not ANALYSES[args.kind].other:
        params = coerce_params(args.kind, _params(args.param))
        table = side_by_side([run, other], args.kind, label=args.by, layer=args.layer, **params)
    else:
        params = coerce_params(args.kind, _params(args.param))
        table = compute(args.kind, run, label=args.by, layer=args.layer, other=other, **params)
    text = render(table.reset_index(drop=True), args.format)
    if args.out:
        try:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:  # a folder, a missing folder, no permission
            raise InputError(f"cannot write --out {args.out}: {exc.strerror}") from None
        out(f"wrote {len(table)} rows to {args.out}")
    else:
        out(text)
    return 0
