"""`routescope record` and `routescope demo`: text, datasets and diffusion sampling into a new run."""

from __future__ import annotations

import argparse

from routescope.store import InputError, RunExistsError, Store

from .cli_runs import show_run
from .console import out
from .inputs import Inputs, read_inputs
from .requests import DiffusionRequest, RecordRequest

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


def add_record_arguments(rec: argparse.ArgumentParser) -> None:
    text, diffusion = add_shared_arguments(
        rec,
        model_help="bundled:NAME, FAMILY:CONFIG (e.g. dit-moe:S-8E2A), a checkpoint folder, or a hub id",
        name_help="run name (letters, digits, . _ -)",
    )
    text.add_argument("--target-column", help="decoder target column of a .jsonl file (encoder–decoder)")
    text.add_argument("--max-new-tokens", type=int, default=0, help="generate N tokens and record them too")
    diffusion.add_argument("--save-x0", action="store_true", help="also keep each step's predicted image")
    diffusion.add_argument("--weights", help="FAMILY:CONFIG models: the weights (.pt or .safetensors)")
    diffusion.add_argument("--vae", help="dit-moe: a local diffusers VAE folder to decode latents")
    diffusion.add_argument(
        "--sampler", choices=("ddpm", "ddim", "rf"), help="dit-moe: override the trained-for sampler"
    )
    rec.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")
    scale = rec.add_argument_group("past one machine (docs/scale.md)")
    scale.add_argument(
        "--remote",
        nargs="?",
        const="ndif",
        metavar="HOST",
        help="run the trace on NDIF (a hub id it hosts; key from NDIF_API_KEY), on HOST, or 'local' to "
        "simulate the remote path here",
    )
    scale.add_argument(
        "--device-map",
        help="spread the model over this machine's GPUs/CPU with accelerate: auto, cpu, cuda:0",
    )
    scale.add_argument("--shard", metavar="I/N", help="record inputs I, I+N, ... as part I of N; then merge")


def _text_inputs(args: argparse.Namespace) -> Inputs:
    if args.dataset:
        if args.text or args.file:
            raise InputError("give one of --text, --file and --dataset")
        from .datasets import load_dataset

        texts, labels = load_dataset(args.dataset)
        return Inputs(texts=texts, labels={column: list(values) for column, values in labels.items()})
    return read_inputs(args.text, args.file, args.label_column, args.text_column, args.target_column)


def cmd_record(args: argparse.Namespace) -> int:
    from .loading import load_model

    store = Store(args.store)
    if store.exists(args.name) and not args.overwrite:  # fail before loading a large model
        raise RunExistsError(
            f"run {args.name!r} already exists in {store.path}; pick another name or pass --overwrite"
        )
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one progress bar (ours) per command, not one per file
    diffusion_options = [o for o in DIFFUSION_ONLY if getattr(args, o) is not None]
    inputs = _text_inputs(args) if not diffusion_options else None
    remote = _remote(args.remote)
    if remote is not False:
        if diffusion_options:
            raise InputError("--remote records text models; diffusion sampling runs here")
        from routescope.hooks.remote import check_remote

        check_remote(remote, args.model)  # key, service and hosting, before anything is loaded
    shard = None
    if args.shard is not None:
        from routescope.store.shards import parse_shard

        shard = parse_shard(args.shard)
        if diffusion_options:
            raise InputError("--shard splits text inputs; record diffusion classes in separate runs")
    model = load_model(
        args.model,
        trust_remote_code=args.trust_remote_code,
        dtype=args.dtype,
        device=args.device,
        weights=args.weights,
        vae=args.vae,
        sampler=args.sampler,
        device_map=args.device_map,
        remote=remote is not False and remote != "local",
    )
    if model.info.get("vae", "") is None:
        out("note: no --vae given: images are latent previews; the routing record is complete")
    if model.sampler is not None and (args.text or args.file or args.dataset):
        raise InputError(f"{args.model} is a diffusion model: give --classes, not text")
    if model.sampler is None and inputs is None:
        raise InputError(f"--{diffusion_options[0].replace('_', '-')} is for diffusion models; give text")
    request = record_request(args, inputs if model.sampler is None else None)
    extra = {} if model.sampler is not None else {"shard": shard, "remote": remote}
    run = request.execute(model, store=store, terminal=True, **extra)
    if shard is not None:
        out(f"recorded shard {shard} of run {args.name!r} ({run.info.rows['samples']} inputs)")
        out(f"after all {shard.count} shards: routescope merge --store {store.path} --name {args.name}")
        return 0
    out(f"recorded run {run.name!r} in {store.path}")
    show_run(store, run.name)
    return 0


def record_request(args: argparse.Namespace, inputs: Inputs | None) -> RecordRequest:
    """`routescope record`'s arguments as a request: text `inputs`, or (None) the diffusion options."""
    return RecordRequest(
        name=args.name,
        inputs=inputs,
        diffusion=None if inputs is not None else diffusion_request(args, save_x0=args.save_x0),
        probs=args.probs,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        engine=args.engine,
        seed=args.seed,
        overwrite=args.overwrite,
    )


def _remote(value: str | None) -> bool | str:
    """`--remote` → record()'s `remote`: absent → False, bare → True (NDIF), `local`, or a host URL."""
    if value is None:
        return False
    if value == "ndif":
        return True
    if value != "local" and not value.startswith(("http://", "https://")):
        raise InputError(f"--remote {value!r}: give no value (NDIF), 'local', or a host URL (https://...)")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    """Record the default runs (`default_runs.DEFAULT_RUNS`, the dashboard's first start records the same)
    on the bundled models, overwriting earlier demo runs, and summarise each."""
    from .default_runs import DEFAULT_RUNS, record_default
    from .loading import load_model

    store = Store(args.store)
    for i, default in enumerate(DEFAULT_RUNS):
        run = record_default(default, store, load_model, terminal=True)
        if i:
            out("")
        out(f"recorded run {run.name!r} in {args.store}: {default.description}")
        show_run(store, run.name)
    return 0
