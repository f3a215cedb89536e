"""DiT-MoE: the published class-conditional diffusion MoE checkpoints (S/B/L/XL/G × 8E2A/16E2A).

`load("S-8E2A", weights="dit_moe_s_8E2A.pt", vae="sd-vae-ft-mse/")` builds the network in the
checkpoints' exact parameter layout, loads the file strictly (weights only) and returns it with the
sampler it was trained for; RouteScope records it like the bundled dit-digits model, whose MoE layer it
shares. See docs/diffusion.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    CheckpointError,
    check_matches,
    expected_shapes,
    infer_config,
    load_dit_moe,
    mismatch,
    read_state_dict,
)
from .config import SAMPLERS, ConfigError, DiTMoEConfig, SamplerName, config_names, load_config, named_config
from .model import DiTMoE
from .sampling import DiTMoESampler, StepInfo, latent_preview, respaced_timesteps
from .vae import VaeError, load_vae_decoder


def load(
    name: str,
    *,
    weights: Path | str,
    vae: Path | str | None = None,
    sampler: SamplerName | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[DiTMoE, DiTMoESampler, dict[str, Any]]:
    """The model (strictly loaded), its sampler (`sampler` or the one it was trained for) and manifest facts.

    Raises `ConfigError`, `CheckpointError` or `VaeError` (all `ValueError`s with one-line messages).
    """
    config = load_config(name)
    if sampler is not None and sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    model = load_dit_moe(config, weights, dtype=dtype)
    method = sampler or model.config.default_sampler
    decode = load_vae_decoder(vae) if vae is not None else None
    info = {
        "path": str(Path(weights).expanduser().resolve()),
        "config": model.config.to_dict(),
        "sampler": method,
        "vae": None if vae is None else str(Path(vae).expanduser().resolve()),
        "images": "decoded by the VAE (luminance)" if decode else "latent preview (no VAE given)",
    }
    return model, DiTMoESampler(method, decode), info


__all__ = [
    "SAMPLERS",
    "CheckpointError",
    "ConfigError",
    "DiTMoE",
    "DiTMoEConfig",
    "DiTMoESampler",
    "StepInfo",
    "VaeError",
    "check_matches",
    "config_names",
    "expected_shapes",
    "infer_config",
    "latent_preview",
    "load",
    "load_config",
    "load_dit_moe",
    "load_vae_decoder",
    "mismatch",
    "named_config",
    "read_state_dict",
    "respaced_timesteps",
]
