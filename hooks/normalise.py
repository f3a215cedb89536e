"""Turn whatever a router returned into one normalised decision per token.

Families disagree on what a router returns (a `(logits, weights, indices)` triple; Llama4's
`(scores, logits)`; DBRX's bare logits; Switch's `(one-hot dispatch mask, max prob, logits)` with
capacity drops; JetMoE's token slots sorted by expert; NLLB-MoE's `(top-1 mask, combine weights, logits)`
with capacity drops; expert-choice layers such as diffusers' NucleusMoE, whose gate returns bare logits
[B, S, E] and whose experts each pick their top-C tokens of a sequence). The output's *shape* identifies
its convention (expert choice is read from the MoE block instead: `routers.py`), so `detect_convention`
reads it from a dry run and `normalise` decodes every later call the same way. The result always holds
what the model actually did — the expert ids it dispatched to and the gate weights it applied — never a
re-ranking of the logits, plus the distribution it chose from, for entropy and margin, and the raw
scores (logits) that distribution was computed from.

Shapes at this boundary: T = tokens of one router call (batch × sequence, flattened row-major),
E = experts, k = experts per token. k may vary from token to token (expert choice: 0 … E): then the
decoded tensors are [T, k_max] with a `valid` mask whose true slots come first in each row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from routescope.store.errors import RouterOutputError

from .families import Scoring

Convention = Literal[
    "triple", "scores_logits", "logits", "capacity_onehot", "sorted_slots", "top2_combine", "expert_choice"
]
CONVENTIONS: tuple[Convention, ...] = (
    "triple",
    "scores_logits",
    "logits",
    "capacity_onehot",
    "sorted_slots",
    "top2_combine",
    "expert_choice",
)
DETECTED: tuple[Convention, ...] = CONVENTIONS[:-1]
"""The conventions an output's shape identifies; `expert_choice` outputs bare logits, and the MoE block
says it is one (`routers.expert_choice_rule`)."""
Choice = Literal["token", "expert"]
CHOICES: tuple[Choice, ...] = ("token", "expert")
"""Who chooses: each token its experts (`token`: top-k, a fixed number per token), or each expert its
tokens (`expert`: expert choice, a fixed number per expert and 0 … E experts per token)."""


@dataclass(frozen=True)
class Decoded:
    """One router call, normalised. All tensors are on the CPU."""

    expert: torch.Tensor
    """[T, k] int64: experts the tokens were dispatched to (for dropped tokens: the expert they wanted)."""
    weight: torch.Tensor
    """[T, k] float32: gate weights the model applied (0 where a token was dropped)."""
    dropped: torch.Tensor
    """[T, k] bool: the token was refused by a capacity limit and skipped the expert."""
    probs: torch.Tensor
    """[T, E] float32: the distribution the router chose from (its scores normalised to sum to 1)."""
    logits: torch.Tensor | None = None
    """[T, E] float32: the raw router scores `probs` was computed from (what `scores_to_probs` received:
    logits of softmax routers, pre-sigmoid scores of sigmoid routers); None where a decode path has no raw
    scores (every built-in convention has them)."""
    valid: torch.Tensor | None = None
    """[T, k] bool: the slot holds a choice; None = every slot does (a fixed k). Variable-k decoders put a
    row's valid slots first, so a slot's column is its rank among the token's experts."""


@dataclass(frozen=True)
class DecodeRule:
    """How to decode one router's output: its convention plus the family facts it needs."""

    convention: Convention
    scoring: Scoring = "softmax"
    top_k: int | None = None
    """Only for `logits`: experts per token."""
    pnorm: float | None = None
    """Only for `logits` and `expert_choice`: p of the p-norm that renormalises a token's weights (1 =
    weights sum to 1, as Mixtral does; DBRX reads it from `moe_normalize_expert_weights`); None = raw
    probabilities."""
    capacity_factor: float | None = None
    """Only for `expert_choice`: each expert picks C = max(1, ⌈capacity_factor · S / E⌉) tokens of each
    sequence of S tokens (NucleusMoE's rule)."""
    weight_scale: float = 1.0
    """Only for `expert_choice`: the constant the block multiplies the (renormalised) weights by
    (NucleusMoE's `route_scale`)."""
    skip_expert: int | None = None
    """Only for `triple`: the id of a no-compute *skip* class that the router rewrites to expert 0 with
    weight 0 before returning (ZAYA); a slot of weight exactly 0 is recorded as this expert. A real
    choice's weight, a softmax probability, is never exactly 0."""


def _is_int(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and not t.is_floating_point()


def _is_float(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point()


def _signature(parts: list[Any]) -> str:
    """One letter per part: `f` float tensor, `i` integer tensor, `l` list, `?` anything else."""

    def letter(part: Any) -> str:
        if _is_float(part):
            return "f"
        if _is_int(part):
            return "i"
        return "l" if isinstance(part, list | tuple) else "?"

    return "".join(letter(p) for p in parts)


def detect_convention(output: Any, where: str) -> Convention:
    """Recognise a router output convention from one output value."""
    if _is_float(output):
        return "logits"
    if isinstance(output, tuple | list):
        parts = list(output)
        signature = _signature(parts)
        if signature in ("ffi", "ffif"):
            return "triple"  # Inkling adds a fourth part, the shared experts' gates (not recorded)
        if signature == "iff" and parts[0].shape == parts[2].shape:
            if parts[1].shape[-1] == 1:
                return "capacity_onehot"  # (one-hot, max prob [.., 1], logits)
            if parts[1].shape == parts[0].shape:
                return "top2_combine"  # (top-1 mask, combine weights, logits)
        if signature == "iiflf":
            return "sorted_slots"
        if signature == "ff" and parts[0].shape == parts[1].shape:
            return "scores_logits"
    kinds = (
        type(output).__name__ if not isinstance(output, tuple | list) else [type(p).__name__ for p in output]
    )
    raise RouterOutputError(
        f"router {where} returns {kinds}, which matches none of the conventions {', '.join(DETECTED)}; "
        "declare a module that returns one of them (docs/routers.md)"
    )


def scores_to_probs(logits: torch.Tensor, scoring: Scoring) -> torch.Tensor:
    """The router's expert scores as a distribution: softmax, or sigmoid (DeepSeek-V4: √softplus) scores
    normalised to sum 1."""
    logits = logits.float()
    if scoring == "probs":  # already probabilities (Gemma 4's router): only renormalised
        return logits / logits.sum(dim=-1, keepdim=True).clamp_min(1e-20)
    if scoring in ("sigmoid", "sqrtsoftplus"):
        scores = logits.sigmoid() if scoring == "sigmoid" else torch.nn.functional.softplus(logits).sqrt()
        return scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-20)
    return torch.softmax(logits, dim=-1)


def normalise(output: Any, rule: DecodeRule) -> Decoded:
    """Decode one router call into dispatched experts, applied weights, drop flags and probabilities."""
    try:
        return _decode(output, rule)
    except (ValueError, TypeError, IndexError, RuntimeError, AttributeError) as exc:
        raise RouterOutputError(
            f"router output does not fit the {rule.convention!r} convention ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); check the declared DecodeRule "
            "(docs/routers.md)"
        ) from None


def _decode(output: Any, rule: DecodeRule) -> Decoded:
    if rule.convention == "triple":
        shared_gates = isinstance(output, tuple | list) and len(output) == 4  # Inkling's 4th part
        logits, weights, indices = output[:3] if shared_gates else output
        n_experts = logits.shape[-1]
        expert = indices.reshape(-1, indices.shape[-1]).long()
        weight = weights.reshape(expert.shape).float()
        if rule.skip_expert is not None:
            expert = torch.where(weight == 0, rule.skip_expert, expert)
        logits = logits.reshape(-1, n_experts)
        probs = scores_to_probs(logits, rule.scoring)
        dropped = torch.zeros_like(expert, dtype=torch.bool)
    elif rule.convention == "scores_logits":
        scores, logits = output
        n_experts = logits.shape[-1]
        scores, logits = scores.reshape(-1, n_experts), logits.reshape(-1, n_experts)
        # Llama4 dispatches to topk(logits) and weights each chosen expert by its score.
        k = rule.top_k or int((scores[:1] > 0).sum().item())
        expert = torch.topk(logits, k, dim=-1).indices
        weight = scores.gather(1, expert).float()
        probs = scores_to_probs(logits, rule.scoring)
        dropped = torch.zeros_like(expert, dtype=torch.bool)
    elif rule.convention == "logits":
        if rule.top_k is None:
            raise RouterOutputError(
                "a router that returns logits only needs top_k; declare it (docs/routers.md)"
            )
        logits = output.reshape(-1, output.shape[-1])
        probs = scores_to_probs(logits, rule.scoring)
        top = torch.topk(probs, rule.top_k, dim=-1)
        expert, weight = top.indices, top.values
        if rule.pnorm is not None:
            weight = weight / torch.linalg.vector_norm(weight, ord=rule.pnorm, dim=-1, keepdim=True)
        dropped = torch.zeros_like(expert, dtype=torch.bool)
    elif rule.convention == "sorted_slots":
        expert, weight, logits = _sorted_slots(output)
        probs = scores_to_probs(logits, rule.scoring)
        dropped = torch.zeros_like(expert, dtype=torch.bool)
    elif rule.convention == "top2_combine":
        expert, weight, dropped, logits = _top2_combine(output)
        probs = scores_to_probs(logits, rule.scoring)
    elif rule.convention == "expert_choice":
        return _expert_choice(output, rule)
    else:  # capacity_onehot: (dispatch one-hot [.., E], max prob [.., 1], logits [.., E])
        mask, max_prob, logits = output
        n_experts = logits.shape[-1]
        mask, logits = mask.reshape(-1, n_experts), logits.reshape(-1, n_experts)
        probs = scores_to_probs(logits, rule.scoring)
        expert = probs.argmax(dim=-1, keepdim=True)
        dropped = mask.sum(dim=-1, keepdim=True) == 0
        # The model scales the dispatched expert's output by the max prob; a dropped token skips the expert.
        weight = torch.where(dropped, torch.zeros(()), max_prob.reshape(-1, 1).float())
    return Decoded(
        expert=expert.cpu(),
        weight=weight.float().cpu(),
        dropped=dropped.cpu(),
        probs=probs.cpu(),
        logits=logits.float().cpu(),
    )


def _expert_choice(output: Any, rule: DecodeRule) -> Decoded:
    """Expert choice from the gate's logits [B, S, E] (NucleusMoE): per sequence, every expert takes the C
    tokens of highest affinity (softmax or sigmoid scores, unnormalised for sigmoid, as the block ranks
    them); a token's weights are its chosen affinities divided by their p-norm, × `weight_scale`. A token
    gets 0 … E experts, ranked by descending affinity."""
    if rule.capacity_factor is None:
        raise ValueError("expert choice needs a capacity factor")
    logits = output if output.dim() == 3 else output.reshape(1, -1, output.shape[-1])
    batch, length, n_experts = logits.shape
    logits = logits.detach().float().cpu()
    affinity = logits.sigmoid() if rule.scoring == "sigmoid" else torch.softmax(logits, dim=-1)
    capacity = max(1, math.ceil(rule.capacity_factor * length / n_experts))
    top = torch.topk(affinity.transpose(1, 2), k=min(capacity, length), dim=-1).indices  # [B, E, C]
    chosen = torch.zeros(batch, n_experts, length, dtype=torch.bool).scatter_(2, top, True).transpose(1, 2)
    chosen, affinity = chosen.reshape(-1, n_experts), affinity.reshape(-1, n_experts)
    gate = torch.where(chosen, affinity, torch.zeros(()))
    if rule.pnorm is not None:
        gate = gate / (torch.linalg.vector_norm(gate, ord=rule.pnorm, dim=-1, keepdim=True) + 1e-12)
    gate = gate * rule.weight_scale
    k_max = int(chosen.sum(dim=-1).max().item()) if chosen.numel() else 0
    order = torch.sort(torch.where(chosen, affinity, torch.full((), -1.0)), dim=-1, descending=True)
    expert = order.indices[:, :k_max]
    flat = logits.reshape(-1, n_experts)
    return Decoded(
        expert=expert,
        weight=gate.gather(1, expert).float(),
        dropped=torch.zeros_like(expert, dtype=torch.bool),
        probs=scores_to_probs(flat, rule.scoring),
        logits=flat,
        valid=chosen.gather(1, expert),
    )


def _sorted_slots(output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """JetMoE's `(slot order [T·k], token of each sorted slot [T·k], gate of each sorted slot [T·k], slots per
    expert [E], logits [T, E])`: slot `t·k + r` is token t's r-th choice (topk order); sorting the slots by
    expert puts `counts[e]` slots of expert e together, and the MoE block scales each sorted slot's expert
    output by its gate. Undo the sort: the expert and gate of every (token, rank)."""
    _order, _token, gates, counts, logits = output
    order = sorted_slot_order(output)
    logits = logits.reshape(-1, logits.shape[-1])
    n_slots, n_tokens = order.numel(), logits.shape[0]
    if n_tokens == 0 or n_slots % n_tokens:
        raise ValueError(f"{n_slots} slots for {n_tokens} tokens")
    counts = torch.as_tensor(list(counts), dtype=torch.long)
    slot_expert = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    expert = torch.empty(n_slots, dtype=torch.long).index_put_((order,), slot_expert)
    weight = torch.empty(n_slots, dtype=torch.float32).index_put_((order,), gates.reshape(-1).float().cpu())
    k = n_slots // n_tokens
    return expert.reshape(n_tokens, k), weight.reshape(n_tokens, k), logits


def sorted_slot_order(output: Any) -> torch.Tensor:
    """`[T·k]` int64 CPU: the slot `t·k + r` of each sorted slot of a `sorted_slots` router output (JetMoE):
    sorted slot i holds token `order[i] // k`'s rank-`order[i] % k` choice."""
    if not isinstance(output, tuple | list) or len(output) != 5 or not isinstance(output[0], torch.Tensor):
        raise RouterOutputError(
            "expected a sorted_slots router output (slot order, tokens, gates, counts, logits)"
        )
    return output[0].reshape(-1).long().cpu()


def _top2_combine(output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """NLLB-MoE's `(top-1 mask [T, E] int, combine weights [T, E], logits [T, E])`, both after its capacity
    limit. The model's choice: the first expert is the argmax (the mask's column when it kept the token), the
    second the argmax of the logits without the first; the experts run on the tokens whose combine weight is
    non-zero, scaled by it. A zero weight means that choice was refused (capacity, padding, or the `random`
    second-expert policy): dropped."""
    mask, combine, logits = output
    n_experts = logits.shape[-1]
    mask = mask.reshape(-1, n_experts)
    combine, logits = combine.reshape(-1, n_experts).float(), logits.reshape(-1, n_experts).float()
    kept = mask.sum(dim=-1) > 0
    first = torch.where(kept, mask.argmax(dim=-1), logits.argmax(dim=-1))
    others = logits.scatter(1, first[:, None], float("-inf"))
    expert = torch.stack([first, others.argmax(dim=-1)], dim=-1)
    weight = combine.gather(1, expert)
    return expert, weight, weight == 0, logits


def decision_stats(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token entropy (nats), top-1 − top-2 margin and max probability of a [T, E] distribution."""
    p = probs.float()
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1)
    if p.shape[-1] >= 2:
        top2 = torch.topk(p, 2, dim=-1).values
        return entropy, top2[:, 0] - top2[:, 1], top2[:, 0]
    return entropy, p[:, 0], p[:, 0]
