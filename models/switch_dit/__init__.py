"""switch-dit-digits: a Switch-DiT (timestep-gated experts) trained on scikit-learn's handwritten digits.

The bundled timestep-routed diffusion model of RouteScope (`bundled:switch-dit-digits`): each block's
experts are chosen from the timestep embedding alone, so its router decisions have no token position.
`load_switch_dit_digits()` reads the shipped safetensors weights; sampling uses dit-digits' DDIM sampler.
See README.md in this folder for the model card.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..dit_digits.diffusion import sample
from .config import SwitchDiTConfig
from .model import SwitchDiT, TimestepGate

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""The shipped model: config.json, model.safetensors, metrics.json."""


def load_switch_dit_digits(path: Path | str | None = None) -> SwitchDiT:
    """The trained model from `path` (default: the shipped weights), in eval mode, float32, on CPU."""
    folder = Path(path) if path is not None else WEIGHTS_DIR
    config = SwitchDiTConfig.load(folder / "config.json")
    model = SwitchDiT(config)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.to(torch.float32).eval()


__all__ = ["WEIGHTS_DIR", "SwitchDiT", "SwitchDiTConfig", "TimestepGate", "load_switch_dit_digits", "sample"]
