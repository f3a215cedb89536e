"""Sampling a DiT-MoE checkpoint the way it was trained: DDPM/DDIM with learned variance, or rectified flow.

The released checkpoints come in two kinds. S and B learned ε and a variance interpolation on the
1000-step linear-β DDPM (sampled by the reference script with ancestral DDPM over an evenly respaced
subset of timesteps); XL and G learned a rectified-flow velocity, z_t = (1−t)·x + t·ε, sampled by Euler
steps from t = 1 down to 1/N. Each sampler here calls the network exactly once per step on the
classifier-free-guidance batch (conditional rows first, then the same latents with the null class), through
a `forward` the recorder may replace, and reports every step to `on_step` — RouteScope's diffusion
contract (hooks/diffusion.py). Guidance follows the reference: ε-models guide only the first three latent
channels (the reference's "exact reproducibility" choice), velocity models guide all of them.

Images: with a VAE the final latents are decoded to RGB and stored as luminance in [0, 1] (the run's image
table holds one channel); without one they are a *latent preview*, the mean of the latent channels mapped
from [−2, 2] to [0, 1] — enough to see the layout, while the routing record is complete either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import SAMPLERS, DiTMoEConfig, SamplerName

ForwardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
DDPM_TIMESTEPS = 1000
GUIDED_EPS_CHANNELS = 3
"""ε-prediction checkpoints: classifier-free guidance on the first three latent channels, as the reference
`forward_with_cfg` does; the fourth channel and the variance come from the conditional row itself."""


def ddpm_alphas_cumprod(n: int = DDPM_TIMESTEPS) -> torch.Tensor:
    """ᾱₜ of the linear β schedule (1e-4 … 0.02 over n steps), float64."""
    return torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, n, dtype=torch.float64), dim=0)


def respaced_timesteps(steps: int, n: int = DDPM_TIMESTEPS) -> list[int]:
    """`steps` timesteps of 0..n-1, evenly strided and rounded as the reference respacing does, ascending."""
    if not 1 <= steps <= n:
        raise ValueError(f"steps must be in 1..{n}, got {steps}")
    stride = 1.0 if steps == 1 else (n - 1) / (steps - 1)
    taken, position = [], 0.0
    for _ in range(steps):
        taken.append(round(position))
        position += stride
    return sorted(set(taken))


@dataclass(frozen=True)
class StepInfo:
    """What the sampler reports after each step (`x0` is decoded only when read)."""

    step: int
    """0-based sampler step, 0 = the noisiest."""
    timestep: float
    """What the network saw: the DDPM timestep index, or the rectified-flow t ∈ (0, 1]."""
    sigma: float
    """Noise level: √((1−ᾱₜ)/ᾱₜ) for DDPM, t for rectified flow."""
    latent_x0: torch.Tensor
    """Predicted clean latents after guidance, [n, C, h, w]."""
    to_images: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)

    @property
    def x0(self) -> torch.Tensor:
        """The predicted clean image [n, H, W] in [0, 1] (decoded, or a latent preview)."""
        return self.to_images(self.latent_x0)


def latent_preview(latents: torch.Tensor) -> torch.Tensor:
    """[n, C, h, w] latents → [n, h, w] in [0, 1]: the channel mean, [−2, 2] mapped linearly."""
    return ((latents.float().mean(dim=1) / 2.0).clamp(-1.0, 1.0) + 1.0) / 2.0


def rgb_to_unit_luma(images: torch.Tensor) -> torch.Tensor:
    """Decoded images [n, 3, H, W] in [−1, 1] → luminance [n, H, W] in [0, 1] (ITU-R 601 weights)."""
    unit = ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    if unit.shape[1] == 1:
        return unit[:, 0]
    weights = torch.tensor([0.299, 0.587, 0.114], device=unit.device)[:, None, None]
    return (unit[:, :3] * weights).sum(dim=1)


@dataclass
class DiTMoESampler:
    """A sampler bound to a method and an optional VAE decoder; call it like `sample(model, classes, ...)`."""

    method: SamplerName
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None
    """Latents (already divided by the latent scale) → images [n, 3, H, W] in [−1, 1]."""

    def __post_init__(self) -> None:
        if self.method not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, not {self.method!r}")

    def to_images(self, latents: torch.Tensor, config: DiTMoEConfig) -> torch.Tensor:
        if self.decode is None:
            return latent_preview(latents)
        with torch.no_grad():
            return rgb_to_unit_luma(self.decode(latents / config.latent_scale))

    @torch.no_grad()
    def __call__(
        self,
        model: Any,
        classes: Sequence[int] | torch.Tensor,
        *,
        steps: int,
        cfg_scale: float,
        seed: int,
        forward: ForwardFn | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> torch.Tensor:
        """One image per class id; returns [n, H, W] in [0, 1] (see the module docstring for what H, W are).

        Every step calls `forward(cat([z, z]), t, cat([classes, null]))` once. The initial noise (and the
        DDPM step noise) comes from a CPU generator seeded with `seed`.
        """
        config: DiTMoEConfig = model.config
        labels = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
        if labels.numel() == 0:
            raise ValueError("classes is empty")
        if bool(((labels < 0) | (labels > config.num_classes)).any()):
            raise ValueError(f"class ids must be in 0..{config.num_classes} ({config.num_classes} = null)")
        call = forward if forward is not None else model.__call__
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
        n, c, side = labels.numel(), config.in_channels, config.latent_size
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        z = torch.randn((n, c, side, side), generator=generator).to(device=device, dtype=dtype)
        labels = labels.to(device)
        y_in = torch.cat([labels, torch.full_like(labels, config.num_classes)])

        def images(latents: torch.Tensor) -> torch.Tensor:
            return self.to_images(latents, config)

        run = _rectified_flow if self.method == "rf" else _ddpm
        final = run(self.method, call, z, y_in, config, steps, cfg_scale, generator, on_step, images)
        return images(final)


def _guided(out: torch.Tensor, n: int, channels: int, guided: int, scale: float) -> torch.Tensor:
    """The conditional rows' prediction [n, channels, ...] with the first `guided` channels guided."""
    cond, uncond = out[:n, :channels], out[n:, :channels]
    mixed = uncond[:, :guided] + scale * (cond[:, :guided] - uncond[:, :guided])
    return torch.cat([mixed, cond[:, guided:]], dim=1)


def _ddpm(
    method: str,
    call: ForwardFn,
    z: torch.Tensor,
    y_in: torch.Tensor,
    config: DiTMoEConfig,
    steps: int,
    cfg_scale: float,
    generator: torch.Generator,
    on_step: Callable[[StepInfo], None] | None,
    images: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Ancestral DDPM (learned-range variance) or deterministic DDIM over the respaced timesteps."""
    abar_all = ddpm_alphas_cumprod()
    kept = respaced_timesteps(steps)
    n, c = z.shape[0], config.in_channels
    x0 = z
    for step, index in enumerate(reversed(range(len(kept)))):
        t = kept[index]
        abar = float(abar_all[t])
        abar_prev = float(abar_all[kept[index - 1]]) if index > 0 else 1.0
        t_in = torch.full((2 * n,), t, dtype=torch.long, device=z.device)
        out = call(torch.cat([z, z]), t_in, y_in)
        eps = _guided(out, n, c, min(GUIDED_EPS_CHANNELS, c), cfg_scale)
        x0 = math.sqrt(1.0 / abar) * z - math.sqrt(1.0 / abar - 1.0) * eps
        if method == "ddim":
            z = math.sqrt(abar_prev) * x0 + math.sqrt(1.0 - abar_prev) * eps
        else:
            mean, log_var = ddpm_posterior(z, x0, out[:n, c : 2 * c], abar_all, kept, index)
            if index > 0:
                noise = torch.randn(z.shape, generator=generator).to(z.device, z.dtype)
                z = mean + torch.exp(0.5 * log_var) * noise
            else:
                z = mean
        if on_step is not None:
            sigma = math.sqrt((1.0 - abar) / abar)
            on_step(StepInfo(step, float(t), sigma, x0, images))
    return z


def ddpm_posterior(
    z: torch.Tensor,
    x0: torch.Tensor,
    values: torch.Tensor,
    abar_all: torch.Tensor,
    kept: list[int],
    index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of p(z_prev | z) at respaced step `index` (ascending over `kept`).

    Respacing makes β = 1 − ᾱₜ/ᾱₚᵣₑᵥ between kept timesteps. The mean is the posterior q(z_prev | z, x̂₀);
    the log-variance is IDDPM's learned range: (v+1)/2 of the way from the posterior log-variance (at
    index 0, where it is 0, clipped to index 1's) to log β, for the model's variance output v.
    Without learned variance (`values` with no channels) v = −1: the posterior variance itself.
    """

    def abar_at(i: int) -> float:
        return float(abar_all[kept[i]]) if i >= 0 else 1.0

    def posterior_variance(i: int) -> float:
        return (1.0 - abar_at(i) / abar_at(i - 1)) * (1.0 - abar_at(i - 1)) / (1.0 - abar_at(i))

    abar, abar_prev = abar_at(index), abar_at(index - 1)
    beta = 1.0 - abar / abar_prev
    mean = (
        beta * math.sqrt(abar_prev) / (1.0 - abar) * x0
        + (1.0 - abar_prev) * math.sqrt(1.0 - beta) / (1.0 - abar) * z
    )
    if values.shape[1] == 0:
        values = torch.full_like(z, -1.0)
    clipped = index if index > 0 else min(1, len(kept) - 1)
    min_log = math.log(max(posterior_variance(clipped), 1e-20))
    frac = (values.float() + 1.0) / 2.0
    return mean, (frac * math.log(beta) + (1.0 - frac) * min_log).to(z.dtype)


def _rectified_flow(
    method: str,
    call: ForwardFn,
    z: torch.Tensor,
    y_in: torch.Tensor,
    config: DiTMoEConfig,
    steps: int,
    cfg_scale: float,
    generator: torch.Generator,
    on_step: Callable[[StepInfo], None] | None,
    images: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Euler steps of dz/dt = v from t = 1 to 0 in `steps` equal steps, all channels guided."""
    del method, generator  # deterministic
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    n, c = z.shape[0], config.in_channels
    dt = 1.0 / steps
    for step, i in enumerate(range(steps, 0, -1)):
        t = i / steps
        t_in = torch.full((2 * n,), t, dtype=torch.float32, device=z.device)
        velocity = _guided(call(torch.cat([z, z]), t_in, y_in), n, c, c, cfg_scale)
        x0 = z - t * velocity
        z = z - dt * velocity
        if on_step is not None:
            on_step(StepInfo(step, t, t, x0, images))
    return z
