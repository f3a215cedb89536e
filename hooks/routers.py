"""Find every router in a model and describe it once, in the manifest's terms.

Discovery, in order of trust:
1. routers the user declares (`routers=["model.layers.0.mlp.gate", ...]` or a dict of path → `DecodeRule`);
2. transformers' own declaration: every `PreTrainedModel` class lists its router class and the index of
   the logits in its output (`_can_record_outputs["router_logits"]`);
3. a heuristic for plain `torch.nn.Module`s: a child called `gate`/`router`/`gating`/`wg` whose parent
   also holds `experts`.
One forward pass (the first batch, or a dry run on two tokens) then fixes what only execution shows:
the order in which routers run, how many times each runs per forward pass (shared-layer models), the
output convention, the number of experts and k. Two facts come from the MoE block instead: expert choice
(a block with a `capacity_factor`, `experts` and no `top_k`, such as diffusers' NucleusMoELayer, whose
gate returns bare logits) and zero-computation experts (LongCat-Flash's `zero_expert_num` identity
experts, the ids after the block's `num_routed_experts`). Router ids follow execution order; `layer` is
the first integer in the module path (the model's own numbering), so dense layers are simply absent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from routescope.store.errors import NoRoutersError

from .capture import collect_outputs
from .families import family_info
from .normalise import Choice, DecodeRule, detect_convention, normalise

HEURISTIC_NAMES = ("gate", "router", "gating", "wg")
SHARED_EXPERT_NAMES = ("shared_expert", "shared_experts", "shared_mlp")
_INT = re.compile(r"^\d+$")
log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RouterSpec:
    """One router as the manifest lists it."""

    id: int
    """Position in execution order; the `router` column of the fact tables."""
    path: str
    """Module path as in `model.named_modules()`."""
    layer: int
    """First integer in the path (the model's own layer number), else the router's id."""
    call_count: int
    """Times the router runs in one forward pass (> 1 for layers shared across depth)."""
    kind: str
    """`attention` for mixture-of-attention routers, else `ffn`."""
    stack: str
    """`encoder` or `decoder` (decoder-only models: `decoder`)."""
    n_experts: int
    """Experts the router scores (zero-computation experts included)."""
    top_k: int
    """Experts per decision: k for token choice; for expert choice E, the most a token can get (how many
    it did get varies: count its `assignments` rows)."""
    shared_experts: list[str] = field(default_factory=list)
    """Module paths of always-on shared experts beside this router."""
    router_class: str = ""
    convention: str = "triple"
    scoring: str = "softmax"
    pnorm: float | None = None
    positions: str = "token"
    """`token`, or `none` for a router that decides once per sample and step (its module declares
    `router_positions = "none"`, e.g. a gate over the timestep embedding); see RouterInfo.positions."""
    choice: Choice = "token"
    """Who chooses: `token` (each token its top-k experts) or `expert` (each expert its tokens)."""
    capacity_factor: float | None = None
    """Expert choice only: each expert takes max(1, ⌈capacity_factor · S / E⌉) tokens of a sequence."""
    weight_scale: float = 1.0
    """Expert choice only: the constant the block scales the renormalised weights by."""
    zero_experts: list[int] = field(default_factory=list)
    """Expert ids that compute nothing (identity or zero output: LongCat-Flash's zero experts); they are
    recorded like any choice and left out of load and specialization (docs/format.md)."""
    skip_expert: int | None = None
    """The no-compute skip class a router returns as (expert 0, weight 0) (ZAYA); see DecodeRule."""

    @property
    def rule(self) -> DecodeRule:
        return DecodeRule(
            convention=self.convention,  # type: ignore[arg-type]
            scoring=self.scoring,  # type: ignore[arg-type]
            top_k=self.top_k,
            pnorm=self.pnorm,
            capacity_factor=self.capacity_factor,
            weight_scale=self.weight_scale,
            skip_expert=self.skip_expert,
        )

    def to_manifest(self) -> dict[str, Any]:
        out = asdict(self)
        if out["skip_expert"] is None:  # only ZAYA's routers have the key
            del out["skip_expert"]
        return out


def layer_of(path: str) -> int | None:
    """The first integer component of a module path (`model.layers.3.mlp.gate` → 3)."""
    for part in path.split("."):
        if _INT.match(part):
            return int(part)
    return None


def _router_classes(model: torch.nn.Module) -> list[type]:
    recorders = getattr(type(model), "_can_record_outputs", None) or {}
    found: list[type] = []
    for key in ("router_logits", "encoder_router_logits", "decoder_router_logits"):
        entry = recorders.get(key)
        for recorder in entry if isinstance(entry, list | tuple) else [entry]:
            target = getattr(recorder, "target_class", recorder)
            if isinstance(target, type) and target not in found:
                found.append(target)
    for module in model.modules():  # a wrapper (e.g. *ForCausalLM) may inherit no declaration; ask its parts
        if (
            module is not model
            and isinstance(module, torch.nn.Module)
            and hasattr(type(module), "_can_record_outputs")
        ):
            for cls in _router_classes_shallow(module):
                if cls not in found:
                    found.append(cls)
    return found


def _router_classes_shallow(module: torch.nn.Module) -> list[type]:
    recorders = getattr(type(module), "_can_record_outputs", None) or {}
    entry = recorders.get("router_logits")
    targets = entry if isinstance(entry, list | tuple) else [entry]
    return [t for t in (getattr(r, "target_class", r) for r in targets) if isinstance(t, type)]


def candidate_paths(
    model: torch.nn.Module, declared: Sequence[str] | Mapping[str, Any] | None = None
) -> list[str]:
    """Module paths of the routers, before the dry run (declared, then transformers', then heuristic)."""
    names = dict(model.named_modules())
    if declared:
        missing = [p for p in declared if p not in names]
        if missing:
            raise NoRoutersError(f"declared router path(s) not in the model: {', '.join(missing)}")
        return list(declared)
    classes = tuple(_router_classes(model))
    if classes:
        found = [path for path, module in names.items() if isinstance(module, classes)]
        # a declared MoE *block* holding no experts itself but sub-blocks with their own routers
        # (ERNIE-4.5-VL's text and vision MoEs): record those routers, whose output says what was chosen
        found = [inner for path in found for inner in (_inner_routers(names, path) or [path])]
        if found:
            return found
    found = _inner_routers(names, "")
    if not found:
        raise NoRoutersError(
            f"no routers found in {type(model).__name__}: searched transformers' router_logits declaration "
            f"and modules named {'/'.join(HEURISTIC_NAMES)} beside `experts`; declare them with routers=[...]"
        )
    return found


def _inner_routers(names: dict[str, torch.nn.Module], prefix: str) -> list[str]:
    """Heuristic routers under `prefix` ("" = the whole model): modules named gate/router/gating/wg whose
    parent holds `experts`; none when the module at `prefix` holds `experts` itself (it is a router's
    parent, or a router)."""
    if prefix and hasattr(names[prefix], "experts"):
        return []
    found = []
    for path in names:
        if prefix and not path.startswith(f"{prefix}."):
            continue
        parent_path, _, leaf = path.rpartition(".")
        parent = names.get(parent_path)
        if leaf in HEURISTIC_NAMES and parent is not None and hasattr(parent, "experts"):
            found.append(path)
    return found


def shared_expert_paths(model: torch.nn.Module, paths: Sequence[str]) -> dict[str, list[str]]:
    """Router path → the module paths of the always-on shared experts beside it (those that have any)."""
    names = dict(model.named_modules())
    found = {path: _shared_experts(names, path) for path in paths}
    return {path: shared for path, shared in found.items() if shared}


def _shared_experts(model_names: dict[str, torch.nn.Module], path: str) -> list[str]:
    parts = path.split(".")
    found = []
    for depth in (1, 2):  # siblings of the router, and siblings of its MoE block
        if len(parts) <= depth:
            continue
        base = ".".join(parts[:-depth])
        for name in SHARED_EXPERT_NAMES:
            candidate = f"{base}.{name}" if base else name
            if candidate in model_names:
                found.append(candidate)
    return found


def _top_k_hint(module: torch.nn.Module, parent: torch.nn.Module | None, config: Any) -> int | None:
    for owner in (module, parent, config):
        for attr in ("top_k", "num_experts_per_tok", "moe_top_k"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def expert_choice_rule(parent: torch.nn.Module | None, scoring: str) -> DecodeRule | None:
    """The decode rule of an expert-choice block (NucleusMoE: `capacity_factor`, `experts`, no `top_k`;
    softmax or `use_sigmoid` affinities, weights renormalised per token and scaled by `route_scale`), or
    None for a token-choice block."""
    factor = getattr(parent, "capacity_factor", None)
    if not isinstance(factor, int | float) or not hasattr(parent, "experts") or hasattr(parent, "top_k"):
        return None
    sigmoid = getattr(parent, "use_sigmoid", None)
    return DecodeRule(
        convention="expert_choice",
        scoring="sigmoid" if sigmoid is True else "softmax" if sigmoid is False else scoring,  # type: ignore[arg-type]
        pnorm=1.0,
        capacity_factor=float(factor),
        weight_scale=float(getattr(parent, "route_scale", 1.0) or 1.0),
    )


def zero_expert_ids(parent: torch.nn.Module | None, n_experts: int) -> list[int]:
    """Ids of zero-computation experts: those after `num_routed_experts` when the MoE block (transformers
    ≥ 5.25) or its experts module (earlier) also declares `zero_expert_num` (LongCat-Flash: the identity
    experts E_routed … E_routed + Z − 1)."""
    for holder in (parent, getattr(parent, "experts", None)):
        zero, routed = getattr(holder, "zero_expert_num", None), getattr(holder, "num_routed_experts", None)
        if isinstance(zero, int) and isinstance(routed, int) and zero > 0:
            return [e for e in range(routed, routed + zero) if e < n_experts]
    return []


def _pnorm_hint(parent: torch.nn.Module | None) -> float | None:
    value = getattr(parent, "moe_normalize_expert_weights", None)
    return float(value) if isinstance(value, int | float) else None


def describe_routers(
    model: torch.nn.Module,
    run_forward: Callable[[], Any],
    declared: Sequence[str] | Mapping[str, Any] | None = None,
) -> list[RouterSpec]:
    """Discover the routers and describe each with a dry run (`run_forward` runs one forward pass)."""
    paths = candidate_paths(model, declared)
    return describe_from_outputs(model, paths, collect_outputs(model, paths, run_forward), declared)


def describe_from_outputs(
    model: torch.nn.Module,
    paths: list[str],
    outputs: Mapping[str, list[Any]],
    declared: Sequence[str] | Mapping[str, Any] | None = None,
) -> list[RouterSpec]:
    """Describe the routers from the outputs of ONE forward pass, keyed in execution order (a dry run,
    or the first batch of a forward-only recording, which then needs no dry run)."""
    silent = [p for p in paths if p not in outputs]
    ran = sorted((p for p in paths if p in outputs), key=list(outputs).index)
    if not ran:
        raise NoRoutersError(f"none of the routers ran in a forward pass: {', '.join(silent)}")
    if silent:
        log.warning("routers that did not run in a dry forward pass are not recorded: %s", ", ".join(silent))
    names = dict(model.named_modules())
    config = getattr(model, "config", None)
    info = family_info(getattr(config, "model_type", None))
    declared_rules = declared if isinstance(declared, Mapping) else {}
    specs = []
    for index, path in enumerate(ran):
        module = names[path]
        parent = names.get(path.rpartition(".")[0]) if "." in path else model
        first = outputs[path][0]
        rule = declared_rules.get(path) or expert_choice_rule(parent, info.scoring)
        if rule is None:
            convention = detect_convention(first, path)
            rule = DecodeRule(
                convention=convention,
                scoring=info.scoring,
                top_k=_top_k_hint(module, parent, config),
                pnorm=_pnorm_hint(parent) if convention == "logits" else None,
            )
        decoded = normalise(first, rule)
        n_experts = int(decoded.probs.shape[-1])
        if info.skip_class and rule.convention == "triple" and rule.skip_expert is None:
            rule = replace(rule, skip_expert=n_experts - 1)
        lowered = path.lower()
        specs.append(
            RouterSpec(
                id=index,
                path=path,
                layer=layer_of(path) if layer_of(path) is not None else index,  # type: ignore[arg-type]
                call_count=len(outputs[path]),
                kind="attention" if ("attn" in lowered or "attention" in lowered) else "ffn",
                stack="encoder" if "encoder" in lowered else "decoder",
                n_experts=n_experts,
                top_k=n_experts if rule.convention == "expert_choice" else int(decoded.expert.shape[-1]),
                shared_experts=_shared_experts(names, path),
                router_class=type(module).__name__,
                convention=rule.convention,
                scoring=rule.scoring,
                pnorm=rule.pnorm,
                positions="none" if getattr(module, "router_positions", "token") == "none" else "token",
                choice="expert" if rule.convention == "expert_choice" else "token",
                capacity_factor=rule.capacity_factor,
                weight_scale=rule.weight_scale,
                zero_experts=[rule.skip_expert]
                if rule.skip_expert is not None
                else zero_expert_ids(parent, n_experts),
                skip_expert=rule.skip_expert,
            )
        )
    return specs
