"""The tables of models RouteScope knows: bundled models (name → how to build it offline) and checkpoint
families (`FAMILY:CONFIG` specs, e.g. `dit-moe:S-8E2A`, whose weights the user supplies as a local file).

Builders import their model code (and transformers) on first use, so `import routescope` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


def build_tiny_mixtral() -> tuple[torch.nn.Module, Any]:
    """The untrained seeded tiny Mixtral and its byte tokenizer (transformers is imported on first use)."""
    from .tiny_mixtral import build_tiny_mixtral as build

    return build()


def build_moe_lm() -> tuple[torch.nn.Module, Any]:
    """The trained moe-lm (Qwen2-MoE) and its tokenizer (transformers is imported on first use)."""
    from .moe_lm.load import load_moe_lm

    return load_moe_lm()


def build_dit_digits() -> tuple[torch.nn.Module, Any]:
    """The trained dit-digits DiT-MoE; a diffusion model has no tokenizer."""
    from .dit_digits import load_dit_digits

    return load_dit_digits(), None


def sample_dit_digits(*args: Any, **kwargs: Any) -> torch.Tensor:
    """dit-digits' DDIM sampler with classifier-free guidance (imported on first use)."""
    from .dit_digits import sample

    return sample(*args, **kwargs)


def quality_dit_digits(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """dit-digits' denoising loss and class accuracy under an edit (imported on first use)."""
    from .dit_digits.measures import probe_quality

    return probe_quality(*args, **kwargs)


def build_switch_dit_digits() -> tuple[torch.nn.Module, Any]:
    """The trained switch-dit-digits Switch-DiT (timestep-gated experts); no tokenizer."""
    from .switch_dit import load_switch_dit_digits

    return load_switch_dit_digits(), None


@dataclass(frozen=True)
class BundledModel:
    """A bundled model: a builder returning (model, tokenizer) and one line saying what it is."""

    build: Callable[[], tuple[torch.nn.Module, Any]]
    description: str
    sampler: Callable[..., torch.Tensor] | None = None
    """Diffusion models: the sampler RouteScope drives to record every denoising step."""
    quality: Callable[..., dict[str, Any]] | None = None
    """Diffusion models: quality under a probe's edit, `quality(model, sampler, *, classes,
    samples_per_class, steps, cfg_scale, seed, batch_size)` (the loader puts it on the loaded model)."""


BUNDLED: dict[str, BundledModel] = {
    "tiny-mixtral": BundledModel(
        build=build_tiny_mixtral,
        description="untrained 4-layer Mixtral (8 experts, top-2, hidden 256), seeded; a smoke-test model",
    ),
    "dit-digits": BundledModel(
        build=build_dit_digits,
        sampler=sample_dit_digits,
        quality=quality_dit_digits,
        description="trained class-conditional DiT-MoE on 8x8 digits (shared + 8 routed experts, top-2)",
    ),
    "switch-dit-digits": BundledModel(
        build=build_switch_dit_digits,
        sampler=sample_dit_digits,
        quality=quality_dit_digits,
        description="trained Switch-DiT on 8x8 digits: per-block gates over the timestep embedding (one "
        "decision per image and step, no position), shared + 8 routed experts, top-2, diffusion-prior loss",
    ),
    "moe-lm": BundledModel(
        build=build_moe_lm,
        description="trained 4-layer Qwen2-MoE (16 routed experts, top-2, + 1 shared expert, hidden 160) "
        "on 5 domains (prose, code, arithmetic, json, chemistry); see models/moe_lm/README.md",
    ),
}


def load_dit_moe_family(
    name: str, *, weights: str, vae: str | None = None, sampler: str | None = None, dtype: Any = None
) -> tuple[torch.nn.Module, Callable[..., torch.Tensor], dict[str, Any]]:
    """A published DiT-MoE checkpoint: model, its sampler and manifest facts (imported on first use)."""
    from .dit_moe import load

    return load(name, weights=weights, vae=vae, sampler=sampler, dtype=dtype)  # type: ignore[arg-type]


def dit_moe_config_names() -> list[str]:
    from .dit_moe import config_names

    return config_names()


@dataclass(frozen=True)
class CheckpointFamily:
    """Models whose architecture a spec names (`FAMILY:CONFIG`) and whose weights come from a local file.

    `load(config, *, weights, vae, sampler, dtype)` returns (model, sampler or None, manifest facts) and
    raises `ValueError` with a one-line message for a bad config, file or checkpoint.
    """

    load: Callable[..., tuple[torch.nn.Module, Callable[..., torch.Tensor] | None, dict[str, Any]]]
    configs: Callable[[], list[str]]
    description: str


CHECKPOINT_FAMILIES: dict[str, CheckpointFamily] = {
    "dit-moe": CheckpointFamily(
        load=load_dit_moe_family,
        configs=dit_moe_config_names,
        description="published DiT-MoE checkpoints (class-conditional latent diffusion, shared + routed "
        "experts, top-2); weights from --weights FILE, images through --vae DIR",
    ),
}


def bundled_names() -> list[str]:
    return sorted(BUNDLED)


def load_bundled(name: str) -> tuple[torch.nn.Module, Any]:
    """Build a bundled model and its tokenizer; KeyError names the known models."""
    if name not in BUNDLED:
        raise KeyError(name)
    return BUNDLED[name].build()
