"""Switch-DiT's denoising-path claim, on runs whose routers are timestep gates.

Switch-DiT (Park et al. 2024) gates every block's experts by the timestep embedding alone and trains the
gates with a diffusion prior so that "similar tasks share their denoising paths while conflicting ones are
isolated". With one decision per (image, step, block) the path of an image at a step is a plain set: the
(block, expert) pairs its gates chose. This check compares the overlap of those sets between adjacent
sampler steps with their overlap between steps far apart. It applies only where routers have no position
(`RouterInfo.positions == "none"`): a token router has no single path per image and step.

The unit of independence is the generated image (`pair`: both CFG branches); the permutation shuffles the
order of the steps within each image (the same order for both branches), which keeps every image's
expert usage and breaks only the link between a path and its step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from ..bootstrap import unit_interval
from ..frames import sql
from ..permutation import DEFAULT_PERMUTATIONS, check_permutations, permutation_p
from ..units import unit_codes
from .language import ALPHA
from .verdict import Verdict, yes_no

ISOLATION = 0.5
"""Far-apart steps count as using different experts when the upper 95 % bound of (their path overlap ÷
the adjacent steps' overlap) is at most 0.5."""


def needs_step_gates(run: Run) -> str | None:
    """None for diffusion runs with routers that decide once per image and step; the reason otherwise."""
    if not run.info.is_diffusion:
        return "a claim about diffusion sampling; this is a text run"
    if not any(r.positions == "none" for r in run.info.routers):
        return "needs timestep-gated routers (one decision per image and step, no position)"
    return None


def _paths(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(paths [samples, steps, units] 0/1, sample ids, step ids) over the routers without positions."""
    routers = [r for r in run.info.routers if r.positions == "none"]
    ids = ", ".join(str(r.id) for r in routers)
    rows = sql(
        run,
        f"SELECT a.sample, a.step, a.router, a.call, a.expert FROM assignments a "
        f"WHERE a.router IN ({ids}) AND NOT a.dropped",
    )
    samples = np.sort(rows["sample"].unique())
    steps = np.sort(rows["step"].unique())
    offsets, width = {}, 0
    calls = rows.groupby("router")["call"].max().to_dict()
    for r in routers:
        for call in range(int(calls.get(r.id, 0)) + 1):
            offsets[(r.id, call)] = width
            width += r.n_experts
    base = np.array([offsets[(r, c)] for r, c in zip(rows["router"], rows["call"], strict=True)])
    paths = np.zeros((len(samples), len(steps), width), dtype=np.float64)
    paths[
        np.searchsorted(samples, rows["sample"]), np.searchsorted(steps, rows["step"]), base + rows["expert"]
    ] = 1
    return paths, samples, steps


def _jaccard(paths: np.ndarray) -> np.ndarray:
    """[samples, S, S] Jaccard overlap |a ∩ b| / |a ∪ b| of every two steps' paths."""
    shared = np.einsum("isu,itu->ist", paths, paths)
    sizes = paths.sum(axis=2)
    union = sizes[:, :, None] + sizes[:, None, :] - shared
    return np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)


def _pair_means(overlap: np.ndarray, order: np.ndarray, far: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: mean overlap of adjacent steps and of steps ≥ far apart, steps taken in `order` [n, S]."""
    n, s = order.shape
    a, b = np.triu_indices(s, k=1)
    gap = b - a
    rows = np.arange(n)[:, None]
    values = overlap[rows, order[:, a], order[:, b]]
    return values[:, gap == 1].mean(axis=1), values[:, gap >= far].mean(axis=1)


def switch_dit_shared_paths(
    run: Run, *, n_permutations: int = DEFAULT_PERMUTATIONS, n_boot: int = 1000, seed: int = 0
) -> Verdict:
    """Switch-DiT: denoising tasks at nearby timesteps share experts; distant ones use different experts.

    Criterion: an image's path at a step is the set of (block, expert) its timestep gates chose. With J
    the Jaccard overlap of two steps' paths, (i) the mean J of adjacent steps minus the mean J of steps at
    least a third of the schedule apart (≥ max(2, S // 3) steps) exceeds its permutation null (steps
    shuffled within each image, N permutations) at p < 0.01, and (ii) the upper 95 % bootstrap bound
    (over images) of far J ÷ adjacent J is at most 0.5. Step-blind gates give a difference near 0 and a
    ratio near 1; gates that never change give J = 1 everywhere (difference 0). Effect: adjacent J − far J.
    """
    n_permutations = check_permutations(n_permutations)
    paths, samples, steps = _paths(run)
    n_steps = len(steps)
    if n_steps < 4:
        raise InputError(f"run {run.name!r} has {n_steps} steps; the shared-path claim needs at least 4")
    far = max(2, n_steps // 3)
    overlap = _jaccard(paths)
    codes = unit_codes(run).set_index("sample")["unit"]
    unit = codes.reindex(samples).to_numpy()
    n_units = int(unit.max()) + 1
    identity = np.broadcast_to(np.arange(n_steps), (len(samples), n_steps))
    adjacent, distant = _pair_means(overlap, identity, far)
    observed = float(adjacent.mean() - distant.mean())
    rng = np.random.default_rng(seed)
    null = np.empty(n_permutations)
    for i in range(n_permutations):
        orders = np.argsort(rng.random((n_units, n_steps)), axis=1)[unit]  # one order per image
        adj, dist = _pair_means(overlap, orders, far)
        null[i] = adj.mean() - dist.mean()
    p_value = permutation_p(observed, null)
    per_unit = np.zeros((n_units, 3))
    np.add.at(per_unit, unit, np.stack([adjacent, distant, np.ones(len(samples))], axis=1))
    effect, lo, hi = unit_interval(
        per_unit, lambda m: (m[:, 0] - m[:, 1]) / m[:, 2], n_boot=n_boot, seed=seed
    )
    ratio, ratio_lo, ratio_hi = unit_interval(
        per_unit, lambda m: m[:, 1] / np.maximum(m[:, 0], 1e-12), n_boot=n_boot, seed=seed
    )
    ok = bool(p_value < ALPHA and ratio_hi <= ISOLATION)
    details = pd.DataFrame(
        [
            {
                "adjacent_overlap": float(adjacent.mean()),
                "far_overlap": float(distant.mean()),
                "far": far,
                "far_over_adjacent": ratio,
                "ratio_lo": ratio_lo,
                "ratio_hi": ratio_hi,
                "steps": n_steps,
                "images": n_units,
            }
        ]
    )
    return Verdict(
        claim="switch-dit-shared-paths",
        reproduces=ok,
        statistic="mean Jaccard overlap of adjacent steps' denoising paths − that of steps ≥ S/3 apart",
        value=observed,
        null=f"step order shuffled within each image ({n_permutations} permutations): step-blind gates",
        p_value=p_value,
        null_reference=float(null.mean()),
        n_permutations=n_permutations,
        seed=seed,
        unit="pair",
        effect="adjacent − far path overlap (Jaccard)",
        effect_size=effect,
        effect_lo=lo,
        effect_hi=hi,
        sentence=(
            f"Shared denoising paths {yes_no(ok)}: adjacent steps share {adjacent.mean():.2f} of their "
            f"path (Jaccard), steps ≥ {far} apart {distant.mean():.2f} (ratio {ratio:.2f} "
            f"[{ratio_lo:.2f}, {ratio_hi:.2f}], p = {p_value:.3g})."
        ),
        details=details,
    )
