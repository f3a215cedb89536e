"""The `routescope` command line: record runs, list them, summarise one, and a one-command demo.

Every user mistake ends in one line on stderr (`routescope: error: ...`) and exit status 2; an
interrupted recording exits 130 and leaves its partial run marked incomplete.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .hooks import RouteScopeError, Store
from .inputs import read_inputs

DEMO_TEXTS = (
    "def mean(values):\n    return sum(values) / len(values)",
    "The committee met on Tuesday and agreed to publish the report in the spring.",
    '{"id": 17, "name": "routescope", "tags": ["moe", "routing"]}',
    "12 + 30 = 42; 7 * 6 = 42; 84 / 2 = 42",
)
DEMO_LABELS = ("code", "prose", "json", "arithmetic")


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routescope", description="Record and analyse MoE routing.")
    parser.add_argument("--version", action="version", version=f"routescope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("record", help="record the routing of a model on some inputs into a new run")
    rec.add_argument("model", help="bundled:NAME, a local checkpoint folder, or a hub id")
    rec.add_argument("--store", required=True, help="store folder (created if absent)")
    rec.add_argument("--name", required=True, help="run name (letters, digits, . _ -)")
    rec.add_argument("--text", action="append", help="an input text (repeatable)")
    rec.add_argument("--file", help="inputs: .txt (one per line) or .jsonl (see --text-column)")
    rec.add_argument("--text-column", default="text", help="text column of a .jsonl file (default: text)")
    rec.add_argument("--label-column", action="append", default=[], help="label column of a .jsonl file")
    rec.add_argument(
        "--target-column", help="decoder target column of a .jsonl file (encoder–decoder models)"
    )
    rec.add_argument("--probs", action="store_true", help="also store each decision's full probabilities")
    rec.add_argument("--max-new-tokens", type=int, default=0, help="generate N tokens and record them too")
    rec.add_argument("--batch-size", type=int, default=8)
    rec.add_argument("--chunk-size", type=int, default=None, help="split longer inputs (default: context)")
    rec.add_argument("--engine", choices=("nnsight", "hooks"), default="nnsight")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--dtype", default=None, help="load the model in this dtype (e.g. bfloat16)")
    rec.add_argument("--device", default=None, help="torch device (default: CPU)")
    rec.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own code to run")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")

    runs = sub.add_parser("runs", help="list the runs in a store")
    runs.add_argument("--store", required=True)
    runs.add_argument("--clean", action="store_true", help="delete interrupted recordings")

    show = sub.add_parser("show", help="summarise one run")
    show.add_argument("--store", required=True)
    show.add_argument("--run", required=True)

    demo = sub.add_parser("demo", help="record a small run on the bundled tiny model and summarise it")
    demo.add_argument("--store", default="runs")
    return parser


def cmd_record(args: argparse.Namespace) -> int:
    from .hooks import record
    from .loading import load_model

    inputs = read_inputs(args.text, args.file, args.label_column, args.text_column, args.target_column)
    store = Store(args.store)
    if store.exists(args.name) and not args.overwrite:  # fail before loading a large model
        from .hooks import RunExistsError

        raise RunExistsError(
            f"run {args.name!r} already exists in {store.path}; pick another name or pass --overwrite"
        )
    model = load_model(
        args.model, trust_remote_code=args.trust_remote_code, dtype=args.dtype, device=args.device
    )
    run = record(
        model,
        inputs.texts,
        store=store,
        name=args.name,
        labels=inputs.labels or None,
        probs=args.probs,
        targets=inputs.targets,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        engine=args.engine,
        overwrite=args.overwrite,
        seed=args.seed,
    )
    _out(f"recorded run {run.name!r} in {store.path}")
    show_run(store, run.name)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    store = Store(args.store)
    if args.clean:
        removed = store.clean()
        _out(f"removed {len(removed)} interrupted recording(s){': ' + ', '.join(removed) if removed else ''}")
    for name in store.runs():
        run = store.open(name)
        rows = run.manifest.get("rows", {})
        _out(
            f"{name}\tcomplete\t{run.manifest['model'].get('spec') or run.manifest['model'].get('class')}\t"
            f"{rows.get('tokens', 0)} tokens\t{rows.get('assignments', 0)} assignments"
        )
    for name in store.incomplete():
        _out(
            f"{name}\tincomplete\t(interrupted or still recording; re-record it or run "
            f"`routescope runs --store {store.path} --clean`)"
        )
    for name in store.damaged():
        _out(f"{name}\tdamaged\t(unreadable manifest; delete the folder {store.path / name})")
    if not (store.runs() or store.incomplete() or store.damaged()):
        _out(f"no runs in {store.path}")
    return 0


def show_run(store: Store, name: str) -> None:
    from .analysis import router_summary

    run = store.open(name)
    m = run.manifest
    rows, model = m.get("rows", {}), m["model"]
    _out(f"run       {run.name}  ({m['status']}, schema v{m['schema_version']}, created {m['created']})")
    _out(
        f"model     {model.get('spec') or '-'}  [{model.get('class')}, family {model.get('family')}]"
    )
    _out(
        f"samples   {rows.get('samples', 0)}   tokens {rows.get('tokens', 0)}   "
        f"assignments {rows.get('assignments', 0)}   decisions {rows.get('decisions', 0)}"
    )
    if run.label_columns:
        _out(f"labels    {', '.join(run.label_columns)}")
    table = router_summary(run)
    table["mean_entropy"] = table["mean_entropy"].round(3)
    table["mean_margin"] = table["mean_margin"].round(3)
    table["dropped_share"] = table["dropped_share"].round(3)
    _out(table.to_string(index=False))


def cmd_show(args: argparse.Namespace) -> int:
    show_run(Store(args.store), args.run)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .hooks import record
    from .loading import load_model

    model = load_model("bundled:tiny-mixtral")
    run = record(
        model,
        list(DEMO_TEXTS),
        store=args.store,
        name="demo",
        labels={"domain": list(DEMO_LABELS)},
        max_new_tokens=8,
        overwrite=True,
    )
    _out(f"recorded run 'demo' in {args.store} (bundled:tiny-mixtral, untrained; see README for real models)")
    show_run(Store(args.store), run.name)
    return 0


COMMANDS = {"record": cmd_record, "runs": cmd_runs, "show": cmd_show, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except RouteScopeError as exc:
        sys.stderr.write(f"routescope: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            "routescope: interrupted; any partial run is kept as incomplete (see `routescope runs`)\n"
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
