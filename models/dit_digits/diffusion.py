"""The diffusion process around the network: DDPM noise schedule, training loss and a DDIM sampler.

The sampler is written for observation. Each sampling step calls the network exactly once, on the
classifier-free-guidance batch doubled in a fixed order (conditional rows first, then the same images with
the null class), through a `forward` callable the caller may replace — so a recorder sees one forward pass
per step with a stable shape — and it reports every step (timestep, noise level, predicted clean image)
to an `on_step` callback.

Conventions: timesteps are DDPM indices 0..T-1 (T = `n_timesteps`, 1000), t = 0 the least noisy;
ᾱₜ = Πₛ≤ₜ (1 − βₛ); x_t = √ᾱₜ·x₀ + √(1−ᾱₜ)·ε; the noise level reported is σₜ = √((1−ᾱₜ)/ᾱₜ)
(the noise-to-signal ratio, as in the variance-exploding view of the same process).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import DiTDigitsConfig
from .model import DiTMoE

ForwardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def betas_for(config: DiTDigitsConfig) -> torch.Tensor:
    """βₜ for t = 0..T-1 in float64: linear (DDPM) or cosine (improved DDPM, β capped at 0.999)."""
    n = config.n_timesteps
    if config.beta_schedule == "linear":
        return torch.linspace(config.beta_start, config.beta_end, n, dtype=torch.float64)
    if config.beta_schedule == "cosine":
        s = 0.008
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {config.beta_schedule!r} (linear or cosine)")


@dataclass(frozen=True)
class NoiseSchedule:
    """ᾱₜ for every DDPM timestep (float64) and the quantities derived from it."""

    alphas_cumprod: torch.Tensor

    @classmethod
    def from_config(cls, config: DiTDigitsConfig) -> NoiseSchedule:
        return cls(alphas_cumprod=torch.cumprod(1.0 - betas_for(config), dim=0))

    @property
    def n_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def sigma(self, t: int) -> float:
        """Noise-to-signal ratio √((1−ᾱₜ)/ᾱₜ) at timestep t."""
        abar = float(self.alphas_cumprod[t])
        return math.sqrt((1.0 - abar) / abar)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱₜ·x₀ + √(1−ᾱₜ)·ε, per sample (t [N] long)."""
        abar = self.alphas_cumprod.to(x0.device)[t].float().reshape(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def sampling_timesteps(self, steps: int) -> list[int]:
        """`steps` distinct timesteps from T-1 down to 0, evenly spaced (the DDIM sub-sequence)."""
        if not 1 <= steps <= self.n_timesteps:
            raise ValueError(f"steps must be in 1..{self.n_timesteps}, got {steps}")
        if steps == 1:
            return [self.n_timesteps - 1]
        grid = torch.linspace(self.n_timesteps - 1, 0, steps, dtype=torch.float64).round().long()
        return [int(v) for v in grid]


@dataclass(frozen=True)
class LossParts:
    """One training batch's objective: total = mse + balance."""

    total: torch.Tensor
    mse: torch.Tensor
    balance: torch.Tensor
    load: torch.Tensor
    """[depth, E] expert load shares of this batch."""


def training_loss(
    model: DiTMoE, schedule: NoiseSchedule, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator
) -> LossParts:
    """ε-prediction MSE at uniformly drawn timesteps, plus the MoE balance loss (already α-weighted)."""
    n = x0.shape[0]
    t = torch.randint(0, schedule.n_timesteps, (n,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    out = model.forward_with_stats(schedule.add_noise(x0, noise, t), t, y)
    mse = F.mse_loss(out.eps, noise)
    return LossParts(total=mse + out.balance_loss, mse=mse, balance=out.balance_loss, load=out.load)


@dataclass(frozen=True)
class StepInfo:
    """What the sampler reports after each step."""

    step: int
    """0-based index of the sampler step (0 = the noisiest)."""
    timestep: int
    """The DDPM timestep the network saw at this step (0..T-1)."""
    sigma: float
    """Noise level at this timestep: √((1−ᾱₜ)/ᾱₜ)."""
    x0: torch.Tensor
    """Predicted clean images after guidance, [n, H, W] in [0, 1]."""


@torch.no_grad()
def sample(
    model: DiTMoE,
    classes: torch.Tensor,
    *,
    steps: int,
    cfg_scale: float,
    seed: int,
    forward: ForwardFn | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> torch.Tensor:
    """Generate one image per entry of `classes` with deterministic DDIM (η = 0) and classifier-free guidance.

    Every step calls `forward(x_in, t_in, y_in)` exactly once with `x_in = cat([x, x])` [2n, 1, H, W],
    `t_in` [2n] long (the same timestep everywhere) and `y_in = cat([classes, null])`: rows 0..n-1 are the
    conditional branch, rows n..2n-1 the unconditional one (null class id = n_classes) — also when
    `cfg_scale` is 1.0, so the per-step batch shape never changes. Guidance: ε = ε_u + s·(ε_c − ε_u).
    The predicted x₀ is clipped to [-1, 1] and ε recomputed from it before the DDIM update.

    `forward` defaults to `model.__call__`; `on_step` receives a `StepInfo` after each step. The initial
    noise comes from a `torch.Generator` seeded with `seed`: the same seed gives bit-identical images on
    the same machine and thread count. Returns [n, H, W] in [0, 1] on the model's device.
    """
    config = model.config
    classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    if classes.numel() == 0:
        raise ValueError("classes is empty")
    if bool(((classes < 0) | (classes > config.n_classes)).any()):
        raise ValueError(f"class ids must be in 0..{config.n_classes} ({config.n_classes} = null)")
    call = forward if forward is not None else model.__call__
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    schedule = NoiseSchedule.from_config(config)
    abar_all = schedule.alphas_cumprod
    n, size = classes.numel(), config.image_size
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    x = torch.randn((n, config.in_channels, size, size), generator=generator, dtype=torch.float32)
    x = x.to(device=device, dtype=dtype)
    classes = classes.to(device)
    y_in = torch.cat([classes, torch.full_like(classes, config.null_class)])
    timesteps = schedule.sampling_timesteps(steps)
    x0 = x
    for i, t in enumerate(timesteps):
        t_in = torch.full((2 * n,), t, dtype=torch.long, device=device)
        eps_both = call(torch.cat([x, x]), t_in, y_in)
        eps_c, eps_u = eps_both[:n], eps_both[n:]
        eps = eps_u + cfg_scale * (eps_c - eps_u)
        abar = float(abar_all[t])
        abar_prev = float(abar_all[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        x0 = ((x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)).clamp(-1.0, 1.0)
        eps = (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
        x = math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * eps
        if on_step is not None:
            on_step(StepInfo(step=i, timestep=t, sigma=schedule.sigma(t), x0=to_unit(x0)))
    return to_unit(x0)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model-space images [n, 1, H, W] in [-1, 1] → [n, H, W] in [0, 1] (float32)."""
    return ((x[:, 0].float() + 1.0) / 2.0).clamp(0.0, 1.0)
