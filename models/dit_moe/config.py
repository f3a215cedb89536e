"""The configurations of the published DiT-MoE family, and how a spec name picks one.

A DiT-MoE checkpoint is a bare state dict: it does not say its own architecture, so the user names it
(`dit-moe:S-8E2A`) and the name must fix every shape. The table below holds the sizes of the paper's
models (S, B, L, XL, G with patch 2) crossed with the released expert settings (8 or 16 routed experts, 2
active); a JSON file of `DiTMoEConfig` fields describes any other variant (a smaller test model, a
retrained one). What the weights cannot say — top-k, the attention heads, the sampler — comes from here.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

Attention = Literal["timm", "flash"]
ATTENTIONS: tuple[Attention, ...] = ("timm", "flash")
Objective = Literal["ddpm", "rf"]
OBJECTIVES: tuple[Objective, ...] = ("ddpm", "rf")
SamplerName = Literal["ddpm", "ddim", "rf"]
SAMPLERS: tuple[SamplerName, ...] = ("ddpm", "ddim", "rf")


class ConfigError(ValueError):
    """A config name or file that describes no DiT-MoE model (one line, says what is known)."""


@dataclass(frozen=True, kw_only=True)
class DiTMoEConfig:
    """Everything that fixes a DiT-MoE network's parameter shapes and how it is sampled."""

    name: str = "custom"
    """The spec name (`S-8E2A`) or `custom`."""
    depth: int = 12
    """Transformer blocks, each with one MoE feed-forward layer."""
    hidden_size: int = 384
    num_heads: int = 6
    patch_size: int = 2
    image_size: int = 256
    """Pixel side of the images; the latent side is image_size / vae_factor."""
    vae_factor: int = 8
    """Downsampling of the VAE (sd-vae-ft-mse: 8); 1 for a model trained on pixels."""
    in_channels: int = 4
    """Latent channels (4 for the SD VAE)."""
    learn_sigma: bool = True
    """The output has twice the input channels: ε (or the velocity) and the variance interpolation."""
    num_classes: int = 1000
    """ImageNet classes; id num_classes is the null class of classifier-free guidance."""
    n_experts: int = 8
    top_k: int = 2
    mlp_ratio: int = 4
    """Each routed expert's SwiGLU width is mlp_ratio × hidden."""
    shared_ratio: int = 2
    """The shared expert's SwiGLU width is shared_ratio × hidden."""
    frequency_size: int = 256
    """Width of the sinusoidal timestep features."""
    attention: Attention = "timm"
    """Parameter layout of the attention: timm's (`qkv`, `proj`) or the flash-attention module
    (`Wqkv`, `q_norm`, `k_norm`, `out_proj`) the XL and G checkpoints were trained with."""
    objective: Objective = "ddpm"
    """What the checkpoint was trained for: `ddpm` (ε prediction with learned variance, 1000 linear-β
    steps) or `rf` (rectified flow: velocity prediction, t ∈ (0, 1])."""
    latent_scale: float = 0.18215
    """Latents are VAE means multiplied by this (decode divides by it)."""

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"attention must be one of {ATTENTIONS}, not {self.attention!r}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, not {self.objective!r}")
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise ConfigError(f"hidden size {self.hidden_size} must divide by {self.num_heads} heads and 4")
        if self.latent_size % self.patch_size:
            raise ConfigError(f"latent side {self.latent_size} is not a multiple of patch {self.patch_size}")
        if not 0 < self.top_k <= self.n_experts:
            raise ConfigError(f"top_k must be in 1..{self.n_experts}, not {self.top_k}")

    @property
    def latent_size(self) -> int:
        """Side of the latent the network denoises."""
        return self.image_size // self.vae_factor

    @property
    def grid(self) -> int:
        """Patches per side: the token grid is grid × grid."""
        return self.latent_size // self.patch_size

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def default_sampler(self) -> SamplerName:
        """The sampler the checkpoint was trained for (the reference sample.py's choice)."""
        return "rf" if self.objective == "rf" else "ddpm"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTMoEConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown DiT-MoE config keys: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"bad DiT-MoE config: {exc}") from None


SIZES: dict[str, dict[str, Any]] = {
    "S": {"depth": 12, "hidden_size": 384, "num_heads": 6},
    "B": {"depth": 12, "hidden_size": 768, "num_heads": 12},
    "L": {"depth": 24, "hidden_size": 1024, "num_heads": 16},
    "XL": {"depth": 28, "hidden_size": 1152, "num_heads": 16, "attention": "flash", "objective": "rf"},
    "G": {"depth": 40, "hidden_size": 1408, "num_heads": 16, "attention": "flash", "objective": "rf"},
}
"""The paper's sizes (all patch 2). XL and G were trained with the flash-attention module and rectified
flow; S, B (and L) with timm attention and DDPM — as the released sampling script loads them."""

EXPERTS: dict[str, tuple[int, int]] = {"8E2A": (8, 2), "16E2A": (16, 2)}
"""Routed experts and active experts per token."""

_NAME = re.compile(
    r"^(?P<size>[A-Za-z]+)(?:/2)?-(?P<experts>\d+E\d+A)(?:-(?P<image>256|512))?$", re.IGNORECASE
)


def config_names() -> list[str]:
    """Every named config, smallest first: S-8E2A, S-16E2A, B-8E2A, ..."""
    return [f"{size}-{experts}" for size in SIZES for experts in EXPERTS]


def named_config(name: str) -> DiTMoEConfig:
    """`S-8E2A`, `XL-16E2A`, `B/2-8E2A` or with the image side `XL-8E2A-512` → the config."""
    match = _NAME.match(name.strip())
    size = match["size"].upper() if match else ""
    if match is None or size not in SIZES or match["experts"].upper() not in EXPERTS:
        raise ConfigError(
            f"unknown DiT-MoE config {name!r}; known: {', '.join(config_names())} "
            "(optionally -256 or -512), or a .json file of config fields"
        )
    n_experts, top_k = EXPERTS[match["experts"].upper()]
    image = int(match["image"]) if match["image"] else 256
    canonical = f"{size}-{match['experts'].upper()}" + (f"-{image}" if image != 256 else "")
    return DiTMoEConfig(name=canonical, n_experts=n_experts, top_k=top_k, image_size=image, **SIZES[size])


def load_config(spec: str) -> DiTMoEConfig:
    """A named config, or a JSON file of `DiTMoEConfig` fields (its name defaults to the file's stem)."""
    if spec.endswith(".json"):
        path = Path(spec).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read DiT-MoE config {spec}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"DiT-MoE config {spec} is not a JSON object")
        config = DiTMoEConfig.from_dict(data)
        return config if "name" in data else replace(config, name=path.stem)
    return named_config(spec)
