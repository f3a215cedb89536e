"""`record_diffusion()`: record routing at every denoising step of a class-conditional diffusion MoE.

The model's own sampler drives the loop; RouteScope hands it a `forward` that captures every router call
of that step (nnsight or hooks, as for text) and an `on_step` that receives the step's timestep, noise
level and predicted clean image. Each step calls the model once on the classifier-free-guidance batch
(conditional rows, then unconditional rows), and both halves are recorded as separate samples labelled
`branch` = `cond` / `uncond` — unlike the reference analysis scripts, which silently drop the
unconditional half. Every patch token is a position with its `row`/`col` on the patch grid. A router
declared without positions (a gate over the timestep embedding, as in Switch-DiT) returns one row per
image instead of one per patch: it is recorded as one decision per (sample, step, router, call) with a
null `position`.

`expert_stats=True` adds `assignments.output_norm` (‖f_e(x)‖₂ of every chosen expert, before its gate) and
the `shared_experts` table, through the same mechanism as text recordings (hooks/expert_outputs.py,
hooks/shared_outputs.py): the DiT-MoE blocks keep their experts in a module list, so the router's input
is evaluated by the chosen members after each call.

`record_diffusion()` checks its arguments into a `DiffusionSource` and hands it to the recording driver
(hooks/driver.py), which owns the opening checks, the manifest, the writer and the progress.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from routescope.store.errors import InputError, ModelSpecError
from routescope.store.reader import Run, Store
from routescope.store.schema import IMAGES, SHARED_EXPERTS

from .capture import Capturer, Engine
from .dimensions import image_rows, samples_table, steps_table
from .driver import record_source
from .expert_outputs import ExpertNorms, experts_paths, resolve_norms
from .loaded import LoadedModel
from .manifest import ManifestFacts, model_facts
from .normalise import normalise
from .routers import RouterSpec, describe_routers, shared_expert_paths
from .shared_outputs import SharedNorms
from .source import BaseSource, Plan, Sink
from .tables import router_call_tables, token_table
from .units import Layout

DIFFUSION_LABELS = ["class", "branch", "pair"]


@dataclass(frozen=True)
class _Chunk:
    """Conditional samples sampled together: their global ids and classes."""

    first: int
    classes: list[int]


def _patch_grid(model: torch.nn.Module) -> tuple[int, int]:
    grid = getattr(model, "patch_grid", None)
    if not (isinstance(grid, tuple | list) and len(grid) == 2):
        raise ModelSpecError(
            f"{type(model).__name__} has no patch_grid (rows, cols); diffusion recording needs it"
        )
    return int(grid[0]), int(grid[1])


class _DiffusionSession:
    """Writes one chunk's sampling: router rows per step, steps, x0 and final images."""

    def __init__(
        self,
        specs: list[RouterSpec],
        writer: Sink,
        capturer: Capturer,
        *,
        n_cond: int,
        patches: int,
        with_probs: bool,
        save_x0: bool,
        after_step: Callable[[], None],
        norms: ExpertNorms | None = None,
        shared: SharedNorms | None = None,
    ) -> None:
        self.specs, self.writer, self.capturer = specs, writer, capturer
        self.norms, self.shared = norms, shared
        """Expert output norms and shared experts' norms (`expert_stats`), else None."""
        self.n_cond, self.patches = n_cond, patches
        self.with_probs, self.save_x0 = with_probs, save_x0
        self.steps_written: set[int] = set()
        self.after_step = after_step
        """Called after each model call (one sampler step of one chunk) is written."""

    def sample_chunk(
        self,
        chunk: _Chunk,
        sampler: Callable[..., torch.Tensor],
        model: torch.nn.Module,
        *,
        steps: int,
        cfg_scale: float,
        seed: int,
    ) -> None:
        cond = list(range(chunk.first, chunk.first + len(chunk.classes)))
        rows = torch.tensor(cond + [self.n_cond + s for s in cond])
        layout = Layout(
            sample=rows.repeat_interleave(self.patches),
            position=torch.arange(self.patches).repeat(len(rows)),
            real=torch.ones(len(rows) * self.patches, dtype=torch.bool),
        )
        per_sample = Layout(  # routers without positions: one row per image (both branches), no position
            sample=rows, position=torch.full_like(rows, -1), real=torch.ones(len(rows), dtype=torch.bool)
        )
        state = {"step": 0}

        def forward(*args: Any) -> Any:
            with ExitStack() as hooked:
                norms = hooked.enter_context(self.norms.watching()) if self.norms is not None else None
                shared = hooked.enter_context(self.shared.watching()) if self.shared is not None else None
                captured = self.capturer.forward({}, tuple(args))
            for spec in self.specs:
                calls = None if norms is None else norms.get(spec.path, [])
                for call, output in enumerate(captured.outputs.get(spec.path, [])):
                    decoded = normalise(output, spec.rule)
                    assignments, decisions = router_call_tables(
                        decoded,
                        per_sample if spec.positions == "none" else layout,
                        spec,
                        step=state["step"],
                        call=call,
                        with_probs=self.with_probs,
                        norms=None if calls is None else resolve_norms(calls[call], output, decoded.expert),
                    )
                    self.writer.write("assignments", assignments)
                    self.writer.write("decisions", decisions)
                    if self.shared is not None and shared is not None:
                        for rows in self.shared.rows(shared, spec, call, layout, state["step"], call):
                            self.writer.write("shared_experts", rows)
            state["step"] += 1
            self.after_step()
            return captured.result

        def on_step(info: Any) -> None:
            step = int(info.step)
            if step not in self.steps_written:
                self.steps_written.add(step)
                sigma = getattr(info, "sigma", None)
                timestep, sigma = float(info.timestep), None if sigma is None else float(sigma)
                self.writer.write("steps", steps_table([step], [timestep], [sigma]))
            if self.save_x0:
                x0 = torch.as_tensor(info.x0).detach().float().cpu().numpy()
                self.writer.write("x0", image_rows(cond, x0, step))

        images = sampler(
            model,
            torch.tensor(chunk.classes),
            steps=steps,
            cfg_scale=cfg_scale,
            seed=seed,
            forward=forward,
            on_step=on_step,
        )
        self.writer.write("images", image_rows(cond, torch.as_tensor(images).float().cpu().numpy(), -1))


class DiffusionSource(BaseSource):
    """A class-conditional diffusion model's own sampler, chunk by chunk, every step of every chunk."""

    verb = "sampling"
    labels = DIFFUSION_LABELS

    def __init__(
        self,
        model: LoadedModel,
        *,
        classes: Sequence[int],
        samples_per_class: int,
        steps: int,
        cfg_scale: float,
        seed: int,
        probs: bool,
        save_x0: bool,
        batch_size: int,
        engine: Engine,
        routers: Sequence[str] | Mapping[str, Any] | None,
        expert_stats: bool = False,
    ) -> None:
        if model.sampler is None:
            raise ModelSpecError(
                f"{model.spec or type(model.model).__name__} is not a diffusion model (no sampler)"
            )
        self.model, self.classes, self.samples_per_class = model, classes, samples_per_class
        self.steps, self.cfg_scale, self.seed, self.probs, self.save_x0 = (
            steps,
            cfg_scale,
            seed,
            probs,
            save_x0,
        )
        self.batch_size, self.engine, self.declared = batch_size, engine, routers
        self.expert_stats = bool(expert_stats)
        self.extra_tables = {"images": IMAGES, **({"x0": IMAGES} if save_x0 else {})}

    def prepare(self) -> Plan:
        """Check the classes and options, find the patch grid and describe the routers (one sampler step)."""
        classes, model = self.classes, self.model
        if not classes or self.samples_per_class < 1 or self.steps < 1 or self.batch_size < 1:
            raise InputError("give at least one class, samples_per_class ≥ 1, steps ≥ 1 and batch_size ≥ 1")
        n_classes = getattr(model.model, "null_class", None)  # the null (unconditional) class id = n_classes
        bad = [
            c
            for c in classes
            if not isinstance(c, int) or c < 0 or (n_classes is not None and c >= n_classes)
        ]
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise InputError(f"unknown class(es) {shown}; this model has classes 0..{(n_classes or 1) - 1}")
        if not math.isfinite(self.cfg_scale) or not -(2**63) <= self.seed < 2**63:
            raise InputError("cfg_scale must be a finite number and seed an integer in -2**63..2**63-1")
        self.torch_model = torch_model = model.model.eval()
        sampler = model.sampler
        assert sampler is not None  # checked when the source was built
        self.grid = _patch_grid(torch_model)
        self.specs = describe_routers(
            torch_model,
            lambda: sampler(
                torch_model, torch.tensor(classes[:1]), steps=1, cfg_scale=self.cfg_scale, seed=self.seed
            ),
            self.declared or model.routers,
        )
        if self.expert_stats:  # refuse routers without evaluable experts before anything is written
            paths = [spec.path for spec in self.specs]
            self.experts = experts_paths(torch_model, paths)
            self.shared_paths = shared_expert_paths(torch_model, paths)
            if self.shared_paths:
                self.extra_tables = {**self.extra_tables, "shared_experts": SHARED_EXPERTS}
        self.per_class = per_class = [c for c in classes for _ in range(self.samples_per_class)]
        size = self.batch_size
        self.chunks = [
            _Chunk(first, per_class[first : first + size]) for first in range(0, len(per_class), size)
        ]
        return Plan(batches=len(self.chunks), units=self.steps * len(self.chunks))

    def routers(self) -> list[RouterSpec]:
        return self.specs

    def manifest_facts(self) -> ManifestFacts:
        options = {
            "probs": self.probs,
            "logits": self.probs,
            "steps": self.steps,
            "cfg_scale": self.cfg_scale,
            "classes": list(self.classes),
            "samples_per_class": self.samples_per_class,
            "batch_size": self.batch_size,
            "engine": self.engine,
            "save_x0": self.save_x0,
            **({"expert_stats": True} if self.expert_stats else {}),
        }
        return ManifestFacts(
            kind="diffusion",
            model=model_facts(self.model),
            tokenizer=None,
            labels=DIFFUSION_LABELS,
            seed=self.seed,
            options=options,
            patch_grid=self.grid,
        )

    def batches(self, sink: Sink) -> Iterator[None]:
        rows, cols = self.grid
        norms = shared = None
        if self.expert_stats:
            norms = ExpertNorms(self.torch_model, self.experts)
            shared = SharedNorms(self.torch_model, self.shared_paths) or None
        session = _DiffusionSession(
            self.specs,
            sink,
            Capturer(self.torch_model, [s.path for s in self.specs], self.engine),
            n_cond=len(self.per_class),
            patches=rows * cols,
            with_probs=self.probs,
            save_x0=self.save_x0,
            after_step=sink.advance,
            norms=norms,
            shared=shared,
        )
        sampler = self.model.sampler
        assert sampler is not None
        for index, chunk in enumerate(self.chunks):
            try:
                session.sample_chunk(
                    chunk,
                    sampler,
                    self.torch_model,
                    steps=self.steps,
                    cfg_scale=self.cfg_scale,
                    seed=self.seed + index,
                )
            except ValueError as exc:  # the sampler refused an option, e.g. more steps than its schedule
                raise InputError(f"the sampler of {self.model.spec or 'the model'} refused: {exc}") from None
            yield

    def dimensions(self) -> Iterator[tuple[str, pa.Table]]:
        """Samples (both branches) and one token row per patch of every sample."""
        per_class, (rows, cols) = self.per_class, self.grid
        n, patches = len(per_class), rows * cols
        ids = np.arange(2 * n, dtype=np.int32)
        labels = {
            "class": [str(c) for c in per_class * 2],
            "branch": ["cond"] * n + ["uncond"] * n,
            "pair": [str(i) for i in range(n)] * 2,
        }
        yield "samples", samples_table(ids, n_tokens=np.full(2 * n, patches), labels=labels)
        grid_rows, grid_cols = np.divmod(np.arange(patches), cols)
        names = [f"{r},{c}" for r, c in zip(grid_rows, grid_cols, strict=True)]
        for sample in ids.tolist():
            yield (
                "tokens",
                token_table(
                    sample,
                    range(patches),
                    range(patches),
                    names.__getitem__,
                    generated=False,
                    stack="decoder",
                    rows=grid_rows,
                    cols=grid_cols,
                ),
            )


def record_diffusion(
    model: LoadedModel,
    *,
    classes: Sequence[int],
    samples_per_class: int = 1,
    steps: int = 50,
    cfg_scale: float = 4.0,
    seed: int = 0,
    store: Store | str,
    name: str,
    probs: bool = False,
    save_x0: bool = False,
    batch_size: int = 64,
    engine: Engine = "nnsight",
    routers: Sequence[str] | Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    expert_stats: bool = False,
) -> Run:
    """Sample `samples_per_class` images of each class and record every router call at every step.

    Samples `0..n-1` are the conditional rows (labels `class`, `branch=cond`, `pair` = own id) and
    `n..2n-1` the unconditional rows of the same trajectories (`branch=uncond`, `pair` = the conditional
    sample's id). Conditional samples are sampled `batch_size` at a time, chunk `i` with seed `seed + i`.
    `on_progress(done, total)` is called after every sampler step of every chunk (total = steps × chunks).
    `expert_stats=True` adds `assignments.output_norm` (‖f_e(x)‖₂ of each chosen expert before its gate)
    and, for blocks with shared experts, the `shared_experts` table (hooks/expert_outputs.py).
    """
    source = DiffusionSource(
        model,
        classes=classes,
        samples_per_class=samples_per_class,
        steps=steps,
        cfg_scale=cfg_scale,
        seed=seed,
        probs=probs,
        save_x0=save_x0,
        batch_size=batch_size,
        engine=engine,
        routers=routers,
        expert_stats=expert_stats,
    )
    return record_source(
        source, store=store, name=name, overwrite=overwrite, progress=progress, on_progress=on_progress
    )
