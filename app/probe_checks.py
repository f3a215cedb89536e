"""Checks a probe's edit against the loaded model before anything is recorded (`ProbeRequest.execute`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from routescope.hooks import LoadedModel
from routescope.hooks.interventions import Intervention, RouterEdit, validate
from routescope.probes import Sampling, describe
from routescope.probes.common import Inputs as ProbeInputs
from routescope.probes.common import choose_routers
from routescope.store import InputError

if TYPE_CHECKING:
    from .requests import ProbeSettings


def check_where(where: Mapping[str, str], inputs: ProbeInputs, labels: Mapping[str, Sequence[Any]]) -> None:
    """Refuse a label selection no input matches."""
    if isinstance(inputs, Sampling):
        if set(where) - {"class"}:
            raise InputError(f"diffusion inputs have the label `class` only, not {sorted(set(where))[0]!r}")
        if "class" in where and where["class"] not in {str(c) for c in inputs.classes}:
            raise InputError(f"class {where['class']!r} is not among the sampled classes")
        return
    matching = set(range(len(inputs)))
    for column, value in where.items():
        if column not in labels:
            raise InputError(f"no label column {column!r}; labels: {', '.join(labels) or 'none'}")
        matching &= {i for i, v in enumerate(labels[column]) if str(v) == value}
    if not matching:
        raise InputError(f"no input has the labels {dict(where)}")


def check_edit(
    model: LoadedModel, inputs: ProbeInputs, labels: Mapping[str, Sequence[Any]], settings: ProbeSettings
) -> None:
    """Refuse an edit this model cannot take (a layer without a router, an expert out of range, too many
    disabled, a forced set smaller than top-k, a label no input has) before anything is recorded."""
    from .requests import Ablate, Batch, Force, Prune

    if isinstance(settings, (Ablate, Batch, Prune)):
        return  # ablation_study, probe_batch and probe_prune check everything before their first run
    if (model.sampler is None) == isinstance(inputs, Sampling):
        kind = "a diffusion model: give classes" if model.sampler is not None else "a text model: give text"
        raise InputError(f"{model.spec or 'this model'} is {kind}")
    all_routers = describe(model, inputs)
    stack = settings.stack if isinstance(settings, Force) else None
    routers = choose_routers(all_routers, settings.layers, stack)
    if isinstance(settings, Force):
        if settings.where:
            check_where(settings.where, inputs, labels)
        edit = RouterEdit(force=tuple(settings.experts))
    elif settings.on == "input":
        edit = RouterEdit(input_noise=settings.sigma)
    else:
        edit = RouterEdit(logit_noise=settings.sigma)
    validate(Intervention(edits={r["path"]: edit for r in routers}), all_routers)
