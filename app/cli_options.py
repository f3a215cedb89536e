"""Command-line options that several commands share, defined once: the classes syntax, the model /
store / inputs / sampling / loading options of `record` and `probe`, and their translation into a
`DiffusionRequest`, the request fields every recording has and a loaded model. The defaults themselves
live in `requests`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from routescope.store import InputError

from .requests import DiffusionRequest

if TYPE_CHECKING:
    from routescope.hooks import LoadedModel

OPTIONAL_LOADING = ("weights", "vae", "sampler", "device_map")
"""Loading options only some commands define (`record`); a command without them keeps the defaults."""


DIFFUSION_ONLY = ("classes", "samples_per_class", "steps", "cfg_scale")
MAX_CLASSES = 100_000
"""More classes than any class-conditional model has: a typo such as 0-100000000 fails at once."""


def parse_classes(text: str) -> list[int]:
    """`0-9` → 0..9; `1,3,5-7` → 1, 3, 5, 6, 7."""
    classes: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            lo, hi = int(first), int(last) if last else int(first)
            if hi < lo or len(classes) + hi - lo >= MAX_CLASSES:
                raise ValueError
            classes.extend(range(lo, hi + 1))
    except ValueError:
        raise InputError(
            f"--classes {text!r}: use a list and ranges such as 0-9 or 1,3,5-7 "
            f"(at most {MAX_CLASSES} classes)"
        ) from None
    return classes


def add_shared_arguments(
    parser: argparse.ArgumentParser, *, model_help: str, name_help: str
) -> tuple[argparse._ArgumentGroup, argparse._ArgumentGroup]:
    """The options `record` and `probe` share (defined once; the defaults live in `requests`): the model,
    store and name, the text inputs, the diffusion sampling and how to load and record. Returns the text
    and diffusion groups for a command's own options."""
    parser.add_argument("model", help=model_help)
    parser.add_argument("--store", required=True, help="store folder (created if absent)")
    parser.add_argument("--name", required=True, help=name_help)
    text = parser.add_argument_group("text models")
    text.add_argument("--text", action="append", help="an input text (repeatable)")
    text.add_argument("--file", help="inputs: .txt (one per line) or .jsonl (see --text-column)")
    text.add_argument("--dataset", help="a bundled dataset, e.g. bundled:domains (labels come along)")
    text.add_argument("--text-column", default="text", help="text column of a .jsonl file (default: text)")
    text.add_argument("--label-column", action="append", default=[], help="label column of a .jsonl file")
    text.add_argument("--chunk-size", type=int, default=None, help="split longer inputs (default: context)")
    sampling = DiffusionRequest()
    diffusion = parser.add_argument_group("diffusion models")
    diffusion.add_argument("--classes", help="classes to sample, e.g. 0-9 or 1,3,5 (default 0-9)")
    diffusion.add_argument(
        "--samples-per-class", type=int, help=f"images per class (default {sampling.samples_per_class})"
    )
    diffusion.add_argument("--steps", type=int, help=f"sampling steps (default {sampling.steps})")
    diffusion.add_argument(
        "--cfg-scale", type=float, help=f"classifier-free guidance scale (default {sampling.cfg_scale})"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling / generation seed (0)")
    parser.add_argument("--probs", action="store_true", help="also store each decision's full probabilities")
    parser.add_argument("--batch-size", type=int, default=None, help="texts (8) or images (64) per batch")
    parser.add_argument("--engine", choices=("nnsight", "hooks"), default="nnsight")
    parser.add_argument("--dtype", default=None, help="load the model in this dtype (e.g. bfloat16)")
    parser.add_argument("--device", default=None, help="torch device (default: CPU)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow a checkpoint's own code to run"
    )
    return text, diffusion


def diffusion_request(args: argparse.Namespace, *, save_x0: bool = False) -> DiffusionRequest:
    """`--classes`, `--samples-per-class`, `--steps`, `--cfg-scale`, `--seed`, `--batch-size` → a request;
    an option not given keeps the request's default."""
    given = {
        "samples_per_class": args.samples_per_class,
        "steps": args.steps,
        "cfg_scale": args.cfg_scale,
        "batch_size": args.batch_size,
    }
    classes = {} if args.classes is None else {"classes": tuple(parse_classes(args.classes))}
    chosen = {key: value for key, value in given.items() if value is not None}
    return DiffusionRequest(**classes, **chosen, seed=args.seed, save_x0=save_x0)


def request_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The fields of every recording or probe request, from the shared options."""
    return {
        "name": args.name,
        "probs": args.probs,
        "batch_size": args.batch_size,
        "chunk_size": args.chunk_size,
        "engine": args.engine,
        "overwrite": args.overwrite,
    }


def load_from_args(args: argparse.Namespace, *, remote: bool = False) -> LoadedModel:
    """`load_model` with the loading options the command defines."""
    from .loading import load_model

    optional = {key: getattr(args, key) for key in OPTIONAL_LOADING if getattr(args, key, None) is not None}
    return load_model(
        args.model,
        trust_remote_code=args.trust_remote_code,
        dtype=args.dtype,
        device=args.device,
        remote=remote,
        **optional,
    )
