"""Router stability: record the model with Gaussian noise on its router inputs (or logits).

GW-MoE's claim is that uncertain tokens — routed with near-equal scores — are fragile. The noisy run
records what the routers chose under noise; `routescope.analysis.stability` joins it with an unedited
run of the same inputs and reports the top-1 flip rate against the base run's margin and entropy.
Input noise has standard deviation σ × the token's RMS at the router input (so σ = 0.01 is 1 % noise
whatever the model's scale); logit noise has σ in logit units. σ = 0 changes nothing, bit for bit.
Noise at one layer also changes the hidden states of later layers: pass `layers` to perturb one router
and read its flips alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from routescope.hooks.interventions import Intervention, RouterEdit, validate
from routescope.hooks.loaded import LoadedModel
from routescope.store.errors import InputError
from routescope.store.reader import Run, Store

from .common import Inputs, RecordOptions, check_inputs, choose_routers, describe, record_probe

NoiseTarget = Literal["input", "logits"]
NOISE_TARGETS: tuple[NoiseTarget, ...] = ("input", "logits")


def noise_intervention(
    model: LoadedModel,
    inputs: Inputs,
    *,
    sigma: float,
    on: NoiseTarget = "input",
    layers: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[Intervention, list[dict]]:
    """The checked noise edit and the model's routers — a bad `on`, σ or layer is a one-line error here,
    before any run (a base run included) is recorded."""
    check_inputs(model, inputs)
    if on not in NOISE_TARGETS:
        raise InputError(f"noise goes on the router input or logits, not {on!r}")
    all_routers = describe(model, inputs)
    routers = choose_routers(all_routers, layers)
    edit = RouterEdit(input_noise=sigma) if on == "input" else RouterEdit(logit_noise=sigma)
    intervention = Intervention(edits={r["path"]: edit for r in routers}, seed=seed)
    validate(intervention, all_routers)
    return intervention, list(all_routers)


def probe_noise(
    model: LoadedModel,
    inputs: Inputs,
    *,
    store: Store | str,
    name: str,
    sigma: float,
    on: NoiseTarget = "input",
    layers: Sequence[int] | None = None,
    seed: int = 0,
    base: Run | None = None,
    options: RecordOptions | None = None,
) -> Run:
    """Record `inputs` with noise of scale `sigma` on the router `on` input or logits at `layers` (all
    MoE layers by default), drawn from a generator seeded with `seed`."""
    intervention, all_routers = noise_intervention(
        model, inputs, sigma=sigma, on=on, layers=layers, seed=seed
    )
    options = options or RecordOptions()
    params = {"sigma": sigma, "on": on, "layers": None if layers is None else list(layers), "seed": seed}
    return record_probe(
        model,
        inputs,
        store=store,
        name=name,
        entry={"probe": "noise", "params": params, "base": None if base is None else base.name},
        intervention=intervention,
        routers=all_routers,
        record_options=options.for_inputs(inputs),
    )
