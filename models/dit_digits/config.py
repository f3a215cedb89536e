"""The one configuration record of dit-digits: architecture, data geometry and noise schedule together.

The sampler needs the schedule and the model needs the geometry; keeping both in one frozen dataclass that
travels with the weights (`config.json`) means a saved folder is self-describing and `sample(model, ...)`
needs nothing but the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DiTDigitsConfig:
    """Architecture + data + diffusion settings. Defaults are the shipped model's."""

    model_type: str = "dit_moe"
    # data: scikit-learn digits, 8×8 in 0..16, scaled to [-1, 1]; bilinearly upsampled if image_size > 8
    source_size: int = 8
    image_size: int = 8
    in_channels: int = 1
    # transformer
    patch_size: int = 2
    hidden_size: int = 128
    depth: int = 4
    num_heads: int = 4
    # MoE feed-forward (SwiGLU experts)
    n_routed_experts: int = 8
    top_k: int = 2
    expert_hidden: int = 128
    shared_expert_hidden: int = 256
    balance_alpha: float = 0.01
    # conditioning
    n_classes: int = 10
    class_dropout: float = 0.1
    frequency_embedding_size: int = 128
    # DDPM schedule
    n_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    @property
    def null_class(self) -> int:
        """The label id meaning "no class" (classifier-free guidance's unconditional branch)."""
        return self.n_classes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTDigitsConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown dit-digits config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> DiTDigitsConfig:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
