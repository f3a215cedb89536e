"""Expert ablation: disable experts (one, a set, the top-r most used, or the shared expert) and measure.

DeepSeekMoE's causal test of specialisation: disable the top-ranked routed experts and the loss should
rise faster than when the same number of random experts is disabled. `probe_ablate` records one edited
run; `ablation_study` records the whole comparison — the unedited base (which also ranks the experts by
use), the ablation, and one random ablation per seed with the same number of experts at each router —
each run carrying the model's quality under its edit (`metrics.py`), which
`routescope.analysis.ablation` turns into tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from routescope.analysis.balance import expert_load
from routescope.hooks.interventions import Intervention, RouterEdit, validate
from routescope.hooks.loaded import LoadedModel
from routescope.store.errors import InputError
from routescope.store.reader import Run, Store

from .common import Inputs, RecordOptions, Sampling, check_inputs, choose_routers, describe, record_probe
from .metrics import quality

_NO_CHOICE = {"experts": None, "top": None}

Experts = Sequence[int] | Mapping[str, Sequence[int]]
"""The same experts at every chosen router, or router path → experts."""


def top_experts(run: Run, r: int, routers: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, ...]]:
    """Per router path, its `r` most-used experts in `run` (dispatched assignments, `expert_load` by
    router; ties: lower id)."""
    if r < 1:
        raise InputError(f"top must be ≥ 1, not {r}")
    load = expert_load(run, by=("router",))
    counts = load.set_index(["router", "expert"])["count"]
    ids = {info.path: info.id for info in run.info.routers}
    chosen: dict[str, tuple[int, ...]] = {}
    for router in routers:
        if router["path"] not in ids:
            raise InputError(f"base run {run.name!r} has no router {router['path']!r}; record the same model")
        n = int(router["n_experts"])
        use = np.zeros(n)
        if ids[router["path"]] in counts.index.get_level_values(0):
            per = counts.loc[ids[router["path"]]]
            use[per.index.to_numpy()] = per.to_numpy()
        order = sorted(range(n), key=lambda e: (-use[e], e))
        chosen[router["path"]] = tuple(sorted(order[:r]))
    return chosen


def random_experts(
    routers: Sequence[Mapping[str, Any]], counts: Mapping[str, int], seed: int
) -> dict[str, tuple[int, ...]]:
    """Per router, `counts[path]` experts drawn uniformly without replacement (numpy, seeded)."""
    rng = np.random.default_rng(seed)
    return {
        r["path"]: tuple(sorted(int(e) for e in rng.choice(int(r["n_experts"]), counts[r["path"]], False)))
        for r in routers
        if counts.get(r["path"])
    }


def _disabled(experts: Experts, routers: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, ...]]:
    if isinstance(experts, Mapping):
        known = {r["path"] for r in routers}
        unknown = sorted(set(experts) - known)
        if unknown:
            raise InputError(f"no router {unknown[0]!r} among the chosen ones: {', '.join(sorted(known))}")
        return {path: tuple(int(e) for e in chosen) for path, chosen in experts.items()}
    return {r["path"]: tuple(int(e) for e in experts) for r in routers}


def _intervention(
    routers: Sequence[Mapping[str, Any]], disabled: Mapping[str, tuple[int, ...]], shared: bool
) -> Intervention:
    return Intervention(
        edits={
            r["path"]: RouterEdit(disable=disabled.get(r["path"], ()), drop_shared=shared) for r in routers
        }
    )


def _ablated_run(
    model: LoadedModel,
    inputs: Inputs,
    *,
    store: Store | str,
    name: str,
    routers: Sequence[Mapping[str, Any]],
    all_routers: Sequence[Mapping[str, Any]],
    disabled: Mapping[str, tuple[int, ...]],
    shared: bool,
    params: Mapping[str, Any],
    base: str | None,
    options: RecordOptions,
) -> Run:
    intervention = _intervention(routers, disabled, shared)
    return record_probe(
        model,
        inputs,
        store=store,
        name=name,
        entry={"probe": "ablate", "params": dict(params), "base": base},
        intervention=intervention,
        routers=all_routers,
        metrics=quality(model, inputs, options),
        record_options=options.for_inputs(inputs),
    )


def probe_ablate(
    model: LoadedModel,
    inputs: Inputs,
    *,
    store: Store | str,
    name: str,
    experts: Experts | None = None,
    top: int | None = None,
    base: Run | None = None,
    layers: Sequence[int] | None = None,
    shared: bool = False,
    options: RecordOptions | None = None,
) -> Run:
    """Record `inputs` with experts disabled at the routers of `layers` (all MoE layers by default).

    Give `experts` (ids, the same at every router, or router path → ids) or `top` = r (each router's r
    most-used experts in the `base` run, which must record the same model), and/or `shared=True` to zero
    the shared expert(s). The run's probe entry holds the edit and the model's quality under it.
    """
    check_inputs(model, inputs)
    options = options or RecordOptions()
    all_routers = describe(model, inputs)
    routers = choose_routers(all_routers, layers)
    _check_choice(experts, top, shared, routers, all_routers)
    if top is not None:
        if base is None:
            raise InputError("top = r ranks experts by use in a base run; pass base= (or use ablation_study)")
        disabled = top_experts(base, top, routers)
    else:
        disabled = _disabled(experts or (), routers)
    params = {"experts": None if experts is None else _plain(experts), "top": top, "layers": layers}
    return _ablated_run(
        model,
        inputs,
        store=store,
        name=name,
        routers=routers,
        all_routers=all_routers,
        disabled=disabled,
        shared=shared,
        params={**params, "shared": shared, "random_seed": None},
        base=None if base is None else base.name,
        options=options,
    )


def _check_choice(
    experts: Experts | None,
    top: int | None,
    shared: bool,
    routers: Sequence[Mapping[str, Any]],
    all_routers: Sequence[Mapping[str, Any]],
) -> None:
    """Refuse a bad choice before anything is recorded (`top` is checked with a stand-in set of r)."""
    if experts is not None and top is not None:
        raise InputError("give the experts to disable or top = r, not both")
    if experts is None and top is None and not shared:
        raise InputError("give the experts to disable, top = r, and/or shared")
    if top is not None and top < 1:
        raise InputError(f"top must be ≥ 1, not {top}")
    stand_in = _disabled(experts, routers) if experts is not None else {}
    if top is not None:
        stand_in = {r["path"]: tuple(range(min(top, int(r["n_experts"])))) for r in routers}
        too_many = [r["path"] for r in routers if top > int(r["n_experts"])]
        if too_many:
            raise InputError(f"top = {top} is more than the experts at {too_many[0]}")
    validate(_intervention(routers, stand_in, shared), all_routers)


def _plain(experts: Experts) -> Any:
    if isinstance(experts, Mapping):
        return {k: [int(e) for e in v] for k, v in experts.items()}
    return [int(e) for e in experts]


@dataclass(frozen=True)
class AblationStudy:
    """The runs of one ablation comparison, all on the same inputs."""

    base: Run
    """The unedited model (`NAME.base`)."""
    ablated: Run
    """The chosen ablation (`NAME`)."""
    random: list[Run]
    """The same number of random experts per router, one run per seed (`NAME.random-SEED`)."""


def ablation_study(
    model: LoadedModel,
    inputs: Inputs,
    *,
    store: Store | str,
    name: str,
    experts: Experts | None = None,
    top: int | None = None,
    layers: Sequence[int] | None = None,
    shared: bool = False,
    seeds: int = 3,
    options: RecordOptions | None = None,
) -> AblationStudy:
    """Record the base model, the ablation and `seeds` random ablations of the same size (seeds 0..n-1).

    `top` = r ranks each router's experts by use in the base run just recorded. With `shared` only (no
    routed experts), no random runs are recorded: there is nothing random to match.
    """
    check_inputs(model, inputs)
    options = options or RecordOptions()
    if seeds < 0:
        raise InputError(f"seeds must be ≥ 0, not {seeds}")
    all_routers = describe(model, inputs)
    routers = choose_routers(all_routers, layers)
    _check_choice(experts, top, shared, routers, all_routers)
    base = record_probe(
        model,
        inputs,
        store=store,
        name=f"{name}.base",
        entry={"probe": "base", "params": {}, "base": None},
        metrics=quality(model, inputs, options),
        record_options=options.for_inputs(inputs),
    )
    ablated = probe_ablate(
        model,
        inputs,
        store=store,
        name=name,
        experts=experts,
        top=top,
        base=base,
        layers=layers,
        shared=shared,
        options=options,
    )
    intervention = ablated.manifest["model"]["probe"]["intervention"]["routers"]
    counts = {path: len(edit["disable"]) for path, edit in intervention.items()}
    randoms = []
    for seed in range(seeds if any(counts.values()) else 0):
        randoms.append(
            _ablated_run(
                model,
                inputs,
                store=store,
                name=f"{name}.random-{seed}",
                routers=routers,
                all_routers=all_routers,
                disabled=random_experts(routers, counts, seed),
                shared=shared,
                params={
                    "experts": None,
                    "top": None,
                    "layers": layers,
                    "shared": shared,
                    "random_seed": seed,
                },
                base=base.name,
                options=options,
            )
        )
    return AblationStudy(base=base, ablated=ablated, random=randoms)


__all__ = ["AblationStudy", "Sampling", "ablation_study", "probe_ablate", "random_experts", "top_experts"]
