"""`routescope claims`: check the published claims that apply to a run and print their verdicts.

Each verdict comes from `routescope.claims` (criterion in the claim's docstring); the table and Markdown
forms list one claim per row, the JSON form is a list of objects with `claim`, `reproduces`, the statistic,
its null reference, the p-value with N and seed, the effect size with its interval and the sentence.
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from routescope.store import InputError, Store

from .console import out
from .tables import render

CLAIM_FORMATS = ("table", "json", "markdown")
SUMMARY_COLUMNS = [
    "claim",
    "reproduces",
    "value",
    "null_reference",
    "p_value",
    "effect_size",
    "effect_lo",
    "effect_hi",
    "unit",
    "n_permutations",
    "seed",
    "sentence",
]


def add_claims_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--claim", help="one claim (default: every claim that applies to the run)")
    parser.add_argument("--format", choices=CLAIM_FORMATS, default="table")
    parser.add_argument("--permutations", type=int, default=999, help="N of every permutation test")
    parser.add_argument("--seed", type=int, default=0, help="seed of permutations and bootstrap")


def cmd_claims(args: argparse.Namespace) -> int:
    from routescope.analysis.claims import CLAIMS, applicable, check_all

    run = Store(args.store).open(args.run)
    if args.claim is not None and args.claim not in CLAIMS:
        raise InputError(f"unknown claim {args.claim!r}; choose from {', '.join(CLAIMS)}")
    names = [args.claim] if args.claim else applicable(run)
    if not names:
        raise InputError(f"no registered claim applies to run {args.run!r}")
    verdicts = check_all(run, names, n_permutations=args.permutations, seed=args.seed)
    if args.format == "json":
        out(json.dumps([v.to_dict() for v in verdicts], indent=2, default=str))
        return 0
    table = pd.DataFrame([{k: v.to_dict()[k] for k in SUMMARY_COLUMNS} for v in verdicts])
    out(render(table, args.format))
    return 0
