"""Quality of the bundled DiT under an edit, for RouteScope's probes: ε-prediction MSE (the training
objective) on real digits at timesteps drawn inside each bucket, and the share of generated digits that
the quality classifier recognises as the requested class.

Registered with the bundled model (`routescope.models.BUNDLED["dit-digits"].quality`); the loader hands
it to the recording side on the loaded model, so capture never imports this package. Noise, digits and
timesteps are fixed by a seed, so every variant of a probe sees the same draws.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data import load_digits_arrays, to_model_space
from .diffusion import NoiseSchedule

DEFAULT_BUCKETS = 5
"""Timestep buckets of the denoising loss (equal widths over 0..T-1)."""
DENOISE_IMAGES = 256
"""Real digits scored per bucket (the same digits, noise and timesteps for every variant)."""


@torch.no_grad()
def denoising_loss(
    model: Any, *, buckets: int = DEFAULT_BUCKETS, images: int = DENOISE_IMAGES, seed: int = 0
) -> dict[str, Any]:
    """The bundled DiT's ε-MSE on real digits per timestep bucket: `{"buckets": [[lo, hi], ...], "mse":
    [...], "images": n}` (bucket b holds timesteps lo..hi inclusive; the class label is the true one)."""
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


def sampled_class_accuracy(
    model: Any,
    sampler: Callable[..., torch.Tensor],
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
    from .quality import DigitClassifier

    if not _CLASSIFIER:
        _CLASSIFIER.append(DigitClassifier.fit())
    classifier = _CLASSIFIER[0]
    wanted = [c for c in classes for _ in range(samples_per_class)]
    source_size = int(model.config.source_size)
    predicted: list[int] = []
    for index, first in enumerate(range(0, len(wanted), batch_size)):
        chunk = torch.tensor(wanted[first : first + batch_size])
        images = sampler(model, chunk, steps=steps, cfg_scale=cfg_scale, seed=seed + index)
        predicted.extend(classifier.predict(images.cpu(), source_size).tolist())
    hits = np.asarray(predicted) == np.asarray(wanted)
    per_class = {str(c): float(hits[np.asarray(wanted) == c].mean()) for c in dict.fromkeys(classes)}
    return {"accuracy": float(hits.mean()), "per_class": per_class, "samples": len(wanted)}


def probe_quality(
    model: Any,
    sampler: Callable[..., torch.Tensor],
    *,
    classes: Sequence[int],
    samples_per_class: int,
    steps: int,
    cfg_scale: float,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """What a probe stores as `metrics` for the bundled DiT: `{"denoising": ..., "classes": ...}`."""
    return {
        "denoising": denoising_loss(model, seed=seed),
        "classes": sampled_class_accuracy(
            model,
            sampler,
            classes,
            samples_per_class=samples_per_class,
            steps=steps,
            cfg_scale=cfg_scale,
            seed=seed,
            batch_size=batch_size,
        ),
    }
