"""Expert output norms (`record(expert_stats=True)`): ‖f_e(x)‖₂ of every chosen expert, before its gate.

Why: saliency and merging criteria (REAP, EAN, HC-SMoE) ask what the chosen experts *output*, not only
where tokens go. A formula per family (SwiGLU here, a biased clamped GLU in GPT-OSS, a dense-act-dense
module per expert in Switch) would drift from the models; instead one mechanism uses the model's own code:
the experts module(s) beside each router, called by their class `forward` (no hooks, no grad) or read as
the model ran them. Four shapes of experts are told apart by their structure, not by family:

- **called** — `experts(hidden [T, H], routing, weights)` returning `Σ weights · f_e(hidden)`: the fused
  3-D-weight `*Experts` modules (Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek-V3, GPT-OSS, Granite-MoE, ...) with
  `[T, k]` expert ids and `[T, k]` weights, Switch's `ModuleDict` with a `[T, k, E]` one-hot mask. A
  forward hook on that module calls its class `forward` once more on k copies of the tokens, copy r routed
  to rank r's expert alone with a weight of 1.0, which yields f_{e_r}(x) exactly as the model computes it.
  When the call takes *per-expert* `[T, E]` routing and weights instead (NLLB-MoE: top-1 mask, combine
  weights), the call is kept and, once the router's output is decoded into `[T, k]` choices (when the
  batch is written), called again on k copies with the original routing and weights one-hot at rank r's
  expert: whatever expert the module runs for that weight is the one measured. transformers 5.24/5.25's
  `NllbMoeExperts` runs `expert_1` for every token's first choice and `expert_0` for its second (it indexes
  by the top-1 mask's *values*; docs/routers.md), so NLLB-MoE's norms are those of the experts it ran, not
  of the router's choice; they include the eval-mode scale `1 − moe_token_dropout` the module applies
  inside the call (the recorded weight leaves it out), so weight × norm stays the contribution.
- **listed** — an `nn.ModuleList` of expert modules called one by one (the DiT-MoE blocks of
  `bundled:dit-digits` and `dit-moe:`): a forward hook on the router keeps what the router was given (the
  hidden states the block feeds its experts); when the router's output is decoded, each chosen member runs
  once on its rows (one call per distinct expert).
- **stacked** — `experts(rows [E·T, H])`, one block of rows per expert (Llama4's `Llama4TextExperts`, which
  the block calls on every token for every expert with the input scaled by the expert's score, 0 for the
  experts not chosen): the router's input is kept and, once decoded, the module is called on blocks that
  hold each token at its chosen experts' blocks, unscaled. So Llama4's output_norm is ‖f_e(x)‖, not
  ‖f_e(score · x)‖ that the block adds (its experts are not linear in the score: weight × norm is not the
  contribution there).
- **sorted** — the router's siblings are called on token slots sorted by expert,
  `experts(rows [T·k, d], rows per expert [E])` (JetMoE's `JetMoeParallelExperts`, for its FFN experts and
  its mixture-of-attention heads, where each expert's output projection reads attention computed with
  that expert's query, so no single-token call can reproduce it): the model's own run already holds every
  chosen expert's un-gated output, the rows of the last such call after each router call. A forward hook
  keeps their norms and, when the batch is written, the router's slot order (`sorted_slots`,
  hooks/normalise.py) puts them back in (token, rank) order. No extra evaluation at all. The block's bias,
  added once after the experts' sum, is not part of any expert's output.

Cost: about 2× the experts' share of the forward time (called, listed), E/k × for stacked (the model's own
call is as large), none for sorted. Entries that need the decoded choices (`Pending`) keep their inputs
on the model's device until the batch is written, which happens right after it ran.

The experts module of a router is its sibling named `experts` (`mlp.gate` → `mlp.experts`), or, without
one, the router's parent when its other children are sorted-slot experts. A model whose routers have
neither, or whose experts module fits none of the four shapes, is refused in one line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch

from routescope.store.errors import InputError

from .normalise import sorted_slot_order

EXPERTS_NAME = "experts"
REFUSAL = (
    "expert_stats needs experts beside each router: called as experts(hidden_states, indices, weights), "
    "a list of expert modules, stacked (one block of rows per expert) or on slots sorted by expert"
)
Kind = Literal["called", "listed", "stacked", "sorted"]


def experts_paths(model: torch.nn.Module, router_paths: Sequence[str]) -> dict[str, str]:
    """Router path → the path of its experts module: the router's sibling `experts`, or, for sorted-slot
    experts (JetMoE), the router's parent; refuses a router without either (`InputError`, field
    `expert_stats`)."""
    names = dict(model.named_modules())
    found: dict[str, str] = {}
    for path in router_paths:
        parent = path.rpartition(".")[0]
        candidate = f"{parent}.{EXPERTS_NAME}" if parent else EXPERTS_NAME
        module = names.get(candidate)
        if module is not None and _own_kind(module) is not None:
            found[path] = candidate
        elif sorted_members(names.get(parent), names.get(path)):
            found[path] = parent
        else:
            raise InputError(f"{REFUSAL}; router {path} has none", field="expert_stats")
    return found


def experts_kind(model: torch.nn.Module, router: str, path: str) -> Kind:
    """Which of the four shapes (module docstring) the experts at `path` of `router` are."""
    if router.rpartition(".")[0] == path:
        return "sorted"
    kind = _own_kind(model.get_submodule(path))
    if kind is None:
        raise InputError(f"{REFUSAL}; router {router}'s experts are none of them", field="expert_stats")
    return kind


def _own_kind(module: torch.nn.Module) -> Kind | None:
    if is_listed(module):
        return "listed"
    if len(_parameters(module)) >= 3:
        return "called"
    if is_stacked(module):
        return "stacked"
    return None


def is_stacked(module: torch.nn.Module) -> bool:
    """Whether `module` takes one `[E·T, H]` tensor, one block of T rows per expert (Llama4): a forward of
    one argument, an integer `num_experts` and a 3-D weight of its own whose first dimension is E."""
    experts = getattr(module, "num_experts", None)
    if not isinstance(experts, int) or len(_parameters(module)) != 1:
        return False
    own = list(module.parameters(recurse=False))
    return any(p.dim() == 3 and p.shape[0] == experts for p in own)


def sorted_members(parent: torch.nn.Module | None, router: torch.nn.Module | None) -> list[str]:
    """Names of `parent`'s children (the router aside) called on slots sorted by expert,
    `forward(rows, rows_per_expert)` with a 3-D weight `[E, out, in]` (JetMoE's `JetMoeParallelExperts`)."""
    if parent is None or router is None:
        return []
    found = []
    for name, child in parent.named_children():
        if child is router or len(_parameters(child)) != 2:
            continue
        own = list(child.parameters(recurse=False))
        if len(own) == 1 and own[0].dim() == 3:
            found.append(name)
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
    hidden = token_rows(hidden, index)
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


def token_rows(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`hidden` as `[T, H]` rows when an experts module is given `[B, S, H]` states with `[B·S, k]`
    indices (DBRX, transformers ≥ 5.25); anything else as it is."""
    if hidden.dim() > 2 and index.dim() >= 1 and hidden.shape[:-1].numel() == index.shape[0]:
        return hidden.reshape(-1, hidden.shape[-1])
    return hidden


MAX_ELEMENTS = 1 << 25
"""Output elements (k copies × tokens × hidden) one extra experts call may produce; longer batches are
evaluated in slices of tokens, so the extra memory stays bounded (128 MB in float32)."""


def rank_norms(
    module: torch.nn.Module, hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """`[T, k]` float32 CPU: ‖f_{e_r}(x)‖₂ of every token's rank-r expert (`rank_outputs`, in slices of
    tokens of at most `MAX_ELEMENTS` outputs)."""
    hidden = token_rows(hidden, index)
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


class Pending:
    """Norms of one router call that need the router's decoded choices: `resolve(output, expert)` with the
    call's raw router output and its `[T, k]` expert ids gives the `[T, k]` float32 CPU norms."""

    def __init__(self, compute: Callable[[Any, torch.Tensor], torch.Tensor]) -> None:
        self.compute = compute

    def resolve(self, output: Any, expert: torch.Tensor) -> torch.Tensor:
        return self.compute(output, expert)


Entry = torch.Tensor | Pending
"""One router call's norms: computed during the forward, or pending until its output is decoded."""


def resolve_norms(entry: Entry, output: Any, expert: torch.Tensor) -> torch.Tensor:
    """`[T, k]` float32 CPU norms of one router call, from its entry, raw output and decoded expert ids."""
    return entry.resolve(output, expert) if isinstance(entry, Pending) else entry


def _number_of_experts(module: torch.nn.Module) -> int | None:
    experts = getattr(module, "num_experts", None)
    if isinstance(experts, int):
        return experts
    if isinstance(module, torch.nn.ModuleList | torch.nn.ModuleDict):
        return len(module)
    return None


def per_expert_call(module: torch.nn.Module, index: torch.Tensor, weights: torch.Tensor) -> bool:
    """Whether an experts call takes per-expert routing and weights (`[T, E]` both, E the module's expert
    count: NLLB-MoE's top-1 mask and combine weights) rather than per-rank ones."""
    experts = _number_of_experts(module)
    return (
        experts is not None
        and weights.dim() == 2
        and index.shape == weights.shape
        and weights.shape[1] == experts
    )


def probe_norms(
    module: torch.nn.Module,
    hidden: torch.Tensor,
    routing: torch.Tensor,
    weights: torch.Tensor,
    expert: torch.Tensor,
) -> torch.Tensor:
    """`[T, k]` float32 CPU norms of a per-expert experts call (`per_expert_call`): the module's class
    forward on k copies of the tokens with their own routing and weights one-hot at rank r's expert (copy
    r), in slices of at most `MAX_ELEMENTS` outputs. An id outside the module's experts gets weight 0."""
    tokens, k = expert.shape
    n_experts = weights.shape[1]
    if k == n_experts and torch.equal(routing.long().cpu(), expert.long().cpu()):
        return rank_norms(module, hidden, routing, weights)  # k = E: the routing was per-rank ids after all
    if hidden.dim() != 2 or hidden.shape[0] != tokens:
        raise InputError(
            f"{REFUSAL}; {type(module).__name__} got hidden {tuple(hidden.shape)} "
            f"for choices {tuple(expert.shape)}",
            field="expert_stats",
        )
    expert = expert.to(weights.device).long()
    valid = (expert >= 0) & (expert < n_experts)
    forward = type(module).forward
    step = max(1, MAX_ELEMENTS // max(k * hidden.shape[-1], 1))
    parts = []
    with torch.no_grad():
        for start in range(0, tokens, step):
            rows = slice(start, start + step)
            n = hidden[rows].shape[0]
            ids = expert[rows].transpose(0, 1).reshape(-1, 1)  # copy r's row t: token t's rank-r expert
            onehot = torch.zeros((k * n, n_experts), dtype=weights.dtype, device=weights.device)
            onehot.scatter_(
                1, ids.clamp(0, n_experts - 1), valid[rows].transpose(0, 1).reshape(-1, 1).to(weights.dtype)
            )
            repeated = hidden[rows].repeat(k, 1)
            out = forward(module, repeated, routing[rows].repeat(k, 1), onehot)
            parts.append(out.float().norm(dim=-1).reshape(k, n).transpose(0, 1).cpu())
    return torch.cat(parts) if parts else torch.zeros((0, k))


def stacked_norms(experts: torch.nn.Module, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`[T, k]` float32 CPU: ‖f_e(x)‖₂ for every token's rank-r expert of a stacked experts module
    (`is_stacked`): its class forward on E blocks of k·T rows, row r·T + t of block `index[t, r]` holding
    token t (the other rows zero), in slices of at most `MAX_ELEMENTS` outputs."""
    if hidden.dim() != 2 or index.dim() != 2 or index.shape[0] != hidden.shape[0]:
        raise InputError(
            f"{REFUSAL}; the router got hidden {tuple(hidden.shape)} for choices {tuple(index.shape)}",
            field="expert_stats",
        )
    n_experts = int(experts.num_experts)
    tokens, k = index.shape
    index = index.to(hidden.device).long()
    forward = type(experts).forward
    step = max(1, MAX_ELEMENTS // max(n_experts * k * hidden.shape[-1], 1))
    norms = torch.zeros(index.shape, dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, tokens, step):
            rows = torch.arange(start, min(start + step, tokens), device=hidden.device)
            n = rows.numel()
            ids = index[rows].transpose(0, 1).reshape(-1)  # copy-major: slot r·n + t
            valid = (ids >= 0) & (ids < n_experts)
            slots = torch.arange(k * n, device=hidden.device)
            blocks = torch.zeros(
                (n_experts, k * n, hidden.shape[-1]), dtype=hidden.dtype, device=hidden.device
            )
            blocks[ids[valid], slots[valid]] = hidden[rows].repeat(k, 1)[valid]
            out = forward(experts, blocks.reshape(-1, hidden.shape[-1])).reshape(n_experts, k * n, -1)
            picked = torch.zeros(k * n, dtype=torch.float32, device=hidden.device)
            picked[valid] = out[ids[valid], slots[valid]].float().norm(dim=-1)
            norms[start : start + n] = picked.reshape(k, n).transpose(0, 1).cpu()
    return norms


class _Sorted:
    """A sorted-slot router call (JetMoE): the norms of the last sorted experts call after it, in sorted
    order, put back in (token, rank) order with the router's slot order once its output is decoded."""

    def __init__(self, router: str) -> None:
        self.router = router
        self.sorted: torch.Tensor | None = None

    def __call__(self, output: Any, expert: torch.Tensor) -> torch.Tensor:
        order = sorted_slot_order(output)
        if self.sorted is None or self.sorted.numel() != order.numel() or order.numel() != expert.numel():
            got = None if self.sorted is None else self.sorted.numel()
            raise InputError(
                f"{REFUSAL}; router {self.router}'s sorted experts gave {got} rows for {order.numel()} slots",
                field="expert_stats",
            )
        flat = torch.zeros(order.numel(), dtype=torch.float32)
        flat[order] = self.sorted
        return flat.reshape(expert.shape)


class ExpertNorms:
    """Forward hooks that measure the chosen experts' outputs of some routers (module docstring: on the
    experts call, on the router, or on the sorted-slot experts beside it); `norms[router path]` lists,
    per call in execution order, an `Entry`: a `[T, k]` float32 CPU tensor of the chosen experts' output
    norms, or a `Pending` that `resolve_norms` turns into one once the call's router output is decoded."""

    def __init__(self, model: torch.nn.Module, experts: dict[str, str]) -> None:
        self.model, self.experts = model, experts
        self.norms: dict[str, list[Entry]] = {}
        self.kinds = {router: experts_kind(model, router, path) for router, path in experts.items()}

    def _router_hook(self, router: str, experts: torch.nn.Module, kind: Kind) -> Any:
        def keep(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            hidden = args[0] if args else next(iter(kwargs.values()), None)
            if not isinstance(hidden, torch.Tensor):
                raise InputError(
                    f"{REFUSAL}; router {router} was called without hidden states", field="expert_stats"
                )
            flat = hidden.detach().reshape(-1, hidden.shape[-1])
            evaluate = listed_norms if kind == "listed" else stacked_norms
            pending = Pending(lambda _output, index: evaluate(experts, flat, index))
            self.norms.setdefault(router, []).append(pending)

        return keep

    def _sorted_hooks(self, router: str, parent: torch.nn.Module) -> list[Any]:
        calls: list[_Sorted] = []

        def start(_module: torch.nn.Module, _args: tuple[Any, ...], _out: Any) -> None:
            calls.append(_Sorted(router))
            self.norms.setdefault(router, []).append(Pending(calls[-1]))

        def keep(module: torch.nn.Module, args: tuple[Any, ...], out: Any) -> None:
            rows = args[1] if len(args) > 1 else None
            if not calls or not isinstance(out, torch.Tensor) or out.dim() != 2 or rows is None:
                return
            if int(sum(int(n) for n in rows)) == out.shape[0]:  # the last call after the router wins
                calls[-1].sorted = out.detach().float().norm(dim=-1).cpu()

        handles = [parent.get_submodule(router.rpartition(".")[2]).register_forward_hook(start)]
        names = sorted_members(parent, parent.get_submodule(router.rpartition(".")[2]))
        handles += [parent.get_submodule(name).register_forward_hook(keep) for name in names]
        return handles

    def _hook(self, router: str) -> Any:
        def keep(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> None:
            hidden, index, weights = _call_arguments(module, args, kwargs)
            entry: Entry
            if per_expert_call(module, index, weights):
                kept = (hidden.detach(), index.detach(), weights.detach())
                entry = Pending(lambda _output, expert: probe_norms(module, *kept, expert))
            else:
                entry = rank_norms(module, hidden, index, weights)
            self.norms.setdefault(router, []).append(entry)

        return keep

    @contextmanager
    def watching(self) -> Iterator[dict[str, list[Entry]]]:
        """Hooks on while the block runs; yields the per-router lists the block's calls fill (fresh)."""
        self.norms = {}
        names = dict(self.model.named_modules())
        handles = []
        for router, path in self.experts.items():
            kind = self.kinds[router]
            if kind == "sorted":
                handles += self._sorted_hooks(router, names[path])
            elif kind == "called":
                handles.append(names[path].register_forward_hook(self._hook(router), with_kwargs=True))
            else:
                hook = self._router_hook(router, names[path], kind)
                handles.append(names[router].register_forward_hook(hook, with_kwargs=True))
        try:
            yield self.norms
        finally:
            for handle in handles:
                handle.remove()
