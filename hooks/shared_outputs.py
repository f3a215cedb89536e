"""Shared experts' output norms and gates (`record(expert_stats=True)`), in a table of their own.

Why: in DeepSeekMoE-style blocks every token also passes through always-on shared experts, so a routed
expert's saliency reads differently beside a shared expert that carries most of the output. A shared
expert is an ordinary module (`mlp.shared_expert`, `mlp.shared_experts`, `shared_mlp`, found beside each
router, hooks/routers.py) that returns one output row per token, so a forward hook reads ‖output‖₂ per
token from the call the model makes anyway — no extra evaluation. Where the block scales it by a learnt
gate, transformers names that `<shared module>_gate` (Qwen2-MoE, Qwen3-Next: a `Linear(H, 1)` passed
through a sigmoid); its sigmoid is stored as `gate`, and `gate` is null where there is none (DeepSeek-V3).
Rows follow the router call beside the shared expert: same keys, one row per real token and module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from routescope.store.schema import SHARED_EXPERTS

from .routers import RouterSpec
from .units import Layout

GATE_SUFFIX = "_gate"


def _rows_of(output: Any) -> torch.Tensor:
    """`[T]` norms of a module output `[..., H]` (the first tensor of a tuple), flattened over tokens."""
    tensor = output[0] if isinstance(output, tuple | list) else output
    return tensor.detach().float().reshape(-1, tensor.shape[-1]).norm(dim=-1).cpu()


def _sigmoid_of(output: torch.Tensor) -> torch.Tensor:
    """`[T]` sigmoid of a gate's `[..., 1]` output."""
    return torch.sigmoid(output.detach().float().reshape(-1)).cpu()


class SharedNorms:
    """Forward hooks on the shared experts (and their gates) of some routers; per router path and call, a
    `[T, m]` norm tensor and a `[T, m]` gate tensor (NaN where a shared expert has no gate)."""

    def __init__(self, model: torch.nn.Module, shared: Mapping[str, Sequence[str]]) -> None:
        names = dict(model.named_modules())
        self.model = model
        self.modules = {router: list(paths) for router, paths in shared.items() if paths}
        self.gates = {
            path + GATE_SUFFIX
            for paths in self.modules.values()
            for path in paths
            if path + GATE_SUFFIX in names
        }
        self.seen: dict[str, list[torch.Tensor]] = {}

    def __bool__(self) -> bool:
        return bool(self.modules)

    @contextmanager
    def watching(self) -> Iterator[dict[str, list[torch.Tensor]]]:
        """Hooks on while the block runs; yields module path → its `[T]` norms (gates: sigmoids) per call."""
        self.seen = {}
        names = dict(self.model.named_modules())

        def keep(path: str, gate: bool) -> Any:
            def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
                value = _sigmoid_of(output) if gate else _rows_of(output)
                self.seen.setdefault(path, []).append(value)

            return hook

        paths = [(p, False) for ps in self.modules.values() for p in ps] + [(g, True) for g in self.gates]
        handles = [names[p].register_forward_hook(keep(p, gate)) for p, gate in paths]
        try:
            yield self.seen
        finally:
            for handle in handles:
                handle.remove()

    def call(self, seen: dict[str, list[torch.Tensor]], router: str, index: int) -> tuple[np.ndarray, ...]:
        """(`[T, m]` norms, `[T, m]` gates) of the router's shared experts at its `index`-th call."""
        norms, gates = [], []
        for path in self.modules.get(router, []):
            norms.append(seen[path][index].numpy())
            gate = seen.get(path + GATE_SUFFIX)
            gates.append(gate[index].numpy() if gate else np.full(len(norms[-1]), np.nan, np.float32))
        return np.stack(norms, axis=1), np.stack(gates, axis=1)

    def rows(
        self,
        seen: dict[str, list[torch.Tensor]],
        spec: RouterSpec,
        index: int,
        layout: Layout,
        step: int,
        call: int,
    ) -> Iterator[pa.Table]:
        """The `shared_experts` rows of one router call (none for a router without shared experts)."""
        if spec.path in self.modules:
            norms, gates = self.call(seen, spec.path, index)
            yield shared_rows(norms, gates, layout, spec, step=step, call=call)


def shared_rows(
    norms: np.ndarray, gates: np.ndarray, layout: Layout, spec: RouterSpec, *, step: int, call: int
) -> pa.Table:
    """Rows of the `shared_experts` table for one router call: per real token, one row per shared module
    (`module` = its index in the router's `shared_experts` list)."""
    keep = layout.real.numpy()
    n, m = int(keep.sum()), norms.shape[1]
    gate = gates[keep].reshape(-1).astype(np.float32)
    return pa.table(
        {
            "sample": np.repeat(layout.sample.numpy()[keep].astype(np.int32), m),
            "position": np.repeat(layout.position.numpy()[keep].astype(np.int32), m),
            "step": np.full(n * m, step, np.int32),
            "router": np.full(n * m, spec.id, np.int16),
            "layer": np.full(n * m, spec.layer, np.int16),
            "call": np.full(n * m, call, np.int16),
            "module": np.tile(np.arange(m, dtype=np.int16), n),
            "output_norm": norms[keep].reshape(-1).astype(np.float32),
            "gate": pa.array(gate, pa.float32(), mask=np.isnan(gate)),
        },
        schema=SHARED_EXPERTS,
    )
