"""`routescope record` and `routescope demo`: text, datasets and diffusion sampling into a new run."""

from __future__ import annotations

import argparse
from pathlib import Path

from routescope.store import InputError, RunExistsError, Store

from .cli_options import (
    DIFFUSION_ONLY,
    add_shared_arguments,
    diffusion_request,
    load_from_args,
    request_fields,
)
from .cli_runs import show_run
from .console import out
from .inputs import Inputs, attach_images, read_inputs
from .requests import RecordRequest


def add_record_arguments(rec: argparse.ArgumentParser) -> None:
    text, diffusion = add_shared_arguments(
        rec,
        model_help="bundled:NAME, FAMILY:CONFIG (e.g. dit-moe:S-8E2A), a checkpoint folder, or a hub id",
        name_help="run name (letters, digits, . _ -)",
    )
    text.add_argument("--target-column", help="decoder target column of a .jsonl file (encoder–decoder)")
    text.add_argument("--max-new-tokens", type=int, default=0, help="generate N tokens and record them too")
    text.add_argument(
        "--token-loss", action="store_true", help="also store each token's next-token loss and prediction"
    )
    text.add_argument(
        "--output-logprobs",
        action="store_true",
        help="also store each token's next-token log-probabilities (float16; for output-kl)",
    )
    text.add_argument(
        "--expert-stats",
        action="store_true",
        help="also store each chosen expert's output norm (text and diffusion models)",
    )
    text.add_argument(
        "--image",
        action="append",
        metavar="PATH",
        help="an image for a vision-language model: one per --text, or several for one --text",
    )
    text.add_argument(
        "--expert-means",
        action="store_true",
        help="also store every expert's mean output over all tokens (output-based similarity)",
    )
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

        if args.image:
            raise InputError("--image goes with --text; a dataset has no images", field="images")
        texts, labels = load_dataset(args.dataset)
        return Inputs(texts=texts, labels={column: list(values) for column, values in labels.items()})
    inputs = read_inputs(args.text, args.file, args.label_column, args.text_column, args.target_column)
    return attach_images(inputs, args.image)


def cmd_record(args: argparse.Namespace) -> int:

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
    if inputs is not None and inputs.images is not None:  # a missing image fails before the model loads
        for paths in inputs.images:
            for image in paths:
                if not Path(image).is_file():
                    raise InputError(f"image file {image} does not exist", field="images")
    shard = None
    if args.shard is not None:
        from routescope.store.shards import parse_shard

        shard = parse_shard(args.shard)
        if diffusion_options:
            raise InputError("--shard splits text inputs; record diffusion classes in separate runs")
    model = load_from_args(args, remote=remote is not False and remote != "local")
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
        **request_fields(args),
        inputs=inputs,
        diffusion=None if inputs is not None else diffusion_request(args, save_x0=args.save_x0),
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        token_loss=args.token_loss,
        output_logprobs=args.output_logprobs,
        expert_stats=args.expert_stats,
        expert_means=args.expert_means,
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
