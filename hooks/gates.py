"""Observers for gates that keep their logits to themselves (HiDream-I1's MoE gate, DiT-MoE's reference).

Such a gate returns `(topk_idx, topk_weight, aux_loss)`. `observed_gates` attaches a parameter-free
`GateView` under each one while a pipeline is recorded (hooks/diffusers_loop.py); a hook on the gate passes
it the logits `F.linear(input, gate.weight)` — the gate's own computation on its own input — with the
experts and weights the gate returned, so the record holds what the layer applied plus the distribution it
chose from. Kept apart from the recording loop so that loop stays about steps and samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

VIEW = "routescope_view"
"""Name of the observer child attached under an index-weight gate while recording."""


class GateView(torch.nn.Module):
    """Parameter-free observer: `forward(logits, weights, indices)` returns the `triple` convention with
    the chosen experts ordered by weight (rank 0 = top-1); the experts and weights are the gate's own."""

    def forward(
        self, logits: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        order = weights.argsort(dim=-1, descending=True)
        return logits.float(), weights.gather(-1, order).float(), indices.gather(-1, order)


def is_index_weight_gate(module: torch.nn.Module, parent: torch.nn.Module | None) -> bool:
    """A DeepSeek-style gate: own `weight` [E, D], an int `top_k`, softmax scoring, `experts` beside it."""
    weight = getattr(module, "weight", None)
    return (
        not isinstance(module, torch.nn.Linear)
        and isinstance(weight, torch.nn.Parameter)
        and weight.dim() == 2
        and isinstance(getattr(module, "top_k", None), int)
        and getattr(module, "scoring_func", "softmax") == "softmax"
        and parent is not None
        and hasattr(parent, "experts")
    )


@contextmanager
def observed_gates(model: torch.nn.Module) -> Iterator[dict[str, str]]:
    """Attach a `GateView` under every index-weight gate; yields view path → gate path; detaches after."""
    names = dict(model.named_modules())
    views: dict[str, str] = {}
    handles = []

    def hook(gate: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        hidden = args[0]
        logits = F.linear(hidden.reshape(-1, hidden.shape[-1]), gate.weight)  # type: ignore[arg-type]
        getattr(gate, VIEW)(logits, output[1], output[0])

    for path, module in names.items():
        parent = names.get(path.rpartition(".")[0]) if "." in path else model
        if path and is_index_weight_gate(module, parent):
            module.add_module(VIEW, GateView())
            handles.append(module.register_forward_hook(hook))
            views[f"{path}.{VIEW}"] = path
    try:
        yield views
    finally:
        for handle in handles:
            handle.remove()
        for path in views.values():
            delattr(names[path], VIEW)
