"""`routescope import KIND FILE...`: an engine's routing trace (vLLM, SGLang, Megatron, OLMoE,
llama.cpp) as a run of the store; the arguments become an `ImportRequest` (docs/import.md)."""

from __future__ import annotations

import argparse

from routescope.store import Store

from .cli_runs import show_run
from .console import out
from .importers import KINDS
from .requests import ImportRequest


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="the engine whose trace the files are")
    parser.add_argument("files", nargs="+", metavar="FILE", help="trace files, in order")
    parser.add_argument("--store", required=True)
    parser.add_argument("--name", required=True, help="the new run's name")
    parser.add_argument("--tokenizer", help="a local tokenizer folder or bundled:NAME (token texts)")
    parser.add_argument("--labels", help="a .jsonl file: one object of labels per request, in order")
    parser.add_argument("--label-column", action="append", default=[], help="label to keep (default all)")
    parser.add_argument("--experts", type=int, help="experts per layer, to check ids against")
    parser.add_argument("--layers", type=int, help="sglang JSONL: MoE layers of the model")
    parser.add_argument("--top-k", type=int, help="sglang JSONL: experts per token")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")


def cmd_import(args: argparse.Namespace) -> int:
    request = ImportRequest(
        kind=args.kind,
        files=tuple(args.files),
        name=args.name,
        tokenizer=args.tokenizer,
        labels=args.labels,
        label_columns=tuple(args.label_column),
        n_experts=args.experts,
        layers=args.layers,
        top_k=args.top_k,
        overwrite=args.overwrite,
    )
    store = Store(args.store)
    run = request.execute(store=store)
    out(f"imported {len(args.files)} {args.kind} file(s) into run {run.name!r} in {store.path}")
    show_run(store, run.name)
    return 0
