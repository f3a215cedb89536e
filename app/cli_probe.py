"""`routescope probe ablate|force|noise|batch|prune`: causal probes from the command line.

Each probe records ordinary runs (the edited model, and the unedited base it compares with) and prints
its table: the loss (or the DiT's denoising loss and class accuracy) with experts disabled against
random ablations; the forced run's summary; the top-1 flip rate under noise by the base run's margin;
the share of decisions that change when inputs share a batch; the loss as each layer's lowest-scoring
experts are pruned, per criterion and ratio. The runs stay in the store for every
other view (`routescope report`, the dashboard's Compare page).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from routescope.hooks import LoadedModel
from routescope.store import InputError, Run, RunExistsError, Store

from .cli_options import add_shared_arguments, diffusion_request, load_from_args, request_fields
from .console import out
from .inputs import Inputs
from .requests import (
    Ablate,
    Batch,
    DiffusionRequest,
    Force,
    Noise,
    ProbeRequest,
    ProbeSettings,
    Prune,
    companion_names,
)
from .tables import FORMATS, render

KINDS = ("ablate", "force", "noise", "batch", "prune")


def _common(parser: argparse.ArgumentParser) -> None:
    add_shared_arguments(
        parser,
        model_help="bundled:NAME, a local checkpoint folder, or a hub id",
        name_help="name of the probe's run (others get suffixes)",
    )
    parser.add_argument("--layer", type=int, action="append", help="edit this MoE layer (repeatable; all)")
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

    prune = kinds.add_parser("prune", help="disable each layer's lowest-scoring experts; loss per criterion")
    _common(prune)
    prune.add_argument(
        "--criterion",
        action="append",
        metavar="reap|ean|frequency|random",
        help="score experts by this criterion (repeatable; default: reap and frequency)",
    )
    prune.add_argument(
        "--ratio", type=float, action="append", metavar="R", help="disable this share, 0 < R < 1 (repeatable)"
    )
    prune.add_argument("--prune-seed", type=int, default=0, help="seed of the random criterion (0)")
    prune.add_argument(
        "--calibration", metavar="RUN", help="score experts in this run (recorded with expert stats)"
    )


def _inputs(args: argparse.Namespace, model: LoadedModel) -> Inputs | DiffusionRequest:
    if model.sampler is not None:
        if args.text or args.file or args.dataset:
            raise InputError(f"{args.model} is a diffusion model: give --classes, not text")
        return diffusion_request(args)
    if args.classes:
        raise InputError("--classes is for diffusion models; give text")
    if args.dataset:
        if args.text or args.file:
            raise InputError("give one of --text, --file and --dataset")
        from .datasets import load_dataset

        texts, labels = load_dataset(args.dataset)
        return Inputs(texts=texts, labels={column: list(values) for column, values in labels.items()})
    from .inputs import read_inputs

    return read_inputs(args.text, args.file, args.label_column, args.text_column)


def probe_settings(args: argparse.Namespace) -> ProbeSettings:
    """The probe's own options as the settings the dashboard's page builds too."""
    layers = None if args.layer is None else tuple(args.layer)
    if args.probe == "ablate":
        return Ablate(
            experts=tuple(args.expert or ()),
            top=args.top,
            shared=args.shared,
            seeds=args.random_seeds,
            layers=layers,
        )
    if args.probe == "force":
        return Force(
            experts=tuple(args.expert),
            where=dict(_pair(text) for text in args.where),
            positions=None if args.position is None else frozenset(args.position),
            stack=args.stack,
            layers=layers,
        )
    if args.probe == "noise":
        return Noise(sigma=args.sigma, on=args.on, seed=args.noise_seed, layers=layers, base=args.base)
    if args.probe == "prune":
        defaults = Prune()
        return Prune(
            criteria=tuple(args.criterion or defaults.criteria),
            ratios=tuple(args.ratio or defaults.ratios),
            seed=args.prune_seed,
            calibration=args.calibration,
            layers=layers,
        )
    return Batch(batch_size=args.batch_size)


def probe_request(args: argparse.Namespace, inputs: Inputs | DiffusionRequest) -> ProbeRequest:
    """`routescope probe KIND`'s arguments as a request."""
    return ProbeRequest(**request_fields(args), settings=probe_settings(args), inputs=inputs)


def _print(title: str, table: pd.DataFrame, fmt: str) -> None:
    if fmt == "table":
        out(title)
    out(render(table.reset_index(drop=True), fmt))
    if fmt == "table":
        out("")


@dataclass(frozen=True)
class _Probe:
    """What every probe command works with once the runs are recorded."""

    args: argparse.Namespace
    store: Store
    request: ProbeRequest
    runs: list[Run]


def cmd_probe(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    store = Store(args.store)
    if args.probe == "ablate" and not (args.expert or args.top or args.shared):
        raise InputError("give --expert E (repeatable), --top R, and/or --shared")
    names = companion_names(args.name, probe_settings(args))
    taken = [name for name in names if store.exists(name)]
    if taken and not args.overwrite:  # fail before loading a model
        raise RunExistsError(f"run {taken[0]!r} already exists in {store.path}; pass --overwrite")
    for given in (getattr(args, "base", None), getattr(args, "calibration", None)):
        if given:
            store.open(given)
    transformers_logging.disable_progress_bar()  # one line per result, no per-file weight-loading bars
    model = load_from_args(args)
    request = probe_request(args, _inputs(args, model))
    runs = request.execute(model, store=store)
    PROBES[args.probe](_Probe(args, store, request, runs))
    return 0


def _force(p: _Probe) -> None:
    from routescope.analysis.forcing import set_share

    base, run = p.runs
    experts = sorted(p.args.expert)
    out(f"recorded runs {base.name!r} (base) and {run.name!r} in {p.store.path} (forced experts {experts})")
    where = dict(_pair(text) for text in p.args.where)
    label = next(iter(where), None) or next(iter(p.request.labels), None)  # the label it forced by
    share = set_share(run, p.args.expert, label)
    _print("share of decisions dispatched inside the forced set", share, p.args.format)


def _noise(p: _Probe) -> None:
    from routescope.analysis.stability import flip_correlation, flip_rate

    base, noisy = p.runs
    out(f"recorded runs {base.name!r} (base) and {noisy.name!r} (σ = {p.args.sigma} on router {p.args.on})")
    _print("top-1 flip rate by the base run's margin", flip_rate(base, noisy), p.args.format)
    correlation = flip_correlation(base, noisy)
    _print("flips against margin and entropy, per layer (-1: all)", correlation, p.args.format)


def _batch(p: _Probe) -> None:
    from routescope.analysis.batching import batch_dependence

    alone, batched = p.runs
    out(f"recorded runs {alone.name!r} (batch size 1) and {batched.name!r}")
    _print("decisions that change in a batch, per router", batch_dependence(alone, batched), p.args.format)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--where {text!r} must look like LABEL=VALUE")
    return key.strip(), value.strip()


def _ablate(p: _Probe) -> None:
    from routescope.analysis.ablation import ablation_accuracy, ablation_denoising, ablation_loss
    from routescope.probes import probe_of

    args = p.args
    base, ablated, *random = p.runs
    names = ", ".join(repr(r.name) for r in p.runs)
    out(f"recorded runs {names} in {args.store}")
    entry = probe_of(ablated) or {}
    disabled = entry["intervention"]["routers"]
    for path, edit in disabled.items():
        shared = " + shared expert" if edit["drop_shared"] else ""
        out(f"  {path}: disabled {edit['disable']}{shared}")
    if "metrics" not in (probe_of(base) or {}):
        out("(this model has no quality measure here; compare the runs with routescope report)")
        return
    if isinstance(p.request.inputs, DiffusionRequest):
        _print(
            "denoising loss (ε-MSE) per timestep bucket",
            ablation_denoising(base, ablated, random),
            args.format,
        )
        _print("class accuracy of the samples", ablation_accuracy(base, ablated, random), args.format)
        return
    by = args.by or next(iter(p.request.labels), None)
    _print("next-token loss (nats per token)", ablation_loss(base, ablated, random, by=by), args.format)


def _prune(p: _Probe) -> None:
    from routescope.analysis.pruning import prune_curve
    from routescope.probes import probe_of

    base, *pruned = p.runs
    out(f"recorded runs {', '.join(repr(r.name) for r in p.runs)} in {p.args.store}")
    for run in pruned:
        edits = (probe_of(run) or {})["intervention"]["routers"]
        off = "; ".join(f"{path}: {edit['disable']}" for path, edit in edits.items())
        out(f"  {run.name}: disabled {off}")
    _print(
        "next-token loss (nats per token) by criterion and pruned share",
        prune_curve(base, pruned),
        p.args.format,
    )


PROBES: dict[str, Callable[[_Probe], None]] = {
    "ablate": _ablate,
    "force": _force,
    "noise": _noise,
    "batch": _batch,
    "prune": _prune,
}
