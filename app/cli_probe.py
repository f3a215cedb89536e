"""`routescope probe ablate|force|noise|batch`: causal probes from the command line.

Each probe records ordinary runs (the edited model, and the unedited base it compares with) and prints
its table: the loss (or the DiT's denoising loss and class accuracy) with experts disabled against
random ablations; the forced run's summary; the top-1 flip rate under noise by the base run's margin;
the share of decisions that change when inputs share a batch. The runs stay in the store for every
other view (`routescope report`, the dashboard's Compare page).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from routescope.hooks import LoadedModel
from routescope.store import InputError, RunExistsError, Store

from .cli_record import parse_classes
from .console import out
from .tables import FORMATS, render

KINDS = ("ablate", "force", "noise", "batch")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="bundled:NAME, a local checkpoint folder, or a hub id")
    parser.add_argument("--store", required=True, help="store folder (created if absent)")
    parser.add_argument("--name", required=True, help="name of the probe's run (others get suffixes)")
    text = parser.add_argument_group("text models")
    text.add_argument("--text", action="append", help="an input text (repeatable)")
    text.add_argument("--file", help="inputs: .txt (one per line) or .jsonl (see --text-column)")
    text.add_argument("--dataset", help="a bundled dataset, e.g. bundled:domains (labels come along)")
    text.add_argument("--text-column", default="text", help="text column of a .jsonl file")
    text.add_argument("--label-column", action="append", default=[], help="label column of a .jsonl file")
    text.add_argument("--chunk-size", type=int, default=None, help="split longer inputs (default: context)")
    diffusion = parser.add_argument_group("diffusion models")
    diffusion.add_argument("--classes", help="classes to sample, e.g. 0-9 or 1,3,5")
    diffusion.add_argument("--samples-per-class", type=int, default=2, help="images per class (2)")
    diffusion.add_argument("--steps", type=int, default=25, help="sampling steps (25)")
    diffusion.add_argument("--cfg-scale", type=float, default=4.0, help="guidance scale (4.0)")
    diffusion.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    parser.add_argument("--layer", type=int, action="append", help="edit this MoE layer (repeatable; all)")
    parser.add_argument("--batch-size", type=int, default=None, help="texts (8) or images (64) per batch")
    parser.add_argument("--probs", action="store_true", help="also store each decision's probabilities")
    parser.add_argument("--engine", choices=("nnsight", "hooks"), default="nnsight")
    parser.add_argument("--dtype", default=None, help="load the model in this dtype (e.g. bfloat16)")
    parser.add_argument("--device", default=None, help="torch device (default: CPU)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own code")
    parser.add_argument("--overwrite", action="store_true", help="replace runs of the same names")
    parser.add_argument("--format", choices=FORMATS, default="table", help="how to print the tables")


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="probe", required=True)
    ablate = kinds.add_parser("ablate", help="disable experts; loss against random ablations")
    _common(ablate)
    which = ablate.add_mutually_exclusive_group()
    which.add_argument("--expert", type=int, action="append", help="disable this expert (repeatable)")
    which.add_argument("--top", type=int, help="disable each router's R most-used experts")
    ablate.add_argument("--shared", action="store_true", help="also (or only) zero the shared expert")
    ablate.add_argument("--random-seeds", type=int, default=3, help="random ablations of the same size (3)")
    ablate.add_argument("--by", help="label to group the loss by (default: the first label column)")

    force = kinds.add_parser("force", help="route the chosen tokens to given experts")
    _common(force)
    force.add_argument("--expert", type=int, action="append", required=True, help="a forced expert")
    force.add_argument("--where", action="append", default=[], metavar="LABEL=VALUE", help="only these")
    force.add_argument("--position", type=int, action="append", help="only this position / patch")
    force.add_argument("--stack", choices=("encoder", "decoder"), help="routers of one stack only")

    noise = kinds.add_parser("noise", help="noise on the routers; flip rate by margin")
    _common(noise)
    noise.add_argument("--sigma", type=float, required=True, help="noise scale (input: relative to RMS)")
    noise.add_argument("--on", choices=("input", "logits"), default="input", help="where the noise goes")
    noise.add_argument("--noise-seed", type=int, default=0, help="seed of the noise (0)")
    noise.add_argument("--base", metavar="RUN", help="an unedited run of the same inputs (else recorded)")

    batch = kinds.add_parser("batch", help="the same inputs alone and in one batch; changed decisions")
    _common(batch)


def _inputs(args: argparse.Namespace, model: LoadedModel) -> tuple[Any, dict[str, list[Any]]]:
    from routescope.hooks.probes import Sampling

    if model.sampler is not None:
        if args.text or args.file or args.dataset:
            raise InputError(f"{args.model} is a diffusion model: give --classes, not text")
        sampling = Sampling(
            classes=tuple(parse_classes(args.classes or "0-9")),
            samples_per_class=args.samples_per_class,
            steps=args.steps,
            cfg_scale=args.cfg_scale,
            seed=args.seed,
            batch_size=args.batch_size or 64,
        )
        return sampling, {}
    if args.classes:
        raise InputError("--classes is for diffusion models; give text")
    if args.dataset:
        if args.text or args.file:
            raise InputError("give one of --text, --file and --dataset")
        from .datasets import load_dataset

        texts, labels = load_dataset(args.dataset)
        return texts, {column: list(values) for column, values in labels.items()}
    from .inputs import read_inputs

    inputs = read_inputs(args.text, args.file, args.label_column, args.text_column)
    return inputs.texts, dict(inputs.labels)


def _print(title: str, table: pd.DataFrame, fmt: str) -> None:
    if fmt == "table":
        out(title)
    out(render(table.reset_index(drop=True), fmt))
    if fmt == "table":
        out("")


def _names(args: argparse.Namespace) -> list[str]:
    """Every run name the probe will write, to refuse existing ones before loading a model."""
    if args.probe == "ablate":
        seeds = args.random_seeds if (args.expert or args.top) else 0
        return [args.name, f"{args.name}.base", *(f"{args.name}.random-{s}" for s in range(seeds))]
    if args.probe == "noise":
        return [args.name] if args.base else [args.name, f"{args.name}.base"]
    if args.probe == "batch":
        return [args.name, f"{args.name}.alone"]
    return [args.name]


@dataclass(frozen=True)
class _Probe:
    """What every probe command works with once the model is loaded."""

    args: argparse.Namespace
    store: Store
    model: LoadedModel
    inputs: Any
    labels: dict[str, list[Any]]
    options: Any


def cmd_probe(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from routescope.hooks.probes import RecordOptions

    from .loading import load_model

    store = Store(args.store)
    taken = [name for name in _names(args) if store.exists(name)]
    if taken and not args.overwrite:  # fail before loading a model
        raise RunExistsError(f"run {taken[0]!r} already exists in {store.path}; pass --overwrite")
    if getattr(args, "base", None):
        store.open(args.base)
    transformers_logging.disable_progress_bar()  # one line per result, no per-file weight-loading bars
    model = load_model(
        args.model, trust_remote_code=args.trust_remote_code, dtype=args.dtype, device=args.device
    )
    inputs, labels = _inputs(args, model)
    options = RecordOptions(
        labels=labels or None,
        probs=args.probs,
        batch_size=args.batch_size or 8,
        chunk_size=args.chunk_size,
        engine=args.engine,
        overwrite=args.overwrite,
        progress=False,
    )
    PROBES[args.probe](_Probe(args, store, model, inputs, labels, options))
    return 0


def _force(p: _Probe) -> None:
    from routescope.analysis.forcing import set_share
    from routescope.hooks.probes import TokenSelection, probe_force

    where = dict(_pair(text) for text in p.args.where)
    positions = None if p.args.position is None else frozenset(p.args.position)
    run = probe_force(
        p.model,
        p.inputs,
        store=p.store,
        name=p.args.name,
        experts=p.args.expert,
        layers=p.args.layer,
        tokens=TokenSelection(positions=positions),
        where=where or None,
        stack=p.args.stack,
        options=p.options,
    )
    out(f"recorded run {run.name!r} in {p.store.path} (forced experts {sorted(p.args.expert)})")
    label = next(iter(where), None) or next(iter(p.labels), None)  # the label it forced by, or the first
    share = set_share(run, p.args.expert, label)
    _print("share of decisions dispatched inside the forced set", share, p.args.format)


def _noise(p: _Probe) -> None:
    from routescope.analysis.stability import flip_correlation, flip_rate
    from routescope.hooks.probes import probe_noise, record_base
    from routescope.hooks.probes.noise import noise_intervention

    noise_intervention(  # a bad σ or layer fails here, before the base run is written
        p.model, p.inputs, sigma=p.args.sigma, on=p.args.on, layers=p.args.layer, seed=p.args.noise_seed
    )
    if p.args.base:
        base = p.store.open(p.args.base)
    else:
        base = record_base(p.model, p.inputs, store=p.store, name=f"{p.args.name}.base", options=p.options)
    noisy = probe_noise(
        p.model,
        p.inputs,
        store=p.store,
        name=p.args.name,
        sigma=p.args.sigma,
        on=p.args.on,
        layers=p.args.layer,
        seed=p.args.noise_seed,
        base=base,
        options=p.options,
    )
    out(f"recorded runs {base.name!r} (base) and {noisy.name!r} (σ = {p.args.sigma} on router {p.args.on})")
    _print("top-1 flip rate by the base run's margin", flip_rate(base, noisy), p.args.format)
    correlation = flip_correlation(base, noisy)
    _print("flips against margin and entropy, per layer (-1: all)", correlation, p.args.format)


def _batch(p: _Probe) -> None:
    from routescope.analysis.batching import batch_dependence
    from routescope.hooks.probes import probe_batch

    alone, batched = probe_batch(
        p.model, p.inputs, store=p.store, name=p.args.name, batch_size=p.args.batch_size, options=p.options
    )
    out(f"recorded runs {alone.name!r} (batch size 1) and {batched.name!r}")
    _print("decisions that change in a batch, per router", batch_dependence(alone, batched), p.args.format)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--where {text!r} must look like LABEL=VALUE")
    return key.strip(), value.strip()


def _ablate(p: _Probe) -> None:
    from routescope.analysis.ablation import ablation_accuracy, ablation_denoising, ablation_loss
    from routescope.hooks.probes import Sampling, ablation_study, probe_of

    args = p.args
    if not (args.expert or args.top or args.shared):
        raise InputError("give --expert E (repeatable), --top R, and/or --shared")
    study = ablation_study(
        p.model,
        p.inputs,
        store=p.store,
        name=args.name,
        experts=args.expert,
        top=args.top,
        layers=args.layer,
        shared=args.shared,
        seeds=args.random_seeds,
        options=p.options,
    )
    names = ", ".join(repr(r.name) for r in (study.base, study.ablated, *study.random))
    out(f"recorded runs {names} in {args.store}")
    entry = probe_of(study.ablated) or {}
    disabled = entry["intervention"]["routers"]
    for path, edit in disabled.items():
        shared = " + shared expert" if edit["drop_shared"] else ""
        out(f"  {path}: disabled {edit['disable']}{shared}")
    if "metrics" not in (probe_of(study.base) or {}):
        out("(this model has no quality measure here; compare the runs with routescope report)")
        return
    if isinstance(p.inputs, Sampling):
        _print(
            "denoising loss (ε-MSE) per timestep bucket",
            ablation_denoising(study.base, study.ablated, study.random),
            args.format,
        )
        _print(
            "class accuracy of the samples",
            ablation_accuracy(study.base, study.ablated, study.random),
            args.format,
        )
        return
    by = args.by or next(iter(p.labels), None)
    table = ablation_loss(study.base, study.ablated, study.random, by=by)
    _print("next-token loss (nats per token)", table, args.format)


PROBES: dict[str, Callable[[_Probe], None]] = {
    "ablate": _ablate,
    "force": _force,
    "noise": _noise,
    "batch": _batch,
}
