"""A model together with what recording needs beside it: its tokenizer and where it came from."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LoadedModel:
    """A model ready to record. `routescope.load_model` builds one; wrap your own object the same way."""

    model: torch.nn.Module
    tokenizer: Any = None
    """A transformers tokenizer; needed for text inputs, token text and generation."""
    processor: Any = None
    """A vision-language model's own processor (text and images in, `input_ids`, `pixel_values`, ... out);
    needed for `record(images=...)` (hooks/vision.py)."""
    spec: str = ""
    """What the user asked for: `bundled:NAME`, a folder, a hub id, or empty for an in-memory model."""
    source: str = "object"
    """`bundled`, `local`, `hub` or `object`."""
    routers: Sequence[str] | Mapping[str, Any] | None = None
    """Routers to record when the model does not declare them (see docs/routers.md)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Extra manifest facts (revision, path, ...)."""
    sampler: Callable[..., torch.Tensor] | None = None
    """Diffusion models: `sample(model, classes, *, steps, cfg_scale, seed, forward, on_step)` returning
    `[n, H, W]` images in [0, 1], calling `forward(x, t, y)` once per step on the CFG-doubled batch
    (conditional rows first). Its presence marks the model as a diffusion model (docs/diffusion.md)."""
    quality: Callable[..., dict[str, Any]] | None = None
    """Diffusion models: the quality a probe measures under its edit, `quality(model, sampler, *, classes,
    samples_per_class, steps, cfg_scale, seed, batch_size)` returning a JSON-able dict (the bundled DiT
    registers one with its `BundledModel`); None: probes store no metrics."""
