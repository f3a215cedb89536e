"""`record_pipeline()`: routing at every denoising step of a diffusers pipeline with an MoE transformer.

A diffusers pipeline owns its denoising loop, so RouteScope does not drive it as it drives a sampler
(hooks/diffusion.py): it listens. Forward hooks on the routers collect every router call while the pipeline
runs, and the pipeline's own `callback_on_step_end(pipe, step, timestep, ...)` closes each step, so every
call is written with its `step` and the scheduler's `timestep` (and `sigma` where the scheduler has one).

HiDream-I1's MoE gate (DeepSeek style, also the DiT-MoE reference's) returns `(topk_idx, topk_weight,
aux_loss)` and keeps its logits to itself. `observed_gates` attaches a parameter-free `GateView` under each
such gate for the duration of the recording; a hook on the gate passes it the logits `F.linear(input,
gate.weight)` — the gate's own computation on its own input — with the experts and weights the gate
returned, so the record holds what the layer applied plus the distribution it chose from.

Batching follows the diffusers convention: with guidance the transformer sees `[uncond rows, cond rows]`
in one call; they become samples `n..2n-1` (`branch=uncond`) and `0..n-1` (`branch=cond`). Pipelines
that call the transformer twice per step instead (NucleusMoE-Image: the prompt, then the negative prompt)
have the first call's rows as the conditional samples and the second's as the unconditional ones. Tokens
are the image patches (`row`, `col` from the latent grid: `[B, C, h, w]` latents, or packed `[B, S, C]`
latents with the pipeline's `img_shapes`) and, in single-stream blocks that route text tokens too, the
text positions after them (no row/col). Expert-choice layers (NucleusMoE: each expert picks its tokens of
a sequence, so a token has 0 … E experts) are recorded as such: the router's `choice` is `expert` and a
token has one assignment row per expert that picked it (hooks/normalise.py, `expert_choice`).

`record_pipeline()` checks its arguments into a `PipelineSource` and hands it to the recording driver
(hooks/driver.py), which owns the opening checks, the manifest, the writer and the progress; the gate
observers live in hooks/gates.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from routescope.store.errors import InputError, ModelSpecError, NoRoutersError
from routescope.store.reader import Run, Store
from routescope.store.schema import IMAGES, TOKENS

from .dimensions import image_rows, samples_table, steps_table
from .driver import record_source
from .gates import VIEW, GateView, is_index_weight_gate, observed_gates
from .loaded import LoadedModel
from .manifest import ManifestFacts, model_facts
from .normalise import normalise
from .routers import RouterSpec, candidate_paths, describe_from_outputs
from .source import BaseSource, Plan, Sink
from .tables import router_call_tables, token_table
from .units import Layout

PIPELINE_LABELS = ["prompt", "branch", "pair"]
__all__ = ["PIPELINE_LABELS", "VIEW", "GateView", "PipelineSource", "is_index_weight_gate", "record_pipeline"]


def _unit_images(images: Any, grid: tuple[int, int]) -> np.ndarray:
    """Pipeline output → [n, H, W] in [0, 1]: RGB in [0, 1] as luminance, latents as a channel-mean
    preview (z/2 clipped to [−1, 1], as for DiT-MoE); packed latents [n, S, C] are unpacked on `grid`."""
    x = torch.as_tensor(images).float()
    if x.dim() == 3 and x.shape[1] == grid[0] * grid[1]:
        x = x.reshape(x.shape[0], grid[0], grid[1], x.shape[2]).permute(0, 3, 1, 2)
    if x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)  # numpy-style NHWC
    if x.shape[1] == 3 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0:
        weights = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
        return (x * weights).sum(dim=1).numpy()
    return (((x.mean(dim=1) / 2.0).clamp(-1.0, 1.0) + 1.0) / 2.0).numpy()  # latents


@dataclasses.dataclass
class _Listener:
    """Collects router outputs between step callbacks and writes each finished step."""

    n: int
    writer: Sink
    paths: list[str]
    views: dict[str, str]
    declared: Sequence[str] | Mapping[str, Any] | None
    with_probs: bool
    transformer: torch.nn.Module
    scheduler: Any
    specs: list[RouterSpec] | None = None
    grid: tuple[int, int] | None = None
    image_len: int = 0
    batch: int = 0
    calls_this_step: int = 0
    passes: int = 1
    """Transformer calls per step: 1 (guidance batched into one call, or none) or 2 (cond, then uncond)."""
    outputs: dict[str, list[tuple[int, Any]]] = dataclasses.field(default_factory=dict)
    """Router path → (transformer call of this step, output) in the order the router ran."""
    max_len: int = 0

    @property
    def guided(self) -> bool:
        return self.batch == 2 * self.n or self.passes == 2

    def before_transformer(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        shapes = kwargs.get("img_shapes")
        packed = isinstance(hidden, torch.Tensor) and hidden.dim() == 3 and shapes
        if not (isinstance(hidden, torch.Tensor) and (hidden.dim() == 4 or packed)):
            raise InputError(
                "record_pipeline needs the transformer to receive latents [B, C, h, w], or packed latents "
                "[B, S, C] with img_shapes"
            )
        self.calls_this_step += 1
        if self.calls_this_step > 2 or (self.calls_this_step == 2 and hidden.shape[0] != self.n):
            raise InputError(
                "the pipeline called its transformer more than twice in a step, or twice on a batched "
                "guidance; RouteScope records one call per step, or one per guidance branch (cond first)"
            )
        self.passes = max(self.passes, self.calls_this_step)
        if packed:
            _, h, w = (int(v) for v in shapes[0])  # (frames, rows, cols) of the patch grid
            self.grid, self.image_len = (h, w), h * w
            self.batch = hidden.shape[0]
        else:
            patch = int(getattr(getattr(self.transformer, "config", None), "patch_size", None) or 1)
            _, _, h, w = hidden.shape
            self.grid, self.batch = (h // patch, w // patch), hidden.shape[0]
            padded = getattr(self.transformer, "max_seq", None)
            self.image_len = (
                int(padded) if h != w and isinstance(padded, int) else self.grid[0] * self.grid[1]
            )
        if self.batch not in (self.n, 2 * self.n):
            raise InputError(f"the transformer saw a batch of {self.batch} for {self.n} prompts")

    def keep(self, path: str) -> Callable[..., None]:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            detached = tuple(t.detach().cpu() for t in output) if isinstance(output, tuple) else output
            self.outputs.setdefault(path, []).append((self.calls_this_step - 1, detached))

        return hook

    def _describe(self) -> list[RouterSpec]:
        # the first step's outputs are one forward pass: they fix order, call counts, convention, E and k
        first_pass = {path: [o for p, o in outs if p == 0] for path, outs in self.outputs.items()}
        specs = describe_from_outputs(self.transformer, self.paths, first_pass, self.declared)
        layers = [s.layer for s in specs]
        renumber = len(set(layers)) < len(layers)  # e.g. HiDream: double_stream_blocks.i and single_...i
        return [
            dataclasses.replace(
                s,
                path=self.views.get(s.path, s.path),
                layer=s.id if renumber else s.layer,
                router_class=type(
                    dict(self.transformer.named_modules())[self.views.get(s.path, s.path)]
                ).__name__,
            )
            for s in specs
        ]

    def _layout(self, rows: int, spec: RouterSpec, transformer_call: int) -> Layout:
        if rows % self.batch:
            raise InputError(f"router {spec.path} returned {rows} rows for a batch of {self.batch}")
        length = rows // self.batch
        self.max_len = max(self.max_len, length)
        batch_rows = torch.arange(self.batch)
        if self.passes == 2:  # one call per branch: cond rows, then uncond rows
            samples = batch_rows + transformer_call * self.n
        else:  # [uncond, cond] → cond first
            samples = batch_rows - self.n if self.batch == 2 * self.n else batch_rows
            samples = torch.where(samples < 0, samples + 2 * self.n, samples)
        position = torch.arange(length)
        n_patches = self.grid[0] * self.grid[1] if self.grid else 0
        real = (position < n_patches) | (position >= self.image_len)
        return Layout(
            sample=samples.repeat_interleave(length),
            position=position.repeat(self.batch),
            real=real.repeat(self.batch),
        )

    def on_step_end(self, _pipe: Any, step: int, timestep: Any, _kwargs: dict[str, Any]) -> None:
        if self.specs is None:
            self.specs = self._describe()
        by_view = {s.path: s for s in self.specs}
        for view_path, outputs in self.outputs.items():
            spec = by_view.get(self.views.get(view_path, view_path))
            if spec is None:
                continue
            calls = [0, 0]  # the router's calls within each transformer call
            for transformer_call, output in outputs:
                decoded = normalise(output, spec.rule)
                call = calls[transformer_call]
                calls[transformer_call] += 1
                assignments, decisions = router_call_tables(
                    decoded,
                    self._layout(decoded.expert.shape[0], spec, transformer_call),
                    spec,
                    step=step,
                    call=call,
                    with_probs=self.with_probs,
                )
                self.writer.write("assignments", assignments)
                self.writer.write("decisions", decisions)
        sigmas = getattr(self.scheduler, "sigmas", None)
        sigma = float(sigmas[step]) if isinstance(sigmas, torch.Tensor) and step < len(sigmas) else None
        self.writer.write("steps", steps_table([step], [float(timestep)], [sigma]))
        self.outputs.clear()
        self.calls_this_step = 0
        self.writer.advance()


class PipelineSource(BaseSource):
    """A diffusers pipeline run once on prompts, listened to: routers and patch grid are learnt as it runs."""

    labels = PIPELINE_LABELS

    def __init__(
        self,
        pipe: Any,
        prompts: Sequence[str],
        *,
        steps: int,
        guidance_scale: float,
        seed: int,
        probs: bool,
        routers: Sequence[str] | Mapping[str, Any] | None,
        progress: bool,
        pipeline_kwargs: dict[str, Any],
    ) -> None:
        transformer = getattr(pipe, "transformer", None)
        if not isinstance(transformer, torch.nn.Module):
            raise ModelSpecError(f"{type(pipe).__name__} has no transformer to record")
        self.pipe, self.transformer, self.prompt_input = pipe, transformer, prompts
        self.steps, self.guidance_scale, self.seed, self.probs = steps, guidance_scale, seed, probs
        self.declared, self.progress, self.pipeline_kwargs = routers, progress, pipeline_kwargs
        self.extra_tables = {"images": IMAGES}

    def prepare(self) -> Plan:
        self.prompts = prompts = list(self.prompt_input)
        if not prompts or not all(isinstance(p, str) for p in prompts) or self.steps < 1:
            raise InputError("give at least one prompt (a string per image) and steps ≥ 1")
        return Plan(batches=1, units=self.steps)

    def routers(self) -> list[RouterSpec]:
        return []  # learnt from the first step (`late_facts`)

    def manifest_facts(self) -> ManifestFacts:
        options = {
            "probs": self.probs,
            "logits": self.probs,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "prompts": self.prompts,
        }
        subject = LoadedModel(model=self.transformer, spec=type(self.pipe).__name__, source="object")
        return ManifestFacts(
            kind="diffusion",
            model=model_facts(subject),
            tokenizer=None,
            labels=PIPELINE_LABELS,
            seed=self.seed,
            options=options,
        )

    def batches(self, sink: Sink) -> Iterator[None]:
        """The whole pipeline call is one batch; each denoising step is written when the pipeline ends it."""
        pipe, transformer, routers, kwargs = (
            self.pipe,
            self.transformer,
            self.declared,
            dict(self.pipeline_kwargs),
        )
        with observed_gates(transformer) as views:
            paths = list(views) if views and not routers else candidate_paths(transformer, routers)
            listener = _Listener(
                len(self.prompts), sink, paths, views, routers, self.probs, transformer, pipe.scheduler
            )
            modules = dict(transformer.named_modules())
            handles = [modules[p].register_forward_hook(listener.keep(p)) for p in paths]
            handles.append(
                transformer.register_forward_pre_hook(listener.before_transformer, with_kwargs=True)
            )
            user_callback = kwargs.pop("callback_on_step_end", None)

            def callback(
                pipeline: Any, step: int, timestep: Any, step_kwargs: dict[str, Any]
            ) -> dict[str, Any]:
                listener.on_step_end(pipeline, step, timestep, step_kwargs)
                return user_callback(pipeline, step, timestep, step_kwargs) if user_callback else {}

            if not any("prompt_embeds" in key for key in kwargs):
                kwargs["prompt"] = self.prompts
            if getattr(pipe, "vae", None) is None:
                kwargs.setdefault("output_type", "latent")
            kwargs.setdefault("output_type", "pt")
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=not self.progress)
            try:
                with torch.no_grad():
                    result = pipe(
                        num_inference_steps=self.steps,
                        guidance_scale=self.guidance_scale,
                        generator=torch.Generator().manual_seed(self.seed),
                        callback_on_step_end=callback,
                        **kwargs,
                    )
            finally:
                for handle in handles:
                    handle.remove()
            if listener.specs is None or listener.grid is None:
                raise NoRoutersError(f"no router ran while {type(pipe).__name__} denoised")
        self.listener = listener
        images = result.images if hasattr(result, "images") else result[0]
        self.images = _unit_images(images, listener.grid)
        yield

    def late_facts(self) -> dict[str, Any]:
        specs, grid = self.listener.specs or [], self.listener.grid or (0, 0)
        return {"routers": [s.to_manifest() for s in specs], "patch_grid": list(grid)}

    def dimensions(self) -> Iterator[tuple[str, pa.Table]]:
        return _dimensions(self.prompts, self.listener, self.images)


def record_pipeline(
    pipe: Any,
    prompts: Sequence[str],
    *,
    store: Store | str,
    name: str,
    steps: int = 28,
    guidance_scale: float = 5.0,
    seed: int = 0,
    probs: bool = False,
    routers: Sequence[str] | Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **pipeline_kwargs: Any,
) -> Run:
    """Run `pipe` once on `prompts` (one image each) and record every MoE router call at every step.

    `prompts` label the samples; they are passed to the pipeline as `prompt=` unless `pipeline_kwargs`
    already carry prompt embeddings (then they only name the samples). Other keyword arguments go to the
    pipeline as they are (height, width, negative prompts, ...). The final images are stored as luminance
    (or, with `output_type="latent"` or no VAE, as a latent preview).
    """
    source = PipelineSource(
        pipe,
        prompts,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        probs=probs,
        routers=routers,
        progress=progress,
        pipeline_kwargs=pipeline_kwargs,
    )
    return record_source(source, store=store, name=name, overwrite=overwrite, progress=progress)


def _dimensions(
    prompts: list[str], listener: _Listener, images: np.ndarray
) -> Iterator[tuple[str, pa.Table]]:
    """Samples (cond, then uncond when guided), one token row per recorded position, final images."""
    n, guided = len(prompts), listener.guided
    count = 2 * n if guided else n
    rows, cols = listener.grid or (0, 0)
    patches = rows * cols
    positions = [p for p in range(listener.max_len) if p < patches or p >= listener.image_len]
    labels = {
        "prompt": (prompts * 2)[:count],
        "branch": ["cond"] * n + ["uncond"] * (count - n),
        "pair": [str(i) for i in range(n)] * (count // n),
    }
    yield (
        "samples",
        samples_table(
            np.arange(count),
            text=(prompts * 2)[:count],
            n_tokens=np.full(count, len(positions)),
            labels=labels,
        ),
    )
    grid_rows = [p // cols if p < patches else None for p in positions]
    grid_cols = [p % cols if p < patches else None for p in positions]
    names = {
        p: f"{p // cols},{p % cols}" if p < patches else f"text:{p - listener.image_len}" for p in positions
    }
    for sample in range(count):
        columns = token_table(
            sample, positions, positions, names.__getitem__, generated=False, stack="decoder"
        ).columns
        columns[6], columns[7] = pa.array(grid_rows, pa.int32()), pa.array(grid_cols, pa.int32())
        yield "tokens", pa.Table.from_arrays(columns, schema=TOKENS)
    yield "images", image_rows(range(n), images, -1)
