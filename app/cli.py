"""The `routescope` command line: record runs, list them, summarise one, and a one-command demo.

Every user mistake ends in one line on stderr (`routescope: error: ...`) and exit status 2; an
interrupted recording exits 130 and leaves its partial run marked incomplete. Each command lives in a
`cli_*` module; this one only parses and dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import duckdb

from routescope.store import RouteScopeError

from . import __version__
from .cli_app import add_app_arguments, cmd_app
from .cli_claims import add_claims_arguments, cmd_claims
from .cli_export import add_export_arguments, cmd_export
from .cli_figure import add_figure_arguments, cmd_figure
from .cli_import import add_import_arguments, cmd_import
from .cli_merge import add_merge_arguments, cmd_merge
from .cli_pipeline import add_pipeline_arguments, cmd_record_pipeline
from .cli_probe import add_probe_arguments, cmd_probe
from .cli_record import add_record_arguments, cmd_demo, cmd_record
from .cli_report import add_report_arguments, cmd_report
from .cli_runs import cmd_runs, cmd_show, damaged_run_message
from .cli_train import add_train_arguments, cmd_train


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routescope", description="Record and analyse MoE routing.")
    parser.add_argument("--version", action="version", version=f"routescope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_record_arguments(sub.add_parser("record", help="record a model's routing into a new run"))
    add_pipeline_arguments(sub.add_parser("record-pipeline", help="record a local diffusers MoE pipeline"))

    runs = sub.add_parser("runs", help="list the runs in a store")
    runs.add_argument("--store", required=True)
    runs.add_argument("--clean", action="store_true", help="delete interrupted recordings")
    runs.add_argument("--verify", action="store_true", help="read every page of every run (checksums)")

    show = sub.add_parser("show", help="summarise one run")
    show.add_argument("--store", required=True)
    show.add_argument("--run", required=True)

    add_merge_arguments(
        sub.add_parser("merge", help="publish one run from its recorded shards (--shard I/N)")
    )
    add_report_arguments(sub.add_parser("report", help="one analysis of a run as a table, CSV, JSON, ..."))
    add_figure_arguments(sub.add_parser("figure", help="paper figures of a run: SVG, PDF or PNG"))
    add_claims_arguments(sub.add_parser("claims", help="check the published claims that apply to a run"))
    add_export_arguments(
        sub.add_parser("export", help="write a run for SGLang EPLB, OLMoE or Megatron tools")
    )

    demo = sub.add_parser("demo", help="record the bundled models on their bundled inputs and summarise")
    demo.add_argument("--store", default="runs")

    add_train_arguments(sub.add_parser("train", help="retrain a bundled model (options pass through)"))
    add_app_arguments(sub.add_parser("app", help="start the dashboard (Streamlit, 127.0.0.1 by default)"))
    add_probe_arguments(sub.add_parser("probe", help="causal probes: ablate, force, noise, batch"))
    add_import_arguments(
        sub.add_parser("import", help="an engine's routing trace (vLLM, SGLang, ...) as a run")
    )
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "record": cmd_record,
    "record-pipeline": cmd_record_pipeline,
    "runs": cmd_runs,
    "show": cmd_show,
    "report": cmd_report,
    "merge": cmd_merge,
    "figure": cmd_figure,
    "claims": cmd_claims,
    "export": cmd_export,
    "demo": cmd_demo,
    "app": cmd_app,
    "probe": cmd_probe,
    "import": cmd_import,
}


FLAGS: dict[str, str] = {
    "overwrite": "--overwrite",
    "layer": "--layer",
    "by": "--by",
    "compare": "--compare",
    "name": "--name",
    "weights": "--weights",
    "expert": "--expert",
    "param": "--param NAME=VALUE",
    "probs": "--probs",
    "labels": "--labels",
    "tokenizer": "--tokenizer",
    "token_loss": "--token-loss",
    "output_logprobs": "--output-logprobs",
    "expert_stats": "--expert-stats",
    "images": "--image",
    "expert_means": "--expert-means",
    "ratio": "--ratio",
    "criterion": "--criterion",
}
"""How the CLI names the option an error concerns (`RouteScopeError.field`): its flag."""


def render_error(exc: RouteScopeError) -> str:
    """An error's one line as the CLI prints it: the library's message, and the flag of the option it
    concerns (`RunExistsError` → "...; choose another name or overwrite it (pass --overwrite)")."""
    flag = FLAGS.get(exc.field or "")
    return f"{exc} (pass {flag})" if flag else str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "train":
            return cmd_train(args, extra)
        return COMMANDS[args.command](args)
    except RouteScopeError as exc:
        sys.stderr.write(f"routescope: error: {render_error(exc)}\n")
        return 2
    except duckdb.Error:  # a data page DuckDB could not decode: name the damaged file, else it is a bug
        damage = damaged_run_message(args)
        if damage is None:
            raise
        sys.stderr.write(f"routescope: error: {damage}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            "routescope: interrupted; any partial run is kept as incomplete (see `routescope runs`)\n"
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
