"""Expert pruning by a saliency criterion: disable each layer's lowest-scoring experts and measure the loss.

DeepSeekMoE's redundancy test disables experts and watches the loss; the pruning literature asks *which*
experts can go. REAP (arXiv 2510.13999) scores an expert by the mean of gate × output norm over the tokens
routed to it, EAN by the mean output norm, the oldest baseline by routing frequency. `probe_prune` puts the
criteria on one footing: it records a calibration run of the unedited model with expert output norms
(`NAME.base`, `record(expert_stats=True)`; or takes a given `calibration` run), scores every expert per
layer from it (`routescope.analysis.saliency`), and for every criterion and ratio R disables the
⌊R·E + ½⌋ lowest-scoring experts of every edited router — the same edit as the ablation probe
(`RouterEdit(disable=...)`: their router logits become −inf, the family renormalises over the rest) —
recording the edited model with its next-token loss (`NAME.CRITERION-R`). `routescope.analysis.pruning`
turns the runs into loss curves.

Scores: `reap` and `ean` from `saliency` (an expert never routed scores 0: it contributes nothing),
`frequency` the expert's dispatched assignments (`expert_load`), `random` a uniform draw per layer from
`numpy.random.default_rng(seed)` (layers in order). Lowest scores go first; ties to the lower expert id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from routescope.analysis.balance import expert_load
from routescope.analysis.saliency import saliency
from routescope.hooks.interventions import Intervention, RouterEdit, validate
from routescope.hooks.loaded import LoadedModel
from routescope.store.errors import InputError, RunExistsError
from routescope.store.reader import Run, Store

from .common import Inputs, RecordOptions, Sampling, check_inputs, choose_routers, describe, record_probe
from .metrics import quality

Criterion = Literal["reap", "ean", "frequency", "random"]
CRITERIA: tuple[Criterion, ...] = get_args(Criterion)


def check_ratio(ratio: float) -> float:
    """A prune ratio strictly between 0 and 1 (the share of each layer's experts to disable)."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise InputError(
            f"prune ratio {ratio!r} is not a number; give R with 0 < R < 1", field="ratio"
        ) from None
    if not 0.0 < value < 1.0:
        raise InputError(f"prune ratio {value:g} is outside (0, 1); give R with 0 < R < 1", field="ratio")
    return value


def check_criterion(criterion: str) -> Criterion:
    """One of `CRITERIA`, or a one-line refusal."""
    if criterion not in CRITERIA:
        raise InputError(
            f"unknown prune criterion {criterion!r}; choose from {', '.join(CRITERIA)}", field="criterion"
        )
    return criterion  # type: ignore[return-value]


def pruned_count(n_experts: int, ratio: float) -> int:
    """How many of `n_experts` a ratio disables: ⌊ratio · n + ½⌋ (round half up)."""
    return int(np.floor(ratio * n_experts + 0.5))


def run_name(name: str, criterion: str, ratio: float) -> str:
    """`NAME.CRITERION-R` (R as `%g`: `prune.reap-0.25`)."""
    return f"{name}.{criterion}-{ratio:g}"


def expert_scores(calibration: Run, criterion: Criterion, seed: int = 0) -> dict[int, np.ndarray]:
    """Layer → one score per expert (higher = keep), from the calibration run (see the module docstring)."""
    sizes: dict[int, int] = {}
    for router in calibration.info.routers:
        sizes[router.layer] = max(sizes.get(router.layer, 0), router.n_experts)
    if criterion == "random":
        rng = np.random.default_rng(seed)
        return {layer: rng.random(sizes[layer]) for layer in sorted(sizes)}
    if criterion == "frequency":
        table = expert_load(calibration, by=("layer",)).rename(columns={"count": "score"})
    else:
        table = saliency(calibration).rename(columns={criterion: "score"})
    scores = {layer: np.zeros(n) for layer, n in sizes.items()}
    for row in table[["layer", "expert", "score"]].itertuples(index=False):
        if int(row.layer) in scores and np.isfinite(row.score):
            scores[int(row.layer)][int(row.expert)] = float(row.score)
    return scores


def lowest(scores: np.ndarray, n: int) -> tuple[int, ...]:
    """The `n` experts with the lowest scores (ties: lower id), sorted by id."""
    order = np.lexsort((np.arange(len(scores)), scores))
    return tuple(sorted(int(e) for e in order[:n]))


def pruned_experts(
    scores: Mapping[int, np.ndarray], routers: Sequence[Mapping[str, Any]], ratio: float
) -> dict[str, tuple[int, ...]]:
    """Router path → the experts a ratio disables there (its layer's lowest-scoring share)."""
    chosen = {}
    for router in routers:
        layer, n = int(router["layer"]), int(router["n_experts"])
        if layer not in scores:
            raise InputError(f"the calibration run has no router at layer {layer}; record the same model")
        chosen[router["path"]] = lowest(scores[layer][:n], pruned_count(n, ratio))
    return chosen


@dataclass(frozen=True)
class PruneStudy:
    """The runs of one pruning comparison, all on the same inputs."""

    base: Run
    """The unedited model (`NAME.base`; the calibration run unless one was given)."""
    pruned: dict[tuple[str, float], Run]
    """(criterion, ratio) → the model with that share of experts disabled (`NAME.CRITERION-R`)."""


def _check(
    routers: Sequence[Mapping[str, Any]],
    all_routers: Sequence[Mapping[str, Any]],
    ratios: Sequence[float],
) -> None:
    """Refuse a ratio that disables no expert, or so many that fewer than top-k remain, before recording."""
    for ratio in ratios:
        for router in routers:
            n = pruned_count(int(router["n_experts"]), ratio)
            if n < 1:
                raise InputError(
                    f"prune ratio {ratio:g} disables none of the {router['n_experts']} experts at "
                    f"{router['path']}; give a larger R",
                    field="ratio",
                )
        stand_in = {
            r["path"]: RouterEdit(disable=tuple(range(pruned_count(int(r["n_experts"]), ratio))))
            for r in routers
        }
        validate(Intervention(edits=stand_in), all_routers)


def probe_prune(
    model: LoadedModel,
    inputs: Inputs,
    *,
    store: Store | str,
    name: str,
    criteria: Sequence[str] = ("reap",),
    ratios: Sequence[float] = (0.25,),
    calibration: Run | None = None,
    layers: Sequence[int] | None = None,
    seed: int = 0,
    options: RecordOptions | None = None,
) -> PruneStudy:
    """Record the base model and, per criterion and ratio, the model with each edited router's lowest-scoring
    share of experts disabled, each run carrying its next-token loss (text models only).

    Scores come from `calibration` (a run of the same model recorded with `expert_stats=True`; `frequency`
    and `random` need no output norms) or, when None, from `NAME.base`, recorded with expert output norms.
    Every check (criteria, ratios in (0, 1), layers, existing names) runs before the first recording.
    """
    check_inputs(model, inputs)
    if isinstance(inputs, Sampling):
        raise InputError("the prune probe measures next-token loss: give texts to a language model")
    options = options or RecordOptions()
    chosen = [check_criterion(c) for c in dict.fromkeys(criteria)]
    levels = sorted({check_ratio(r) for r in ratios})
    if not chosen or not levels:
        raise InputError("give at least one criterion and one ratio", field="ratio")
    needs_norms = any(c in ("reap", "ean") for c in chosen)
    if calibration is not None and needs_norms and "output_norms" not in calibration.info.caps:
        raise InputError(
            f"calibration run {calibration.name!r} has no expert output norms; record it with expert stats",
            field="expert_stats",
        )
    all_routers = describe(model, inputs)
    routers = choose_routers(all_routers, layers)
    _check(routers, all_routers, levels)
    target = store if isinstance(store, Store) else Store(store)
    names = [f"{name}.base", *(run_name(name, c, r) for c in chosen for r in levels)]
    taken = [n for n in names if target.exists(n)]
    if taken and not options.overwrite:
        raise RunExistsError(name=taken[0], store=target.path)
    record_options = options.for_inputs(inputs)
    base = record_probe(
        model,
        inputs,
        store=target,
        name=f"{name}.base",
        entry={"probe": "base", "params": {}, "base": None},
        metrics=quality(model, inputs, options),
        record_options={**record_options, "expert_stats": calibration is None},
    )
    source = calibration or base
    pruned: dict[tuple[str, float], Run] = {}
    for criterion in chosen:
        scores = expert_scores(source, criterion, seed)
        for ratio in levels:
            disabled = pruned_experts(scores, routers, ratio)
            params = {
                "criterion": criterion,
                "ratio": ratio,
                "layers": None if layers is None else list(layers),
                "seed": seed if criterion == "random" else None,
                "calibration": source.name,
            }
            pruned[(criterion, ratio)] = record_probe(
                model,
                inputs,
                store=target,
                name=run_name(name, criterion, ratio),
                entry={"probe": "prune", "params": params, "base": base.name},
                intervention=Intervention(
                    edits={r["path"]: RouterEdit(disable=disabled[r["path"]]) for r in routers}
                ),
                routers=all_routers,
                metrics=quality(model, inputs, options),
                record_options=record_options,
            )
    return PruneStudy(base=base, pruned=pruned)


__all__ = [
    "CRITERIA",
    "Criterion",
    "PruneStudy",
    "check_criterion",
    "check_ratio",
    "expert_scores",
    "lowest",
    "probe_prune",
    "pruned_count",
    "pruned_experts",
    "run_name",
]
