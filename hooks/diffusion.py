"""`record_diffusion()`: record routing at every denoising step of a class-conditional diffusion MoE.

The model's own sampler drives the loop; RouteScope hands it a `forward` that captures every router call
of that step (nnsight or hooks, as for text) and an `on_step` that receives the step's timestep, noise
level and predicted clean image. Each step calls the model once on the classifier-free-guidance batch
(conditional rows, then unconditional rows), and both halves are recorded as separate samples labelled
`branch` = `cond` / `uncond` — unlike the reference analysis scripts, which silently drop the
unconditional half. Every patch token is a position with its `row`/`col` on the patch grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from routescope.store.errors import InputError, ModelSpecError, RunExistsError
from routescope.store.reader import Run, Store, check_run_name
from routescope.store.schema import ASSIGNMENTS, IMAGES, STEPS, TOKENS, decisions_schema, samples_schema
from routescope.store.writer import RunWriter

from .capture import Capturer, Engine
from .loaded import LoadedModel
from .manifest import model_facts, package_versions
from .normalise import normalise
from .routers import RouterSpec, describe_routers
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


def _image_rows(samples: Sequence[int], images: np.ndarray, step: int) -> pa.Table:
    n, height, width = images.shape
    flat = pa.array(images.reshape(-1).astype(np.float32))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * height * width)
    return pa.table(
        {
            "sample": np.asarray(samples, dtype=np.int32),
            "step": np.full(n, step, np.int32),
            "height": np.full(n, height, np.int32),
            "width": np.full(n, width, np.int32),
            "pixels": pa.ListArray.from_arrays(offsets, flat),
        },
        schema=IMAGES,
    )


class _DiffusionSession:
    """Writes one chunk's sampling: router rows per step, steps, x0 and final images."""

    def __init__(
        self,
        specs: list[RouterSpec],
        writer: RunWriter,
        capturer: Capturer,
        *,
        n_cond: int,
        patches: int,
        with_probs: bool,
        save_x0: bool,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        self.specs, self.writer, self.capturer = specs, writer, capturer
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
        state = {"step": 0}

        def forward(*args: Any) -> Any:
            captured = self.capturer.forward({}, tuple(args))
            for spec in self.specs:
                for call, output in enumerate(captured.outputs.get(spec.path, [])):
                    assignments, decisions = router_call_tables(
                        normalise(output, spec.rule),
                        layout,
                        spec,
                        step=state["step"],
                        call=call,
                        with_probs=self.with_probs,
                    )
                    self.writer.write("assignments", assignments)
                    self.writer.write("decisions", decisions)
            state["step"] += 1
            if self.after_step is not None:
                self.after_step()
            return captured.result

        def on_step(info: Any) -> None:
            step = int(info.step)
            if step not in self.steps_written:
                self.steps_written.add(step)
                sigma = getattr(info, "sigma", None)
                self.writer.write(
                    "steps",
                    pa.table(
                        {
                            "step": [step],
                            "timestep": [float(info.timestep)],
                            "sigma": [None if sigma is None else float(sigma)],
                        },
                        schema=STEPS,
                    ),
                )
            if self.save_x0:
                x0 = torch.as_tensor(info.x0).detach().float().cpu().numpy()
                self.writer.write("x0", _image_rows(cond, x0, step))

        images = sampler(
            model,
            torch.tensor(chunk.classes),
            steps=steps,
            cfg_scale=cfg_scale,
            seed=seed,
            forward=forward,
            on_step=on_step,
        )
        self.writer.write("images", _image_rows(cond, torch.as_tensor(images).float().cpu().numpy(), -1))


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
) -> Run:
    """Sample `samples_per_class` images of each class and record every router call at every step.

    Samples `0..n-1` are the conditional rows (labels `class`, `branch=cond`, `pair` = own id) and
    `n..2n-1` the unconditional rows of the same trajectories (`branch=uncond`, `pair` = the conditional
    sample's id). Conditional samples are sampled `batch_size` at a time, chunk `i` with seed `seed + i`.
    `on_progress(done, total)` is called after every sampler step of every chunk (total = steps × chunks).
    """
    if model.sampler is None:
        raise ModelSpecError(
            f"{model.spec or type(model.model).__name__} is not a diffusion model (no sampler)"
        )
    store = store if isinstance(store, Store) else Store(store)
    check_run_name(name)
    if store.exists(name) and not overwrite:
        raise RunExistsError(
            f"run {name!r} already exists in {store.path}; pick another name or pass --overwrite"
        )
    if not classes or samples_per_class < 1 or steps < 1 or batch_size < 1:
        raise InputError("give at least one class, samples_per_class ≥ 1, steps ≥ 1 and batch_size ≥ 1")
    n_classes = getattr(model.model, "null_class", None)  # the null (unconditional) class id = n_classes
    bad = [
        c for c in classes if not isinstance(c, int) or c < 0 or (n_classes is not None and c >= n_classes)
    ]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise InputError(f"unknown class(es) {shown}; this model has classes 0..{(n_classes or 1) - 1}")
    if not math.isfinite(cfg_scale) or not -(2**63) <= seed < 2**63:
        raise InputError("cfg_scale must be a finite number and seed an integer in -2**63..2**63-1")
    torch_model, sampler = model.model.eval(), model.sampler
    rows, cols = _patch_grid(torch_model)
    specs = describe_routers(
        torch_model,
        lambda: sampler(torch_model, torch.tensor(classes[:1]), steps=1, cfg_scale=cfg_scale, seed=seed),
        routers or model.routers,
    )
    per_class = [c for c in classes for _ in range(samples_per_class)]
    n = len(per_class)
    chunks = [_Chunk(first, per_class[first : first + batch_size]) for first in range(0, n, batch_size)]
    manifest = {
        "kind": "diffusion",
        "model": model_facts(model),
        "tokenizer": None,
        "routers": [s.to_manifest() for s in specs],
        "labels": DIFFUSION_LABELS,
        "seed": seed,
        "patch_grid": [rows, cols],
        "options": {
            "probs": probs,
            "logits": probs,
            "steps": steps,
            "cfg_scale": cfg_scale,
            "classes": list(classes),
            "samples_per_class": samples_per_class,
            "batch_size": batch_size,
            "engine": engine,
            "save_x0": save_x0,
        },
        "packages": package_versions(),
    }
    schemas = {
        "samples": samples_schema(DIFFUSION_LABELS),
        "tokens": TOKENS,
        "assignments": ASSIGNMENTS,
        "decisions": decisions_schema(probs, with_logits=probs),
        "steps": STEPS,
        "images": IMAGES,
    }
    if save_x0:
        schemas["x0"] = IMAGES
    done = [0]

    def step_done() -> None:
        done[0] += 1
        assert on_progress is not None
        on_progress(done[0], steps * len(chunks))

    with RunWriter(store, name, schemas=schemas, manifest=manifest, overwrite=overwrite) as writer:
        session = _DiffusionSession(
            specs,
            writer,
            Capturer(torch_model, [s.path for s in specs], engine),
            n_cond=n,
            patches=rows * cols,
            with_probs=probs,
            save_x0=save_x0,
            after_step=step_done if on_progress is not None else None,
        )
        for index, chunk in enumerate(
            tqdm(chunks, desc=f"sampling {name}", unit="batch", disable=not progress or len(chunks) < 2)
        ):
            try:
                session.sample_chunk(
                    chunk, sampler, torch_model, steps=steps, cfg_scale=cfg_scale, seed=seed + index
                )
            except ValueError as exc:  # the sampler refused an option, e.g. more steps than its schedule
                raise InputError(f"the sampler of {model.spec or 'the model'} refused: {exc}") from None
        _write_dimensions(writer, per_class, rows, cols)
        path = writer.publish()
    return Run(path)


def _write_dimensions(writer: RunWriter, per_class: list[int], rows: int, cols: int) -> None:
    """Samples (both branches) and one token row per patch of every sample."""
    n, patches = len(per_class), rows * cols
    ids = np.arange(2 * n, dtype=np.int32)
    writer.write(
        "samples",
        pa.table(
            {
                "sample": ids,
                "text": pa.nulls(2 * n, pa.string()),
                "n_tokens": np.full(2 * n, patches, np.int32),
                "n_generated": np.zeros(2 * n, np.int32),
                "generated": pa.nulls(2 * n, pa.string()),
                "class": [str(c) for c in per_class * 2],
                "branch": ["cond"] * n + ["uncond"] * n,
                "pair": [str(i) for i in range(n)] * 2,
            }
        ),
    )
    grid_rows, grid_cols = np.divmod(np.arange(patches), cols)
    labels = [f"{r},{c}" for r, c in zip(grid_rows, grid_cols, strict=True)]
    for sample in ids.tolist():
        writer.write(
            "tokens",
            token_table(
                sample,
                range(patches),
                range(patches),
                labels.__getitem__,
                generated=False,
                stack="decoder",
                rows=grid_rows,
                cols=grid_cols,
            ),
        )
