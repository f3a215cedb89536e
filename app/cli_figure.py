"""`routescope figure`: one paper figure of a run (`--kind`), or a run's standard set with an index (`--all`).

One figure: `--kind KIND --out FILE.svg|.pdf|.png` with the options the kind needs (`--layer`, `--by`,
`--expert`, `--compare`). The set: `--all --out DIR` writes every figure that applies to the run (diffusion
figures only for diffusion runs; one-layer figures at the first and last MoE layer), the per-layer tables
as CSV and LaTeX, and `index.md` saying what each file shows. All figures of a call share one browser.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from routescope.store import InputError, Run, Store

from .console import out

FORMATS = ("svg", "pdf", "png")


def add_figure_arguments(parser: argparse.ArgumentParser) -> None:
    from .figures import FIGURES

    parser.add_argument("--store", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--kind", help="which figure: " + ", ".join(FIGURES))
    parser.add_argument("--all", action="store_true", help="the run's standard figure set, into --out DIR")
    parser.add_argument("--layer", type=int, help="the MoE layer of one-layer figures")
    parser.add_argument("--by", help="label: domain, class, token_id, row, step, ... (specialization, nmi)")
    parser.add_argument("--expert", type=int, help="the expert of top-tokens")
    parser.add_argument(
        "--criterion",
        help="saliency: reap (gate × output norm, the default), ean (mean output norm), max_activation or "
        "frequency",
    )
    parser.add_argument(
        "--compare",
        metavar="NAME",
        nargs="+",
        help="a second run of the same store (agreement, changes, flips, batch-dependence), or the "
        "checkpoint runs of saturation, in order",
    )
    parser.add_argument("--out", required=True, help="FILE.svg|.pdf|.png, or a folder with --all")
    parser.add_argument("--width", choices=("single", "double"), default="single", help="paper column width")
    parser.add_argument("--format", choices=FORMATS, default="svg", help="file format of --all (default svg)")
    parser.add_argument("--dpi", type=float, default=300, help="PNG resolution (default 300)")


def cmd_figure(args: argparse.Namespace) -> int:
    if args.all == bool(args.kind):
        raise InputError("give --kind KIND for one figure, or --all for the run's standard set")
    if not 30 <= args.dpi <= 1200:
        raise InputError(f"--dpi {args.dpi:g} is out of range (30–1200)")
    store = Store(args.store)
    run = store.open(args.run)
    if args.kind:
        return _one(args, store, run)
    for option in ("layer", "expert", "compare", "criterion"):
        if getattr(args, option) is not None:
            raise InputError(f"--all draws the first and last MoE layer; --{option} goes with --kind")
    return _standard(args, run)


def _one(args: argparse.Namespace, store: Store, run: Run) -> int:
    from .figures import export_figures, make_figure
    from .figures.export import check_figure_path

    path = check_figure_path(args.out)
    from .figures import FIGURES
    from .figures.kinds import KINDS

    compared = [store.open(name) for name in args.compare or ()]
    series = args.kind in FIGURES and KINDS[FIGURES[args.kind].analysis].series
    if len(compared) > 1 and not series:
        raise InputError(f"figure {args.kind} compares two runs: give one --compare run", field="compare")
    fig, _ = make_figure(
        args.kind,
        run,
        layer=args.layer,
        by=args.by,
        expert=args.expert,
        other=None if series or not compared else compared[0],
        series=compared if series else (),
        width=args.width,
        criterion=args.criterion,
    )
    export_figures([(fig, path)], dpi=args.dpi)
    out(f"wrote {path}")
    return 0


def _standard(args: argparse.Namespace, run: Run) -> int:
    from .figures import FIGURES, export_figures, make_figure, standard_set, write_table

    folder = Path(args.out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder} is a file; --all writes a folder")
    if (folder / "manifest.json").exists():
        raise InputError(f"--out {folder} is a run's folder; write figures to a folder of their own")
    folder.mkdir(parents=True, exist_ok=True)
    figures, rows, tables, skipped = [], [], [], []
    for entry in standard_set(run, by=args.by):
        try:
            fig, table = make_figure(entry.kind, run, layer=entry.layer, by=entry.by, width=args.width)
        except InputError as exc:  # one figure that does not apply must not sink the set
            skipped.append((entry.stem, str(exc)))
            continue
        stem = _file_stem(entry.stem)
        path = folder / f"{stem}.{args.format}"
        figures.append((fig, path))
        kind = FIGURES[entry.kind]
        rows.append((path.name, kind.description, entry.layer, entry.by))
        if kind.paper_table:
            for suffix in (".csv", ".tex"):
                tables.append(write_table(table, folder / f"{stem}{suffix}").name)
    export_figures(figures, dpi=args.dpi)
    index = folder / "index.md"
    index.write_text(_index(run, rows, tables, skipped), encoding="utf-8")
    out(f"wrote {len(figures)} figures and {len(tables)} tables to {folder} (see {index.name})")
    for stem, reason in skipped:
        out(f"skipped {stem}: {reason}")
    return 0


def _file_stem(stem: str) -> str:
    """A file name from a stem that may hold a user's label name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "figure"


def _md(text: object) -> str:
    """Text for a Markdown table cell: no pipes, no HTML, no line breaks."""
    value = str(text).replace("\n", " ").replace("|", "\\|")
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _index(
    run: Run,
    rows: list[tuple[str, str, int | None, str | None]],
    tables: list[str],
    skipped: list[tuple[str, str]],
) -> str:
    model = run.info.model.get("spec", "")
    kind = "diffusion" if run.info.is_diffusion else "text"
    lines = [
        f"# Figures of run `{_md(run.name)}`",
        "",
        f"Model `{_md(model)}`, a {kind} run recorded {_md(run.info.created)}. Written by "
        "`routescope figure --all`; sizes are paper column widths (docs/figures.md).",
        "",
        "| file | what it shows | layer | label |",
        "|---|---|---|---|",
    ]
    for name, description, layer, label in rows:
        shown_layer = "all" if layer is None else str(layer)
        lines.append(f"| [{name}]({name}) | {_md(description)} | {shown_layer} | {_md(label or '')} |")
    if tables:
        lines += ["", "Tables of the per-layer numbers, as CSV and as LaTeX (booktabs; `\\input{...}`):", ""]
        lines += [f"- [{name}]({name})" for name in tables]
    if skipped:
        lines += ["", "Not drawn:", ""]
        lines += [f"- {_md(stem)}: {_md(reason)}" for stem, reason in skipped]
    return "\n".join(lines) + "\n"
