"""What every probe shares: its inputs, the routers it may edit, and recording a run under an edit.

A probe's run is an ordinary run, written by `record()` or `record_diffusion()` while the intervention's
hooks are in place, so every analysis and the Compare page read it unchanged. What makes it a probe run
is one manifest entry, `manifest["model"]["probe"]`: the probe's name, its parameters, the edit as
applied per router, the base run it compares with, and any quality metrics measured under the same edit
(the entry sits under `model` because the edited model *is* the model that ran; `probe_of(run)` reads it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from routescope.hooks.capture import Engine
from routescope.hooks.diffusion import record_diffusion
from routescope.hooks.interventions import Intervention, RowSelector, intervene
from routescope.hooks.loaded import LoadedModel
from routescope.hooks.recorder import ModelCall, context_length, record, tokenise
from routescope.hooks.routers import describe_routers
from routescope.store.errors import InputError
from routescope.store.reader import Run, Store


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """The inputs of a diffusion probe: what `record_diffusion` samples."""

    classes: tuple[int, ...]
    samples_per_class: int = 1
    steps: int = 25
    cfg_scale: float = 4.0
    seed: int = 0
    batch_size: int = 64
    save_x0: bool = False
    """Keep the predicted clean image of every step (the denoising trajectory)."""

    def record_kwargs(self) -> dict[str, Any]:
        """These settings as `record_diffusion`'s keyword arguments."""
        return {
            "classes": list(self.classes),
            "samples_per_class": self.samples_per_class,
            "steps": self.steps,
            "cfg_scale": self.cfg_scale,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "save_x0": self.save_x0,
        }


Inputs = Sequence[str] | Sequence[Sequence[int]] | Sampling
"""Text inputs (strings or token-id lists) for language models, a `Sampling` for diffusion models."""


@dataclass(frozen=True, kw_only=True)
class RecordOptions:
    """How a probe records its runs: what `record()` / `record_diffusion()` are given besides inputs."""

    labels: Mapping[str, Sequence[Any]] | None = None
    """Text inputs: label columns (e.g. `{"domain": [...]}`), one value per input."""
    probs: bool = False
    """Also store each decision's full probability vector."""
    batch_size: int = 8
    """Text inputs per batch (diffusion: `Sampling.batch_size`)."""
    chunk_size: int | None = None
    """Text inputs: split longer inputs (default: the model's context)."""
    engine: Engine = "nnsight"
    overwrite: bool = False
    progress: bool = False

    def for_inputs(self, inputs: Inputs) -> dict[str, Any]:
        """Keyword arguments for `record()` (text) or `record_diffusion()` (a `Sampling`)."""
        common = {"probs": self.probs, "engine": self.engine, "overwrite": self.overwrite}
        if isinstance(inputs, Sampling):
            return {**common, "progress": self.progress}
        return {
            **common,
            "progress": self.progress,
            "labels": self.labels,
            "batch_size": self.batch_size,
            "chunk_size": self.chunk_size,
        }


def probe_of(run: Run) -> dict[str, Any] | None:
    """The probe entry of a run's manifest (None for a run no probe wrote)."""
    return run.probe


def check_inputs(model: LoadedModel, inputs: Inputs) -> None:
    """Text for language models, `Sampling` for diffusion models."""
    if model.sampler is not None and not isinstance(inputs, Sampling):
        raise InputError(f"{model.spec or 'this model'} is a diffusion model: give a Sampling (classes)")
    if model.sampler is None and isinstance(inputs, Sampling):
        raise InputError(f"{model.spec or 'this model'} is not a diffusion model: give texts")


def text_token_ids(model: LoadedModel, inputs: Sequence[str | Sequence[int]]) -> list[list[int]]:
    """The token ids `record()` will record for text inputs (same tokenisation)."""
    ids, _texts = tokenise(inputs, model.tokenizer)
    return ids


def chunk_size(model: LoadedModel, chunk: int | None) -> int:
    """The chunk length `record()` uses."""
    return chunk or context_length(model.model)


def describe(model: LoadedModel, inputs: Inputs) -> list[dict[str, Any]]:
    """The model's routers as manifest entries, found with a dry forward pass (as `record()` does)."""
    torch_model = model.model.eval()
    if isinstance(inputs, Sampling):
        sampler = model.sampler
        assert sampler is not None

        def run_forward() -> Any:
            first = torch.tensor(inputs.classes[:1])
            return sampler(torch_model, first, steps=1, cfg_scale=inputs.cfg_scale, seed=inputs.seed)

    else:
        ids = torch.tensor([text_token_ids(model, [inputs[0]])[0][:2]], dtype=torch.long)
        args, kwargs = ModelCall(torch_model)(ids, torch.ones_like(ids))
        config = getattr(torch_model, "config", None)
        if getattr(config, "is_encoder_decoder", False):
            start = int(getattr(config, "decoder_start_token_id", None) or 0)
            kwargs["decoder_input_ids"] = torch.tensor([[start]], dtype=torch.long)

        def run_forward() -> Any:
            with torch.no_grad():
                return torch_model(*args, **kwargs)

    return [spec.to_manifest() for spec in describe_routers(torch_model, run_forward, model.routers)]


def choose_routers(
    routers: Sequence[Mapping[str, Any]], layers: Sequence[int] | None, stack: str | None = None
) -> list[dict[str, Any]]:
    """The routers at `layers` (None: all), optionally of one stack (`encoder` / `decoder`)."""
    chosen = [dict(r) for r in routers if stack is None or r.get("stack") == stack]
    if layers is not None:
        known = sorted({int(r["layer"]) for r in chosen})
        missing = sorted(set(layers) - set(known))
        if missing:
            raise InputError(f"no router at layer(s) {missing}; MoE layers: {known}")
        chosen = [r for r in chosen if int(r["layer"]) in set(layers)]
    if not chosen:
        raise InputError("no router to edit; check the layers and stack asked for")
    return chosen


def record_probe(
    model: LoadedModel,
    inputs: Inputs,
    *,
    store: Store | str,
    name: str,
    entry: Mapping[str, Any],
    intervention: Intervention | None = None,
    routers: Sequence[Mapping[str, Any]] = (),
    selector: RowSelector | None = None,
    metrics: Callable[[], Mapping[str, Any] | None] | None = None,
    record_options: Mapping[str, Any] | None = None,
) -> Run:
    """Record `inputs` with `intervention` applied and `entry` (plus metrics) in the manifest.

    `metrics()` runs first, under the same intervention (a model-quality measurement: loss, accuracy); its
    result goes into the entry as `metrics`. `record_options` pass through to `record()` /
    `record_diffusion()` (labels, probs, batch_size, engine, overwrite, progress, ...).
    """
    options = dict(record_options or {})
    full = dict(entry)
    if intervention is not None:
        full["intervention"] = intervention.to_manifest()
    context = (
        intervene(model.model, intervention, routers, selector) if intervention is not None else nullcontext()
    )
    with context:
        if metrics is not None:
            measured = metrics()
            if measured is not None:
                full["metrics"] = dict(measured)
        tagged = dataclasses.replace(model, info={**model.info, "probe": full})
        if isinstance(inputs, Sampling):
            return record_diffusion(tagged, **inputs.record_kwargs(), store=store, name=name, **options)
        return record(tagged, list(inputs), store=store, name=name, **options)


def record_base(
    model: LoadedModel,
    inputs: Inputs,
    *,
    store: Store | str,
    name: str,
    options: RecordOptions | None = None,
    metrics: Callable[[], Mapping[str, Any] | None] | None = None,
) -> Run:
    """Record the unedited model on `inputs` (probe entry `base`), the run a probe compares with."""
    check_inputs(model, inputs)
    options = options or RecordOptions()
    return record_probe(
        model,
        inputs,
        store=store,
        name=name,
        entry={"probe": "base", "params": {}, "base": None},
        metrics=metrics,
        record_options=options.for_inputs(inputs),
    )
