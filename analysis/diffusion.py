"""Diffusion routing views (DiT-MoE, Switch-DiT): how expert usage moves across denoising steps."""

from __future__ import annotations

import pandas as pd

from routescope.store import Run

from .balance import expert_load


def steps(run: Run) -> pd.DataFrame:
    """`layer, step, expert, count, load`: expert load per layer at every sampler step (both CFG branches;
    use `specialization(run, "branch", by=("layer", "step"))` to split them)."""
    return expert_load(run, by=("layer", "step"))[["layer", "step", "expert", "count", "load"]]
