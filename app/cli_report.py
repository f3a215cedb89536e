"""`routescope report`: one registered analysis of a run, as a table, CSV, JSON, Markdown or LaTeX.

`--compare` takes one run (a two-run kind such as agreement, or any kind side by side) or several: a
series kind (`saturation`: OLMoE's router saturation over checkpoints) compares each of them, in the order
given, with `--run` as the reference; a one-run kind puts them all side by side. A series is `--compare`
with more names rather than a command of its own because it is the same question as agreement — the
reference run against others recorded on the same inputs — asked of several runs at once.
"""

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
        "--compare",
        metavar="NAME",
        nargs="+",
        help="a second run (agreement needs it; other kinds go side by side), or several: the checkpoint "
        "series of saturation, in order, against --run",
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
    compared = [store.open(name) for name in args.compare or ()]
    other = compared[0] if len(compared) == 1 else None
    entry = ANALYSES[args.kind]
    if len(compared) > 1 and entry.other:
        raise InputError(f"{args.kind} compares two runs: give one --compare run", field="compare")
    if args.ci is not None and compared:
        raise InputError("--ci and --compare do not combine; bootstrap one run at a time")
    if entry.series:
        params = coerce_params(args.kind, _params(args.param))
        table = compute(args.kind, run, label=args.by, layer=args.layer, series=compared, **params)
    elif args.ci is not None:
        options = coerce_arguments(bootstrap_ci, _params(args.param), BOOTSTRAP_PARAMS, "--ci")
        table = bootstrap_ci(run, args.kind, label=args.by, level=args.ci, **options)
        if args.layer is not None:
            table = table[table["layer"] == args.layer]
    elif compared and not entry.other:
        params = coerce_params(args.kind, _params(args.param))
        table = side_by_side([run, *compared], args.kind, label=args.by, layer=args.layer, **params)
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
