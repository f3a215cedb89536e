"""`routescope merge`: publish one run from the shards that `routescope record --shard I/N` recorded."""

from __future__ import annotations

import argparse

from routescope.store import Store

from .cli_runs import show_run
from .console import out


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="the store the shards were recorded into")
    parser.add_argument("--name", required=True, help="the run name the shards were recorded under")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")


def cmd_merge(args: argparse.Namespace) -> int:
    from routescope.store.shards import merge

    store = Store(args.store)
    run = merge(store, args.name, overwrite=args.overwrite)
    out(f"merged {run.manifest['shards']} shards into run {run.name!r} in {store.path}")
    show_run(store, run.name)
    return 0
