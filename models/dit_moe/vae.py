"""The image decoder of latent DiT-MoE models: a diffusers `AutoencoderKL` from a local folder.

The checkpoints denoise 4-channel latents of the Stable Diffusion VAE (`sd-vae-ft-mse`); turning them into
pictures needs that VAE, which is a diffusers model. diffusers is an optional extra
(`pip install routescope[diffusers]`) and is imported only here, only when a VAE folder is given: routing
is recorded without it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch


class VaeError(ValueError):
    """A VAE folder that cannot be loaded (one line)."""


def load_vae_decoder(folder: Path | str) -> Callable[[torch.Tensor], torch.Tensor]:
    """`decode(latents / scale) → images [n, 3, H, W] in [−1, 1]`, running on the latents' device."""
    path = Path(folder).expanduser()
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise VaeError(f"{folder} is not a diffusers VAE folder (no config.json in it)")
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise VaeError("decoding latents needs diffusers: pip install 'routescope[diffusers]'") from None
    try:
        vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VaeError(f"cannot load the VAE in {folder}: {first[:200]}") from None

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        vae.to(latents.device)
        return vae.decode(latents.to(vae.dtype)).sample.float()

    return decode
