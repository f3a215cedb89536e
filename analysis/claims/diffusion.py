"""Claims about diffusion routing: DiT-MoE's position/step/class sensitivity, depth dispersion and
early-step specialization, and Switch-DiT's denoising phases.

The unit of independence is the generated image with both CFG branches (`pair`). Every criterion below was
fixed before it was run on a bundled model; intervals are 95 % percentile bootstraps over images, paired
(the same resampled images) when two quantities are compared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import Run

from ..bootstrap import unit_interval
from ..contingency import UnitTable, unit_tables
from ..frames import load_entropy
from ..information import nmi
from ..permutation import DEFAULT_PERMUTATIONS
from ..specialization import label_nmi
from ..units import count_units
from .language import ALPHA, check_resolution
from .verdict import Verdict, yes_no

CLASS_MARGIN = 0.01
"""Equivalence margin of `dit-moe-position-step-not-class`: the class effect counts as absent when the
upper 95 % bound of its excess NMI (over the permutation mean) stays below 0.01."""
BALANCE_MARGIN = 0.02
"""`dit-moe-depth-dispersion`: the last layer counts as at least as balanced as the first when the lower
95 % bound of (its normalised load entropy − the first layer's) is above −0.02."""


def needs_diffusion(run: Run) -> str | None:
    """None for diffusion runs; the reason otherwise."""
    return None if run.info.is_diffusion else "a claim about diffusion sampling; this is a text run"


def needs_patches(run: Run) -> str | None:
    """None for diffusion runs whose routers decide per patch token; the reason otherwise (DiT-MoE's
    claims are about patch positions, which timestep-gated routers do not have)."""
    reason = needs_diffusion(run)
    if reason:
        return reason
    if "positions" not in run.info.caps:
        return "a claim about per-patch routing; this run's routers have no positions (timestep gates)"
    return None


def needs_class(run: Run) -> str | None:
    reason = needs_patches(run)
    if reason:
        return reason
    return None if "class" in run.label_columns else "needs class-conditional samples (a `class` label)"


def _excess_nmi_interval(run: Run, label: str, layer: int, null_mean: float, n_boot: int, seed: int):
    data = unit_tables(run, label, ("layer",))[(layer,)]
    n_labels, n_experts = len(data.values), data.counts.shape[1]
    return unit_interval(
        data.per_unit(),
        lambda m: nmi(m.reshape(len(m), n_labels, n_experts)) - null_mean,
        n_boot=n_boot,
        seed=seed,
    )


def dit_moe_position_step_not_class(
    run: Run,
    *,
    margin: float = CLASS_MARGIN,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_boot: int = 1000,
    seed: int = 0,
) -> Verdict:
    """DiT-MoE §4.4 (i): expert choice depends on spatial position and on the denoising step, hardly on
    the class label.

    Criterion, at every layer: (a) NMI(position; expert) and NMI(step; expert) each exceed their
    permutation nulls (labels shuffled among the decisions of one image) with p · L ≤ 0.01; (b) the class
    effect is absent by an equivalence margin: the upper 95 % bootstrap bound of the excess NMI(class;
    expert) — NMI minus its permutation mean with classes shuffled between images — is below `margin`
    (0.01). Effect: the largest excess class NMI over layers, with its interval."""
    check_resolution(run, n_permutations)
    frames = {
        label: label_nmi(run, label, n_permutations=n_permutations, seed=seed)
        for label in ("position", "step", "class")
    }
    n_layers = len(frames["class"])
    rows = []
    for layer in frames["class"]["layer"]:
        cls = frames["class"].set_index("layer").loc[layer]
        estimate, lo, hi = _excess_nmi_interval(
            run, "class", int(layer), float(cls["null_mean"]), n_boot, seed
        )
        row = {"layer": int(layer), "class_excess": estimate, "class_excess_lo": lo, "class_excess_hi": hi}
        for label in ("position", "step"):
            part = frames[label].set_index("layer").loc[layer]
            row[f"nmi_{label}"] = float(part["nmi"])
            row[f"p_{label}"] = min(1.0, float(part["p_value"]) * n_layers)
        row["nmi_class"] = float(cls["nmi"])
        rows.append(row)
    details = pd.DataFrame(rows)
    dependence = bool(((details["p_position"] <= ALPHA) & (details["p_step"] <= ALPHA)).all())
    absent = bool((details["class_excess_hi"] < margin).all())
    worst = details.loc[details["class_excess"].idxmax()]
    ok = dependence and absent
    return Verdict(
        claim="dit-moe-position-step-not-class",
        reproduces=ok,
        statistic=f"excess NMI(class; expert) at layer {int(worst['layer'])}",
        value=float(worst["class_excess"]),
        null=(
            "position and step: shuffled among the decisions of one image; class: shuffled between images; "
            f"absence of a class effect: equivalence margin {margin} on its excess NMI"
        ),
        p_value=float(details[["p_position", "p_step"]].to_numpy().max()),
        null_reference=margin,
        n_permutations=n_permutations,
        seed=seed,
        unit=str(frames["class"]["unit"].iloc[0]),
        effect="largest excess NMI(class; expert) over layers",
        effect_size=float(worst["class_excess"]),
        effect_lo=float(worst["class_excess_lo"]),
        effect_hi=float(worst["class_excess_hi"]),
        sentence=(
            f"Position and step, not class, {yes_no(ok)}: position and step matter at every layer: "
            f"{dependence} (NMI {details['nmi_position'].min():.3f}+ and {details['nmi_step'].min():.3f}+); "
            f"class effect below the margin {margin} at every layer: {absent} (largest upper bound "
            f"{details['class_excess_hi'].max():.4f}, {count_units(run)} images)."
        ),
        details=details,
    )


def _position_per_unit(
    run: Run, by: tuple[str, ...]
) -> tuple[dict[tuple, np.ndarray], dict[tuple, UnitTable]]:
    tables = unit_tables(run, "position", by)
    n_units = count_units(run)
    return {key: data.per_unit(n_units) for key, data in tables.items()}, tables


def dit_moe_depth_dispersion(
    run: Run, *, margin: float = BALANCE_MARGIN, n_boot: int = 1000, seed: int = 0
) -> Verdict:
    """DiT-MoE §4.4 (ii): with depth, selection moves from position-specific to dispersed and balanced.

    Criterion: between the first and the last MoE layer, (a) NMI(position; expert) falls — the 95 %
    bootstrap interval of NMI(first) − NMI(last) lies above 0; (b) the last layer is at least as balanced
    — the lower bound of its normalised load entropy minus the first layer's is above −`margin` (0.02).
    Both intervals use the same resampled images. Effect: the drop in position NMI."""
    per_unit, tables = _position_per_unit(run, ("layer",))
    layers = sorted(key[0] for key in per_unit)
    first, last = layers[0], layers[-1]
    shapes = {
        layer: (len(tables[(layer,)].values), tables[(layer,)].counts.shape[1]) for layer in (first, last)
    }
    split = per_unit[(first,)].shape[1]
    matrix = np.concatenate([per_unit[(first,)], per_unit[(last,)]], axis=1)

    def layer_nmi(m: np.ndarray, layer: int) -> np.ndarray:
        part = m[:, :split] if layer == first else m[:, split:]
        return nmi(part.reshape(len(m), *shapes[layer]))

    def norm_entropy(m: np.ndarray, layer: int) -> np.ndarray:
        part = m[:, :split] if layer == first else m[:, split:]
        load = part.reshape(len(m), *shapes[layer]).sum(axis=1)
        return load_entropy(load / np.maximum(load.sum(axis=1, keepdims=True), 1e-300), axis=1)

    drop, drop_lo, drop_hi = unit_interval(
        matrix, lambda m: layer_nmi(m, first) - layer_nmi(m, last), n_boot=n_boot, seed=seed
    )
    gain, gain_lo, gain_hi = unit_interval(
        matrix, lambda m: norm_entropy(m, last) - norm_entropy(m, first), n_boot=n_boot, seed=seed
    )
    dispersed, balanced = drop_lo > 0, gain_lo > -margin
    ok = bool(dispersed and balanced)
    details = pd.DataFrame(
        {
            "quantity": ["nmi_position_drop", "norm_entropy_gain"],
            "estimate": [drop, gain],
            "lo": [drop_lo, gain_lo],
            "hi": [drop_hi, gain_hi],
        }
    )
    return Verdict(
        claim="dit-moe-depth-dispersion",
        reproduces=ok,
        statistic=f"NMI(position; expert) at layer {first} − at layer {last}",
        value=drop,
        null=f"no drop with depth (interval must exclude 0); balance margin {margin}",
        p_value=None,
        null_reference=0.0,
        n_permutations=0,
        seed=seed,
        unit=tables[(first,)].unit,
        effect="drop of position NMI from the first to the last MoE layer",
        effect_size=drop,
        effect_lo=drop_lo,
        effect_hi=drop_hi,
        sentence=(
            f"Dispersion with depth {yes_no(ok)}: position NMI falls by {drop:.3f} "
            f"[{drop_lo:.3f}, {drop_hi:.3f}] from layer {first} to {last}; load entropy changes by "
            f"{gain:+.3f} [{gain_lo:+.3f}, {gain_hi:+.3f}] (margin −{margin})."
        ),
        details=details,
    )


def dit_moe_early_steps(run: Run, *, n_boot: int = 1000, seed: int = 0) -> Verdict:
    """DiT-MoE §4.4 (iii): expert specialization is concentrated at the early (noisy) timesteps.

    Criterion: at every layer, the mean over the first third of sampler steps of NMI(position; expert)
    (computed per step) minus its mean over the last third has a 95 % bootstrap interval above 0. Step 0
    is the noisiest. Effect: the smallest early-minus-late difference over layers."""
    per_unit, tables = _position_per_unit(run, ("layer", "step"))
    rows = []
    for layer in sorted({key[0] for key in per_unit}):
        steps = sorted(key[1] for key in per_unit if key[0] == layer)
        third = max(1, len(steps) // 3)
        early, late = steps[:third], steps[-third:]
        shapes = [(len(tables[(layer, s)].values), tables[(layer, s)].counts.shape[1]) for s in early + late]
        blocks = [per_unit[(layer, s)] for s in early + late]
        bounds = np.cumsum([0] + [b.shape[1] for b in blocks])
        matrix = np.concatenate(blocks, axis=1)

        def difference(m: np.ndarray, shapes=shapes, bounds=bounds, third=third) -> np.ndarray:
            values = [
                nmi(m[:, bounds[i] : bounds[i + 1]].reshape(len(m), *shape)) for i, shape in enumerate(shapes)
            ]
            return np.mean(values[:third], axis=0) - np.mean(values[third:], axis=0)

        estimate, lo, hi = unit_interval(matrix, difference, n_boot=n_boot, seed=seed)
        rows.append(
            {"layer": int(layer), "early_minus_late": estimate, "lo": lo, "hi": hi, "steps": len(steps)}
        )
    details = pd.DataFrame(rows)
    ok = bool((details["lo"] > 0).all())
    worst = details.loc[details["early_minus_late"].idxmin()]
    return Verdict(
        claim="dit-moe-early-steps",
        reproduces=ok,
        statistic=f"position NMI, first third of steps − last third, at layer {int(worst['layer'])}",
        value=float(worst["early_minus_late"]),
        null="no difference between early and late steps (interval must exclude 0)",
        p_value=None,
        null_reference=0.0,
        n_permutations=0,
        seed=seed,
        unit=next(iter(tables.values())).unit,
        effect="smallest early-minus-late position NMI over layers",
        effect_size=float(worst["early_minus_late"]),
        effect_lo=float(worst["lo"]),
        effect_hi=float(worst["hi"]),
        sentence=(
            f"Early-step specialization {yes_no(ok)}: the weakest layer ({int(worst['layer'])}) has "
            f"{worst['early_minus_late']:+.3f} [{worst['lo']:+.3f}, {worst['hi']:+.3f}] more position NMI "
            "over the first third of steps than over the last."
        ),
        details=details,
    )


def _js_ratio(loads: np.ndarray, far: int) -> np.ndarray:
    """Mean JS divergence of step loads ≥ `far` steps apart over that of adjacent steps, per batch row of
    `[B, S, E]` step × expert counts."""
    p = loads / np.maximum(loads.sum(axis=2, keepdims=True), 1e-300)
    a, b = p[:, :, None, :], p[:, None, :, :]
    m = (a + b) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_a = np.where(a > 0, a * np.log(a / m), 0.0).sum(axis=3)
        kl_b = np.where(b > 0, b * np.log(b / m), 0.0).sum(axis=3)
    js = (kl_a + kl_b) / 2
    gap = np.abs(np.arange(p.shape[1])[:, None] - np.arange(p.shape[1])[None, :])
    return js[:, gap >= far].mean(axis=1) / np.maximum(js[:, gap == 1].mean(axis=1), 1e-300)


def switch_dit_phases(run: Run, *, n_boot: int = 1000, seed: int = 0) -> Verdict:
    """Switch-DiT: steps with similar noise levels share routing (denoising phases).

    Criterion: at every layer, the mean Jensen–Shannon divergence between the expert loads of steps at
    least a third of the schedule apart (≥ max(2, S // 3) steps), divided by that of adjacent steps, has a
    95 % bootstrap interval above 1. Routing that ignores the step gives a ratio near 1 (the sampling
    noise of both means is alike). Effect: the smallest ratio over layers."""
    tables = unit_tables(run, "step", ("layer",))
    n_units = count_units(run)
    rows = []
    for (layer,), data in tables.items():
        n_steps, n_experts = len(data.values), data.counts.shape[1]
        order = np.argsort([int(v) for v in data.values])
        far = max(2, n_steps // 3)

        def ratio(m: np.ndarray, n_steps=n_steps, n_experts=n_experts, order=order, far=far) -> np.ndarray:
            return _js_ratio(m.reshape(len(m), n_steps, n_experts)[:, order], far)

        estimate, lo, hi = unit_interval(data.per_unit(n_units), ratio, n_boot=n_boot, seed=seed)
        rows.append({"layer": int(layer), "far_over_adjacent": estimate, "lo": lo, "hi": hi, "far": far})
    details = pd.DataFrame(rows)
    ok = bool((details["lo"] > 1).all())
    worst = details.loc[details["far_over_adjacent"].idxmin()]
    return Verdict(
        claim="switch-dit-phases",
        reproduces=ok,
        statistic=f"JS(far steps) / JS(adjacent steps) at layer {int(worst['layer'])}",
        value=float(worst["far_over_adjacent"]),
        null="step-blind routing gives a ratio of 1 (interval must exclude 1)",
        p_value=None,
        null_reference=1.0,
        n_permutations=0,
        seed=seed,
        unit=next(iter(tables.values())).unit,
        effect="smallest far-over-adjacent JS ratio over layers",
        effect_size=float(worst["far_over_adjacent"]),
        effect_lo=float(worst["lo"]),
        effect_hi=float(worst["hi"]),
        sentence=(
            f"Denoising phases {yes_no(ok)}: at the weakest layer ({int(worst['layer'])}) steps "
            f"≥ {int(worst['far'])} apart diverge {worst['far_over_adjacent']:.2f}× "
            f"[{worst['lo']:.2f}, {worst['hi']:.2f}] as much as adjacent steps."
        ),
        details=details,
    )
