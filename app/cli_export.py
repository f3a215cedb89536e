"""`routescope export`: write a run in a format another engine reads (SGLang EPLB, OLMoE, Megatron)."""

from __future__ import annotations

import argparse

from routescope.store import Store

from .console import out


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    from .exporters import EXPORT_KINDS

    parser.add_argument("--kind", required=True, choices=EXPORT_KINDS, help="the format to write")
    parser.add_argument("--store", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", required=True, help="the file to write (.json for sglang-eplb, else .jsonl)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument(
        "--num-layers",
        type=int,
        help="sglang-eplb: the model's layers, dense ones included (default: the deepest MoE layer + 1)",
    )


def cmd_export(args: argparse.Namespace) -> int:
    from .exporters import export_run

    run = Store(args.store).open(args.run)
    path = export_run(args.kind, run, args.out, overwrite=args.overwrite, num_layers=args.num_layers)
    out(f"wrote {args.kind} of run {run.name!r} to {path}")
    return 0
