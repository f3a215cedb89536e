"""Model quality under an edit: next-token loss for language models, denoising loss and class accuracy for
the bundled DiT.

A routing change matters when the model gets worse, so the ablation probe measures quality under the same
hooks it records with and stores the numbers in the probe entry; `routescope.analysis.ablation` turns
them into tables. Language models: the summed next-token negative log-likelihood (nats) and the number of
predicted tokens of every input, on exactly the tokens `record()` records (same tokenisation and
chunking; each chunk predicts its own tokens 1..n-1). Diffusion: only the bundled `dit-digits` has a
known data set and schedule, so its own pieces are reused — ε-prediction MSE (the training objective,
`routescope.models.dit_digits`) on real digits at timesteps drawn inside each bucket, with noise, digits
and timesteps fixed by a seed so that every variant sees the same draws, and the share of generated
digits that its quality classifier recognises as the requested class. Other diffusion models get no
metrics (their runs are recorded all the same).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..loaded import LoadedModel
from ..recorder import _ModelCall
from ..units import batches, make_units, pad
from .common import Inputs, RecordOptions, Sampling, chunk_size, text_token_ids

DEFAULT_BUCKETS = 5
"""Timestep buckets of the denoising loss (equal widths over 0..T-1)."""
DENOISE_IMAGES = 256
"""Real digits scored per bucket (the same digits, noise and timesteps for every variant)."""


def _pad_id(model: LoadedModel) -> int:
    config = getattr(model.model, "config", None)
    return int(getattr(model.tokenizer, "pad_token_id", None) or getattr(config, "pad_token_id", None) or 0)


def _logits(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else None


@torch.no_grad()
def next_token_loss(
    model: LoadedModel, token_ids: Sequence[Sequence[int]], chunk: int, batch_size: int = 8
) -> dict[str, list[Any]] | None:
    """Per input: summed next-token NLL (nats) and predicted-token count; None for models that are not
    causal language models (encoder–decoder models, outputs without logits)."""
    torch_model = model.model
    config = getattr(torch_model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return None
    call = _ModelCall(torch_model)
    nll = np.zeros(len(token_ids))
    count = np.zeros(len(token_ids), dtype=np.int64)
    for group in batches(make_units(token_ids, chunk), batch_size, same_length=not call.takes_mask):
        batch = pad(group, _pad_id(model), left=False)
        args, kwargs = call(batch.input_ids, batch.attention_mask)
        logits = _logits(torch_model(*args, **kwargs))
        if logits is None or logits.shape[:2] != batch.input_ids.shape:
            return None
        per_token = F.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), batch.input_ids[:, 1:], reduction="none"
        )
        real = batch.attention_mask[:, 1:].bool()
        for row, sample in enumerate(batch.samples.tolist()):
            nll[sample] += float(per_token[row][real[row]].double().sum())
            count[sample] += int(real[row].sum())
    return {"nll": nll.tolist(), "tokens": count.tolist()}


def is_dit_digits(model: torch.nn.Module) -> bool:
    """Whether `model` is the bundled DiT (the one diffusion model whose data and schedule are known)."""
    kind = type(model)
    return kind.__name__ == "DiTMoE" and kind.__module__.startswith("routescope.models.dit_digits")


@torch.no_grad()
def denoising_loss(
    model: Any, *, buckets: int = DEFAULT_BUCKETS, images: int = DENOISE_IMAGES, seed: int = 0
) -> dict[str, Any]:
    """The bundled DiT's ε-MSE on real digits per timestep bucket: `{"buckets": [[lo, hi], ...], "mse":
    [...], "images": n}` (bucket b holds timesteps lo..hi inclusive; the class label is the true one)."""
    from routescope.models.dit_digits.data import load_digits_arrays, to_model_space
    from routescope.models.dit_digits.diffusion import NoiseSchedule

    schedule = NoiseSchedule.from_config(model.config)
    digits, labels = load_digits_arrays()
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    edges = np.linspace(0, schedule.n_timesteps, buckets + 1).round().astype(int)
    ranges, mse = [], []
    for lo, hi in itertools.pairwise(edges):
        pick = rng.choice(len(digits), size=min(images, len(digits)), replace=False)
        x0 = to_model_space(digits[pick], model.config.image_size)
        t = torch.from_numpy(rng.integers(lo, hi, size=len(pick))).long()
        noise = torch.randn(x0.shape, generator=generator)
        eps = model(schedule.add_noise(x0, noise, t), t, torch.from_numpy(labels[pick]).long())
        ranges.append([int(lo), int(hi) - 1])
        mse.append(float(F.mse_loss(eps.float(), noise)))
    return {"buckets": ranges, "mse": mse, "images": int(min(images, len(digits)))}


_CLASSIFIER: list[Any] = []


def class_accuracy(
    model: LoadedModel,
    classes: Sequence[int],
    *,
    samples_per_class: int,
    steps: int,
    cfg_scale: float,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """The share of sampled digits the bundled classifier recognises as the requested class, sampled in
    the chunks and seeds `record_diffusion` uses (so the images are the ones the run records)."""
    from routescope.models.dit_digits.quality import DigitClassifier

    if not _CLASSIFIER:
        _CLASSIFIER.append(DigitClassifier.fit())
    classifier = _CLASSIFIER[0]
    sampler = model.sampler
    assert sampler is not None
    wanted = [c for c in classes for _ in range(samples_per_class)]
    dit: Any = model.model  # a DiTMoE: its config says the classifier's grid
    source_size = int(dit.config.source_size)
    predicted: list[int] = []
    for index, first in enumerate(range(0, len(wanted), batch_size)):
        chunk = torch.tensor(wanted[first : first + batch_size])
        images = sampler(model.model, chunk, steps=steps, cfg_scale=cfg_scale, seed=seed + index)
        predicted.extend(classifier.predict(images.cpu(), source_size).tolist())
    hits = np.asarray(predicted) == np.asarray(wanted)
    per_class = {str(c): float(hits[np.asarray(wanted) == c].mean()) for c in dict.fromkeys(classes)}
    return {"accuracy": float(hits.mean()), "per_class": per_class, "samples": len(wanted)}


def quality(
    model: LoadedModel, inputs: Inputs, options: RecordOptions
) -> Callable[[], dict[str, Any] | None] | None:
    """The measurement a probe runs under its edit: next-token loss (text), denoising loss and class
    accuracy (the bundled DiT), or None when the model has neither."""
    if isinstance(inputs, Sampling):
        if not is_dit_digits(model.model):
            return None
        sampling = inputs
        return lambda: {
            "denoising": denoising_loss(model.model, seed=sampling.seed),
            "classes": class_accuracy(
                model,
                sampling.classes,
                samples_per_class=sampling.samples_per_class,
                steps=sampling.steps,
                cfg_scale=sampling.cfg_scale,
                seed=sampling.seed,
                batch_size=sampling.batch_size,
            ),
        }
    token_ids = text_token_ids(model, inputs)
    chunk = chunk_size(model, options.chunk_size)

    def measure() -> dict[str, Any] | None:
        loss = next_token_loss(model, token_ids, chunk, options.batch_size)
        return None if loss is None else {"loss": loss}

    return measure
