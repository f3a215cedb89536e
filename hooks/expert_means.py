"""Mean expert outputs (`record(expert_means=True)`): every token through every expert of a layer, summed.

Why: output-based merging criteria (HC-SMoE and kin) compare what experts *compute*, not where the router
sends tokens: two experts whose mean outputs on the same calibration tokens point the same way are merge
candidates even if the router never confuses them. That needs each expert's output on tokens it was not
routed, so the chosen-expert norms of `expert_stats` do not suffice. The mechanism is theirs
(hooks/expert_outputs.py): the model's own experts module, called by its class `forward` with one-hot
routing and a weight of 1.0, here with every token copied once per expert (`rank_outputs` with the E
experts as E "ranks"), so it works for every family that calls `experts(hidden, index, weights)` —
fused 3-D weights and Switch's one-hot masks alike — without a formula per family.

A forward hook keeps each experts call's input rows (on the model's device); when the batch is written,
the real tokens (attention mask) of each call go through all E experts in slices of `MAX_ELEMENTS`
outputs, and one row per expert holds Σ f_e(x) and the token count (`store.schema.EXPERT_MEANS`). Cost:
E/k times the chosen experts' work, once per batch. Forward recordings of decoder-only inputs only: there
the experts see exactly the batch's B × S rows, in the attention mask's order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from routescope.store.errors import InputError
from routescope.store.schema import EXPERT_MEANS

from .expert_outputs import MAX_ELEMENTS, _call_arguments, rank_outputs
from .routers import RouterSpec

FIELD = "expert_means"


def every_expert_index(like: torch.Tensor, tokens: int, n_experts: int) -> torch.Tensor:
    """Routing that sends each of `tokens` rows to all `n_experts` experts, in the convention of `like`:
    `[T, E]` expert ids for fused experts modules, `[T, E, E]` one-hot masks for Switch's."""
    if like.dim() == 3:
        eye = torch.eye(n_experts, dtype=like.dtype, device=like.device)
        return eye.unsqueeze(0).expand(tokens, n_experts, n_experts)
    ids = torch.arange(n_experts, dtype=like.dtype, device=like.device)
    return ids.unsqueeze(0).expand(tokens, n_experts)


def output_sums(
    module: torch.nn.Module, hidden: torch.Tensor, like: torch.Tensor, weights: torch.Tensor, n_experts: int
) -> np.ndarray:
    """`[E, H]` float64: Σ over the rows of `hidden` of f_e(x), for every expert e of the module (evaluated
    in slices of tokens of at most `MAX_ELEMENTS` outputs)."""
    sums = np.zeros((n_experts, hidden.shape[-1]))
    step = max(1, MAX_ELEMENTS // max(n_experts * hidden.shape[-1], 1))
    for start in range(0, hidden.shape[0], step):
        rows = hidden[start : start + step]
        index = every_expert_index(like, rows.shape[0], n_experts)
        ones = torch.ones(index.shape[:2], dtype=weights.dtype, device=weights.device)
        outputs = rank_outputs(module, rows, index, ones)  # [E, T, H]
        sums += outputs.double().sum(dim=1).cpu().numpy()
    return sums


class ExpertInputs:
    """Forward hooks on the experts modules of some routers; per router path and call, the call's
    (hidden `[T, H]`, index, weights) as the model passed them (detached, on their device)."""

    def __init__(self, model: torch.nn.Module, experts: dict[str, str]) -> None:
        self.model, self.experts = model, experts
        self.calls: dict[str, list[tuple[torch.Tensor, ...]]] = {}

    @contextmanager
    def watching(self) -> Iterator[dict[str, list[tuple[torch.Tensor, ...]]]]:
        """Hooks on while the block runs; yields the per-router lists the block's calls fill (fresh)."""
        self.calls = {}
        names = dict(self.model.named_modules())

        def keep(router: str) -> Any:
            def hook(
                module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any
            ) -> None:
                values = _call_arguments(module, args, kwargs)
                self.calls.setdefault(router, []).append(tuple(v.detach() for v in values))

            return hook

        handles = [
            names[path].register_forward_hook(keep(router), with_kwargs=True)
            for router, path in self.experts.items()
        ]
        try:
            yield self.calls
        finally:
            for handle in handles:
                handle.remove()

    def rows(
        self,
        calls: dict[str, list[tuple[torch.Tensor, ...]]],
        spec: RouterSpec,
        index: int,
        real: torch.Tensor,
    ) -> pa.Table:
        """The `expert_means` rows of one router call: Σ f_e(x) over the call's real tokens, per expert."""
        hidden, like, weights = calls[spec.path][index]
        mask = real.reshape(-1)
        if hidden.shape[0] != mask.numel():
            raise InputError(
                f"expert_means needs the experts of {spec.path} to see the batch's tokens as rows "
                f"({hidden.shape[0]} rows for {mask.numel()} tokens); record a decoder-only model forward",
                field=FIELD,
            )
        keep = mask.to(hidden.device)
        module = self.model.get_submodule(self.experts[spec.path])
        sums = output_sums(module, hidden[keep], like[keep], weights[keep], spec.n_experts)
        n = spec.n_experts
        return pa.table(
            {
                "router": np.full(n, spec.id, np.int16),
                "layer": np.full(n, spec.layer, np.int16),
                "call": np.full(n, index % spec.call_count, np.int16),
                "expert": np.arange(n, dtype=np.int32),
                "tokens": np.full(n, int(mask.sum()), np.int64),
                "output_sum": pa.array(list(sums.astype(np.float32)), pa.list_(pa.float32())),
            },
            schema=EXPERT_MEANS,
        )
