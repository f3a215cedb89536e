"""The configuration record of switch-dit-digits: dit-digits' geometry and schedule plus the Switch-DiT parts.

The model shares data, patch grid, conditioning and DDPM schedule with `dit-digits` (so the same sampler,
noise schedule and quality classifier serve both), which is why the record extends `DiTDigitsConfig`; what
is new is the routing: a gate per block that reads only the timestep embedding, and the diffusion-prior
Jensen–Shannon loss that replaces the balance loss (`balance_alpha` is kept at 0 and unused).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dit_digits.config import DiTDigitsConfig


@dataclass(frozen=True)
class SwitchDiTConfig(DiTDigitsConfig):
    """dit-digits' settings (inherited) plus the Switch-DiT gate and prior; defaults: the shipped model."""

    model_type: str = "switch_dit"
    balance_alpha: float = 0.0
    """Unused: Switch-DiT balances experts through the diffusion prior, not an auxiliary balance loss."""
    jsd_weight: float = 1.0
    """Weight of the diffusion-prior JSD loss (the released Switch-DiT code's `w_JSD`, default 1)."""
    prior_alpha: float = 1.0
    """The prior window's start moves as (t / (T-1)) ** prior_alpha across the units (1 = evenly)."""
