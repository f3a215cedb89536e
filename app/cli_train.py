"""`routescope train moe-lm|dit-digits|switch-dit-digits [--out DIR] [options]`: retrain a bundled model
on this machine.

The training code lives beside each model in `routescope.models`; this command only dispatches to it and
passes every further option through (`routescope train moe-lm --help` lists them).
"""

from __future__ import annotations

import argparse
import importlib

TRAINERS = {
    "moe-lm": "routescope.models.moe_lm.train",
    "dit-digits": "routescope.models.dit_digits.train",
    "switch-dit-digits": "routescope.models.switch_dit.train",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", choices=sorted(TRAINERS), help="which bundled model to train")
    parser.add_argument("--out", default=None, help="output folder (default: trained/MODEL)")


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    trainer = importlib.import_module(TRAINERS[args.model])
    out = args.out or f"trained/{args.model}"
    return int(trainer.main(["--out", out, *extra]) or 0)
