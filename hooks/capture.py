"""Run a model once and collect every router call's raw output.

Two engines with identical results (tested): nnsight's `tracer.cache` — the default, because the same
trace can later run through nnsight's remote execution — and plain forward hooks, which skip nnsight's
fixed per-trace cost (about 0.5–1 ms) when many tiny batches are recorded. Both return, per router path,
the outputs of every call in execution order, detached and on the CPU: for a forward pass that is
`call_count` entries, for generation `call_count` entries per step (step 0 = the prompt).

The trace blocks are remote-safe: they reference only nnsight objects built before the block (envoys, the
tracer), never RouteScope objects, so with `remote=` the same block is serialised and run by nnsight's
remote execution (NDIF, or `"local"` simulation; see remote.py) and the router outputs come back.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .remote import Remote

Engine = Literal["nnsight", "hooks"]
ENGINES: tuple[Engine, ...] = ("nnsight", "hooks")


@dataclass
class Captured:
    """Raw router outputs of one batch, plus the generated ids when the batch generated."""

    outputs: dict[str, list[Any]]
    sequences: torch.Tensor | None = None
    result: Any = None
    """What the model's forward returned (forward passes only)."""


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, tuple | list):
        return type(value)(_to_cpu(v) for v in value)
    return value


class Capturer:
    """Holds the model (and its nnsight wrappers, built once) and captures router outputs per batch."""

    def __init__(
        self,
        model: torch.nn.Module,
        paths: list[str],
        engine: Engine,
        tokenizer: Any = None,
        remote: Remote = False,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
        if remote and engine != "nnsight":
            raise ValueError("remote recording runs nnsight traces; use engine='nnsight'")
        self.model = model
        self.paths = paths
        self.engine = engine
        self.tokenizer = tokenizer
        self.remote = remote
        self._traced: Any = None
        self._generator: Any = None

    def forward(self, inputs: dict[str, Any], args: tuple[Any, ...] = ()) -> Captured:
        """One forward pass on keyword inputs (`input_ids`, `attention_mask`, ...) or positional `args`."""
        if self.engine == "hooks":
            out: dict[str, Any] = {}

            def run_forward() -> None:
                out["result"] = self.model(*args, **inputs)

            captured = self._with_hooks(run_forward)
            captured.result = out["result"]
            return captured
        if self.remote:  # only a Remotable wrapper ships traces; the model's output stays on the server
            wrapped = self._transformers()
            envoys = [wrapped.get(p) for p in self.paths]
            with torch.no_grad(), wrapped.trace(*args, remote=self.remote, **inputs) as tracer:
                cache = tracer.cache(modules=envoys)
            return Captured(outputs=self._from_cache(cache, wrapped))
        from nnsight import NNsight

        if self._traced is None:
            self._traced = NNsight(self.model)
        traced = self._traced
        envoys = [traced.get(p) for p in self.paths]  # built outside the block: it holds only nnsight objects
        with torch.no_grad(), traced.trace(*args, **inputs) as tracer:
            cache = tracer.cache(modules=envoys)
            result = traced.output.save()
        return Captured(outputs=self._from_cache(cache, traced), result=result)

    def generate(self, inputs: dict[str, Any], **generate_kwargs: Any) -> Captured:
        """Greedy or sampled generation; router outputs for the prompt (step 0) and each new token."""
        if self.engine == "hooks":
            result: dict[str, torch.Tensor] = {}

            def run() -> None:
                result["sequences"] = self.model.generate(**inputs, **generate_kwargs)  # type: ignore[operator]

            captured = self._with_hooks(run)
            captured.sequences = result["sequences"].cpu()
            return captured
        wrapped = self._transformers()
        envoys = [wrapped.get(p) for p in self.paths]
        remote = {"remote": self.remote} if self.remote else {}
        with torch.no_grad(), wrapped.generate(dict(inputs), **remote, **generate_kwargs) as tracer:
            cache = tracer.cache(modules=envoys)
            sequences = tracer.result.save()
        return Captured(outputs=self._from_cache(cache, wrapped), sequences=torch.as_tensor(sequences).cpu())

    def _transformers(self) -> Any:
        """nnsight's TransformersModel around the model (built once): it generates, and it is Remotable —
        its remote identity is the model's hub id (`config._name_or_path`) and the task."""
        from nnsight import TransformersModel

        if self._generator is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._generator = TransformersModel(self.model, tokenizer=self.tokenizer)
        return self._generator

    def _from_cache(self, cache: Any, root: Any) -> dict[str, list[Any]]:
        """Per path, its outputs; keyed in the order the modules first ran (the cache's insertion order)."""
        keys = {f"{root.get(path).path}": path for path in self.paths}
        outputs: dict[str, list[Any]] = {}
        for key in cache.keys():  # noqa: SIM118 — a CacheView, not a dict: no __iter__
            if key in keys:
                view = cache[key]
                values = view.output
                outputs[keys[key]] = [_to_cpu(v) for v in values] if len(view) > 1 else [_to_cpu(values)]
        return outputs

    def _with_hooks(self, run: Callable[[], Any]) -> Captured:
        return Captured(outputs=collect_outputs(self.model, self.paths, run))


def collect_outputs(model: torch.nn.Module, paths: list[str], run: Callable[[], Any]) -> dict[str, list[Any]]:
    """Run `run()` with plain forward hooks on `paths`; return each module's outputs (detached, on the CPU),
    keyed in the order the modules first ran. Modules that never ran are absent."""
    names = dict(model.named_modules())
    outputs: dict[str, list[Any]] = {}

    def hook(path: str) -> Callable[..., None]:
        def keep(_module: torch.nn.Module, _args: Any, output: Any) -> None:
            outputs.setdefault(path, []).append(_to_cpu(output))

        return keep

    handles = [names[p].register_forward_hook(hook(p)) for p in paths]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return outputs
