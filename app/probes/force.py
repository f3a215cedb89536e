"""Forced routing: send chosen tokens (or every token of a label) to a given expert set, and record it.

The forced run is an ordinary run of the same inputs, so every view compares it with the original
(`routescope.analysis.agreement`, the Compare page). Tokens are chosen with a `TokenSelection` (samples,
positions, token ids; classes and patch positions for diffusion) or by label (`where={"domain": "code"}`);
other tokens keep the model's own routing. With exactly `top_k` forced experts a selected token is
dispatched to exactly them, weighted the family's way over the forced set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from routescope.hooks.interventions import Intervention, RouterEdit, RowSelector, TokenSelection
from routescope.hooks.loaded import LoadedModel
from routescope.store.errors import InputError
from routescope.store.reader import Run, Store

from .common import (
    Inputs,
    RecordOptions,
    Sampling,
    check_inputs,
    choose_routers,
    chunk_size,
    describe,
    record_probe,
    text_token_ids,
)
from .rows import PatchRows, TextRows


def _where(
    selection: TokenSelection, where: Mapping[str, str], inputs: Inputs, options: RecordOptions
) -> TokenSelection:
    """Narrow a selection to the samples (text) or classes (diffusion) whose labels match `where`."""
    if isinstance(inputs, Sampling):
        unknown = sorted(set(where) - {"class"})
        if unknown:
            raise InputError(f"diffusion inputs have the label `class` only, not {unknown[0]!r}")
        classes = frozenset(int(c) for c in inputs.classes if str(c) == str(where["class"]))
        if not classes:
            raise InputError(
                f"class {where['class']!r} is not among the sampled classes {list(inputs.classes)}"
            )
        both = classes if selection.classes is None else classes & selection.classes
        return replace(selection, classes=both)
    labels = dict(options.labels or {})
    samples: set[int] | None = None
    for column, value in where.items():
        if column not in labels:
            raise InputError(f"no label column {column!r}; labels: {', '.join(labels) or 'none'}")
        matching = {i for i, v in enumerate(labels[column]) if str(v) == str(value)}
        samples = matching if samples is None else samples & matching
    if not samples:
        raise InputError(f"no input has the labels {dict(where)}")
    chosen = frozenset(samples) if selection.samples is None else frozenset(samples) & selection.samples
    return replace(selection, samples=chosen)


def _selector(
    model: LoadedModel, inputs: Inputs, selection: TokenSelection, options: RecordOptions
) -> RowSelector | None:
    if selection.everything:
        return None
    if isinstance(inputs, Sampling):
        rows, cols = getattr(model.model, "patch_grid", (0, 0))
        return PatchRows(selection, int(rows) * int(cols))
    return TextRows(selection, text_token_ids(model, inputs), chunk_size(model, options.chunk_size))


def probe_force(
    model: LoadedModel,
    inputs: Inputs,
    *,
    store: Store | str,
    name: str,
    experts: Sequence[int] | Mapping[str, Sequence[int]],
    layers: Sequence[int] | None = None,
    tokens: TokenSelection | None = None,
    where: Mapping[str, str] | None = None,
    stack: str | None = None,
    base: Run | None = None,
    options: RecordOptions | None = None,
) -> Run:
    """Record `inputs` with the selected tokens forced to `experts` at the routers of `layers` (all MoE
    layers by default; `stack` = `encoder`/`decoder` narrows encoder–decoder models). `experts` is one
    set for every router or router path → set; each set needs at least `top_k` experts."""
    check_inputs(model, inputs)
    options = options or RecordOptions()
    all_routers = describe(model, inputs)
    routers = choose_routers(all_routers, layers, stack)
    selection = tokens or TokenSelection()
    if where:
        selection = _where(selection, where, inputs, options)
    if isinstance(experts, Mapping):
        forced = {path: tuple(int(e) for e in chosen) for path, chosen in experts.items()}
        unknown = sorted(set(forced) - {r["path"] for r in routers})
        if unknown:
            raise InputError(f"no router {unknown[0]!r} among the chosen ones")
    else:
        forced = {r["path"]: tuple(int(e) for e in experts) for r in routers}
    selector = _selector(model, inputs, selection, options)
    if selector is not None and any(r.get("stack") == "decoder" for r in routers if r["path"] in forced):
        config = getattr(model.model, "config", None)
        if getattr(config, "is_encoder_decoder", False):
            raise InputError("a token selection applies to encoder routers; pass stack='encoder'")
    intervention = Intervention(
        edits={path: RouterEdit(force=chosen) for path, chosen in forced.items()}, tokens=selection
    )
    params: dict[str, Any] = {
        "experts": {p: list(e) for p, e in forced.items()},
        "layers": None if layers is None else list(layers),
        "stack": stack,
        "where": dict(where or {}),
    }
    return record_probe(
        model,
        inputs,
        store=store,
        name=name,
        entry={"probe": "force", "params": params, "base": None if base is None else base.name},
        intervention=intervention,
        routers=all_routers,
        selector=selector,
        record_options=options.for_inputs(inputs),
    )
