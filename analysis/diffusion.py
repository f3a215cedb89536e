"""Diffusion routing views (DiT-MoE, Switch-DiT): how expert usage moves across denoising steps.

`steps` is the load share of each expert at every step (DiT-MoE's layer × step view). `denoising_paths` is
Switch-DiT's *denoising path* view: per block and step, the share of decisions that use each expert and its
mean gate weight — for a timestep gate (one decision per image and step) that is which experts the block
uses at that noise level; for a token router, the share of patch tokens that do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import Run

from .balance import expert_load
from .frames import sql


def steps(run: Run) -> pd.DataFrame:
    """`layer, step, expert, count, load`: expert load per layer at every sampler step (both CFG branches;
    use `specialization(run, "branch", by=("layer", "step"))` to split them)."""
    return expert_load(run, by=("layer", "step"))[["layer", "step", "expert", "count", "load"]]


def denoising_paths(run: Run) -> pd.DataFrame:
    """`layer, step, timestep, expert, usage, weight`: which experts each block uses across the sampler steps.

    usage = (decisions at (layer, step) that chose the expert, at any rank) / (decisions at (layer, step)),
    so usage sums to k over a layer's experts; weight = Σ gate weight given to the expert / decisions (0
    where unchosen). Both CFG branches count; dropped assignments do not. Zero-filled over every expert of
    the layer; `timestep` comes from the run's steps table (null where the sampler gave none).

    >>> denoising_paths(run).groupby(["layer", "step"]).usage.sum().unique()  # doctest: +SKIP
    array([2.])
    """
    chosen = sql(
        run,
        "SELECT a.layer, a.step, a.expert, count(*) AS n, sum(a.weight) AS w FROM assignments a "
        "WHERE NOT a.dropped GROUP BY a.layer, a.step, a.expert",
    )
    totals = sql(
        run, "SELECT d.layer, d.step, count(*) AS decisions FROM decisions d GROUP BY d.layer, d.step"
    )
    columns = ["layer", "step", "timestep", "expert", "usage", "weight"]
    if totals.empty:
        return pd.DataFrame(columns=columns)
    sizes: dict[int, int] = {}
    for router in run.info.routers:
        sizes[router.layer] = max(sizes.get(router.layer, 0), router.n_experts)
    totals = totals.sort_values(["layer", "step"], ignore_index=True)
    repeat = totals["layer"].map(sizes).to_numpy()
    full = totals.loc[totals.index.repeat(repeat)].reset_index(drop=True)
    full["expert"] = full.groupby(["layer", "step"], sort=False).cumcount()
    full = full.merge(chosen, on=["layer", "step", "expert"], how="left").fillna({"n": 0, "w": 0.0})
    full["usage"] = full["n"] / full["decisions"]
    full["weight"] = full["w"] / full["decisions"]
    noise = run.steps()
    lookup = noise.set_index("step")["timestep"] if "timestep" in noise else pd.Series(dtype=float)
    full["timestep"] = full["step"].map(lookup).astype(float) if len(lookup) else np.nan
    return full[columns].astype({"layer": int, "step": int, "expert": int})
