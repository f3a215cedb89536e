"""Expert output norms (`record(expert_stats=True)`): ‖f_e(x)‖₂ of every chosen expert, before its gate.

Why: saliency and merging criteria (REAP, EAN, HC-SMoE) ask what the chosen experts *output*, not only
where tokens go. A formula per family (SwiGLU here, a biased clamped GLU in GPT-OSS, a dense-act-dense
module per expert in Switch) would drift from the models; instead one mechanism uses the model's own code.
Every transformers 5 MoE block calls its experts module as `experts(hidden [T, H], index, weights)` and
gets back `Σ_r weights[:, r] · f_{index[:, r]}(hidden)`: `index` is `[T, k]` expert ids for the fused
3-D-weight `*Experts` modules (Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek-V3, GPT-OSS, Granite-MoE, ...) or a
`[T, k, E]` one-hot mask for Switch's `ModuleDict` of expert modules. A forward hook on that module calls
its class `forward` once more (no hooks, no grad) on k copies of the tokens, copy r routed to rank r's
expert alone with a weight of 1.0, which yields f_{e_r}(x) exactly as the model computes it — whichever
experts implementation the config selects. Cost: one more evaluation of the chosen experts, in one call
(so about 2× the experts' share of the forward time).

Module-list experts (the DiT-MoE blocks of `bundled:dit-digits` and `dit-moe:`: `moe.experts` is an
`nn.ModuleList` of SwiGLU modules that the block calls one by one on their tokens) have no such call to
hook. For them a forward hook on the router itself keeps what the router was given — the hidden states
the block feeds its experts — and, once `choices` has decoded the router's output into `[T, k]` expert
ids, runs each chosen member module once on its rows (one call per distinct expert, under no grad): the
same f_e(x) as the block computes, from the experts' own modules. The first design of this (branch
`expertstats`) re-evaluated every family that way after the forward; here the fused families keep the
hook on their experts call and only module lists take the router's input.

The experts module of a router is its sibling named `experts` (`mlp.gate` → `mlp.experts`). A model whose
routers have no such sibling, or whose experts module is neither called that way nor a list of expert
modules, is refused in one line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from routescope.store.errors import InputError

EXPERTS_NAME = "experts"
REFUSAL = "expert_stats needs experts called as experts(hidden_states, indices, weights) beside each router"


def experts_paths(model: torch.nn.Module, router_paths: Sequence[str]) -> dict[str, str]:
    """Router path → the path of its experts module (the router's sibling `experts`); refuses a router
    without one (`InputError`, field `expert_stats`)."""
    names = dict(model.named_modules())
    found: dict[str, str] = {}
    for path in router_paths:
        parent = path.rpartition(".")[0]
        candidate = f"{parent}.{EXPERTS_NAME}" if parent else EXPERTS_NAME
        module = names.get(candidate)
        if module is None or not (len(_parameters(module)) >= 3 or is_listed(module)):
            raise InputError(f"{REFUSAL}; router {path} has none", field="expert_stats")
        found[path] = candidate
    return found


def is_listed(module: torch.nn.Module) -> bool:
    """Whether `module` is a list of expert modules (`nn.ModuleList`/`ModuleDict` of callable modules)
    rather than one fused module called with indices and weights (a `ModuleDict` subclass with such a call,
    Switch's, is the fused kind)."""
    if not isinstance(module, torch.nn.ModuleList | torch.nn.ModuleDict) or len(module) == 0:
        return False
    if len(_parameters(module)) >= 3:
        return False
    return all(len(_parameters(member)) >= 1 for member in module.children())


def listed_norms(experts: torch.nn.Module, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`[T, k]` float32 CPU: ‖f_e(x)‖₂ for every token's rank-r expert of a module list — each chosen member
    called once (its class forward: no hooks on it) on the rows routed to it; `hidden` `[T, H]`, `index`
    `[T, k]` expert ids."""
    if hidden.dim() != 2 or index.dim() != 2 or index.shape[0] != hidden.shape[0]:
        raise InputError(
            f"{REFUSAL}; the router got hidden {tuple(hidden.shape)} for choices {tuple(index.shape)}",
            field="expert_stats",
        )
    members = list(experts.children())
    index = index.to(hidden.device)
    norms = torch.zeros(index.shape, dtype=torch.float32)
    with torch.no_grad():
        for expert in torch.unique(index).tolist():
            if not 0 <= expert < len(members):
                continue  # a dropped or padded choice (no expert ran): its norm stays 0, written as null
            rows, ranks = torch.nonzero(index == expert, as_tuple=True)
            member = members[int(expert)]
            out = type(member).forward(member, hidden[rows])
            norms[rows.cpu(), ranks.cpu()] = out.float().norm(dim=-1).cpu()
    return norms


def _parameters(module: torch.nn.Module) -> list[str]:
    """Names of the class forward's parameters after `self` (follows transformers' `wraps` decorators)."""
    try:
        signature = inspect.signature(type(module).forward)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [name for name, p in list(signature.parameters.items())[1:] if p.kind in kinds]


def rank_outputs(
    module: torch.nn.Module, hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """`[k, T, H]`: rank r's chosen expert's output f_{e_r}(x) for every token, unweighted — the module's
    own forward called once on k copies of the tokens, copy r routed to rank r's expert alone with weight
    1.0 (rows whose expert did not run are zero)."""
    if hidden.dim() != 2 or index.shape[0] != hidden.shape[0] or weights.shape[:2] != index.shape[:2]:
        raise InputError(
            f"{REFUSAL}; {type(module).__name__} got hidden {tuple(hidden.shape)}, "
            f"indices {tuple(index.shape)}, weights {tuple(weights.shape)}",
            field="expert_stats",
        )
    tokens, k = index.shape[:2]
    # all ranks in ONE call: the tokens repeated k times, row r·T + t on rank r's expert with weight 1
    repeated = hidden.unsqueeze(0).expand(k, *hidden.shape).reshape(k * tokens, hidden.shape[1])
    one_rank = index.transpose(0, 1).reshape(k * tokens, 1, *index.shape[2:])
    ones = torch.ones((k * tokens, 1), dtype=weights.dtype, device=weights.device)
    forward = type(module).forward  # the class's: no hooks, no nnsight interception, no recursion
    with torch.no_grad():
        try:
            return forward(module, repeated, one_rank, ones).reshape(k, tokens, -1)
        except ValueError:
            if index.dim() != 2:
                raise
            # LongCat-Flash's experts squeeze a one-rank mask to [T] (transformers 5.24) and fail on k = 1:
            # route every row twice to its expert, weights 1 and 0, which is the same f_e(x)
            twice, weight = one_rank.repeat(1, 2), torch.cat([ones, torch.zeros_like(ones)], dim=1)
            return forward(module, repeated, twice, weight).reshape(k, tokens, -1)


MAX_ELEMENTS = 1 << 25
"""Output elements (k copies × tokens × hidden) one extra experts call may produce; longer batches are
evaluated in slices of tokens, so the extra memory stays bounded (128 MB in float32)."""


def rank_norms(
    module: torch.nn.Module, hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """`[T, k]` float32 CPU: ‖f_{e_r}(x)‖₂ of every token's rank-r expert (`rank_outputs`, in slices of
    tokens of at most `MAX_ELEMENTS` outputs)."""
    tokens, k = index.shape[:2]
    step = max(1, MAX_ELEMENTS // max(k * hidden.shape[-1], 1))
    parts = []
    for start in range(0, tokens, step):
        rows = slice(start, start + step)
        outputs = rank_outputs(module, hidden[rows], index[rows], weights[rows])
        parts.append(outputs.float().norm(dim=-1).transpose(0, 1).cpu())
    return torch.cat(parts) if parts else torch.zeros((0, k))


def _call_arguments(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The first three arguments of an experts call, positional or by name."""
    names = _parameters(module)[:3]
    values = list(args[:3])
    values += [kwargs[name] for name in names[len(values) :] if name in kwargs]
    if len(values) < 3 or not all(isinstance(v, torch.Tensor) for v in values):
        raise InputError(f"{REFUSAL}; {type(module).__name__} was called otherwise", field="expert_stats")
    return values


Choices = Callable[[str, Any], torch.Tensor]
"""Router path, one raw router output → its `[T, k]` expert ids (the recording's own decoding)."""


class ExpertNorms:
    """Forward hooks on the experts modules of some routers (on the router itself where the experts are a
    module list); `norms[router path]` lists, per call in execution order, a `[T, k]` float32 CPU tensor
    of the chosen experts' output norms. `choices` decodes a router's output into expert ids; module-list
    experts need it (refused in one line without)."""

    def __init__(
        self, model: torch.nn.Module, experts: dict[str, str], choices: Choices | None = None
    ) -> None:
        self.model, self.experts, self.choices = model, experts, choices
        self.norms: dict[str, list[torch.Tensor]] = {}
        names = dict(model.named_modules())
        self.listed = {router for router, path in experts.items() if is_listed(names[path])}
        if self.listed and choices is None:
            router = sorted(self.listed)[0]
            raise InputError(f"{REFUSAL}; router {router}'s experts are a module list", field="expert_stats")

    def _router_hook(self, router: str, experts: torch.nn.Module) -> Any:
        def keep(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            hidden = args[0] if args else next(iter(kwargs.values()), None)
            if not isinstance(hidden, torch.Tensor):
                raise InputError(
                    f"{REFUSAL}; router {router} was called without hidden states", field="expert_stats"
                )
            assert self.choices is not None  # checked in __init__
            index = self.choices(router, out)
            flat = hidden.detach().reshape(-1, hidden.shape[-1])
            self.norms.setdefault(router, []).append(listed_norms(experts, flat, index))

        return keep

    def _hook(self, router: str) -> Any:
        def keep(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> None:
            hidden, index, weights = _call_arguments(module, args, kwargs)
            self.norms.setdefault(router, []).append(rank_norms(module, hidden, index, weights))

        return keep

    @contextmanager
    def watching(self) -> Iterator[dict[str, list[torch.Tensor]]]:
        """Hooks on while the block runs; yields the per-router lists the block's calls fill (fresh)."""
        self.norms = {}
        names = dict(self.model.named_modules())
        handles = [
            names[router].register_forward_hook(self._router_hook(router, names[path]), with_kwargs=True)
            if router in self.listed
            else names[path].register_forward_hook(self._hook(router), with_kwargs=True)
            for router, path in self.experts.items()
        ]
        try:
            yield self.norms
        finally:
            for handle in handles:
                handle.remove()
