"""dit-digits: a small class-conditional DiT-MoE trained on scikit-learn's handwritten digits.

The bundled diffusion model of RouteScope (`bundled:dit-digits`): `load_dit_digits()` reads the shipped
safetensors weights (no pickle, no network) and `sample()` generates digits with a DDIM sampler that
reports every step. See README.md in this folder for the model card.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import DiTDigitsConfig
from .diffusion import NoiseSchedule, StepInfo, sample
from .model import DiTMoE, MoEGate

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""The shipped model: config.json, model.safetensors, metrics.json."""


def load_dit_digits(path: Path | str | None = None) -> DiTMoE:
    """The trained model from `path` (default: the shipped weights), in eval mode, float32, on CPU."""
    folder = Path(path) if path is not None else WEIGHTS_DIR
    config = DiTDigitsConfig.load(folder / "config.json")
    model = DiTMoE(config)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.to(torch.float32).eval()


__all__ = [
    "WEIGHTS_DIR",
    "DiTDigitsConfig",
    "DiTMoE",
    "MoEGate",
    "NoiseSchedule",
    "StepInfo",
    "load_dit_digits",
    "sample",
]
