"""Replace single routing decisions by hand: given rows of one router call get another top-k set.

The counterfactual-route probe (`routescope.probes.probe_reroute`) asks what one token's loss would have
been had one router sent it to another set of k experts, at equal compute. The edits of
`interventions.py` work on the router *logits* and let the family's code choose; that cannot express
"exactly this set, with the weights the model's own routing gives it" for families that do not
renormalise the top-k weights (Qwen2-MoE with `norm_topk_prob=False`, the bundled moe-lm: masking the
other logits would renormalise the set's weights). So this module edits the router's *output* instead:
a forward hook on routers of the `triple` convention (`(logits, weights, indices)`, what the family's
expert block consumes) overwrites the weights and indices of the chosen rows.

The replacement weights are what the router's own rule gives the set, and the rule is read from the
router itself, not assumed: on every call the hook compares the weights the router returned with its
scores (softmax, or sigmoid for sigmoid families) at the indices it chose. If they equal the scores
renormalised to sum to 1 (Mixtral, Qwen2-MoE with `norm_topk_prob=True`) the new set gets its scores
renormalised; if they equal the raw scores (the bundled moe-lm) it gets the raw scores; anything else (a
scaling factor, a selection bias) raises `InterventionError`. The weights are computed with the same
operations the family uses (scores of the float32 logits, gather, divide by the sum), so a replacement
set equal to the router's own choice, in its own order, reproduces the router's output bit for bit.

Shapes: a router call sees T = batch × sequence rows (row-major); `RowRoutes` maps a flat row index to
the k experts that row must use instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch

from routescope.store.errors import InputError, InterventionError

from .interventions import has_selection_bias

WeightRule = Literal["renormalised", "probabilities"]
WEIGHT_RULES: tuple[WeightRule, ...] = ("renormalised", "probabilities")

RowRoutes = Mapping[int, Sequence[int]]
"""Flat row index of one router call (batch × sequence, row-major) → the k experts it must use."""


def router_scores(logits: torch.Tensor, scoring: str) -> torch.Tensor:
    """[T, E] float32 expert scores the family computes from its logits (softmax or sigmoid)."""
    x = logits.float()
    if scoring == "probs":  # the router returned probabilities (Gemma 4), not logits
        return x
    return torch.sigmoid(x) if scoring == "sigmoid" else torch.softmax(x, dim=-1)


def weight_rule(
    logits: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, scoring: str
) -> WeightRule:
    """How this router weighs its chosen experts, read from one call's output (see the module docstring)."""
    chosen = (
        router_scores(logits, scoring)
        .reshape(-1, logits.shape[-1])
        .gather(1, indices.reshape(-1, indices.shape[-1]))
    )
    given = weights.reshape(chosen.shape).float()
    if torch.allclose(given, chosen / chosen.sum(-1, keepdim=True), rtol=1e-4, atol=1e-6):
        return "renormalised"
    if torch.allclose(given, chosen, rtol=1e-4, atol=1e-6):
        return "probabilities"
    raise InterventionError(
        "the router's gate weights are neither its scores nor its scores renormalised over the chosen "
        "experts (a scaling factor or bias?); counterfactual routes cannot be weighted the model's way"
    )


def set_weights(scores: torch.Tensor, experts: torch.Tensor, rule: WeightRule) -> torch.Tensor:
    """[R, k] weights the router's rule gives `experts` ([R, k]) under its scores ([R, E] float32)."""
    chosen = scores.gather(1, experts)
    return chosen / chosen.sum(dim=-1, keepdim=True) if rule == "renormalised" else chosen


class _Replace:
    """Forward hook at one router: overwrite the chosen rows' weights and indices, record the rule."""

    def __init__(self, path: str, scoring: str) -> None:
        self.path, self.scoring = path, scoring
        self.rows: RowRoutes = {}
        self.rule: WeightRule | None = None
        self.seen: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, _module: torch.nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
        if not (isinstance(output, tuple) and len(output) >= 3 and not output[2].is_floating_point()):
            raise InterventionError(f"router {self.path} did not return (logits, weights, indices)")
        logits, weights, indices = output[:3]
        flat_w = weights.reshape(-1, weights.shape[-1])
        flat_i = indices.reshape(-1, indices.shape[-1])
        self.rule = weight_rule(logits, flat_w, flat_i, self.scoring)
        flat_logits = logits.reshape(-1, logits.shape[-1])
        self.seen = (router_scores(flat_logits, self.scoring).detach().cpu(), flat_i.detach().cpu())
        if not self.rows:
            return None
        rows = torch.tensor(sorted(self.rows), dtype=torch.long, device=flat_i.device)
        if int(rows.max()) >= flat_i.shape[0]:
            raise InterventionError(
                f"router {self.path}: row {int(rows.max())} of {flat_i.shape[0]} asked for"
            )
        experts = torch.tensor(
            [list(self.rows[int(r)]) for r in rows], dtype=flat_i.dtype, device=flat_i.device
        )
        if experts.shape[1] != flat_i.shape[1]:
            raise InputError(f"router {self.path} chooses {flat_i.shape[1]} experts; give sets of that size")
        scores = router_scores(flat_logits[rows], self.scoring)
        new_w, new_i = flat_w.clone(), flat_i.clone()
        new_w[rows] = set_weights(scores, experts, self.rule).to(new_w.dtype)
        new_i[rows] = experts
        return (logits, new_w.reshape(weights.shape), new_i.reshape(indices.shape), *output[3:])


class RouteSwap:
    """The live hooks of `swap_routes`: set `routes[path]` before each forward; `rules` after one."""

    def __init__(self, hooks: Mapping[str, _Replace]) -> None:
        self._hooks = hooks

    def set(self, routes: Mapping[str, RowRoutes]) -> None:
        """The rows to replace in the next forward pass, per router path (others: none)."""
        unknown = sorted(set(routes) - set(self._hooks))
        if unknown:
            raise InputError(f"no hooked router {unknown[0]!r}")
        for path, hook in self._hooks.items():
            hook.rows = dict(routes.get(path, {}))

    def seen(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The last call of router `path`: its scores [T, E] float32 and chosen experts [T, k] (CPU)."""
        seen = self._hooks[path].seen
        if seen is None:
            raise InterventionError(f"router {path} did not run in the last forward pass")
        return seen

    @property
    def rules(self) -> dict[str, WeightRule | None]:
        """The weight rule each router showed in the last forward pass (None: it did not run)."""
        return {path: hook.rule for path, hook in self._hooks.items()}


def check_swappable(model: torch.nn.Module, routers: Sequence[Mapping[str, Any]]) -> None:
    """Refuse routers whose output cannot be swapped row by row (one line, before any forward)."""
    names = dict(model.named_modules())
    for router in routers:
        path = router["path"]
        if router.get("convention", "triple") != "triple":
            raise InputError(
                f"router {path} returns the {router['convention']!r} convention; counterfactual routes "
                "need routers returning (logits, weights, indices)"
            )
        if int(router.get("call_count", 1)) != 1:
            raise InputError(
                f"router {path} runs {router['call_count']} times per forward; choose other layers"
            )
        if has_selection_bias(names[path]):
            raise InputError(f"router {path} chooses with a selection bias; its routes cannot be swapped")


@contextmanager
def swap_routes(model: torch.nn.Module, routers: Sequence[Mapping[str, Any]]) -> Iterator[RouteSwap]:
    """Hook `routers` (manifest entries: path, scoring, convention) for row-wise route replacement; every
    hook is removed on exit. Without `set(...)` the hooks only read each router's weight rule."""
    check_swappable(model, routers)
    names = dict(model.named_modules())
    hooks = {r["path"]: _Replace(r["path"], str(r.get("scoring", "softmax"))) for r in routers}
    handles = [names[path].register_forward_hook(hook) for path, hook in hooks.items()]
    try:
        yield RouteSwap(hooks)
    finally:
        for handle in handles:
            handle.remove()
