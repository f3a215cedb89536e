"""`routescope record-pipeline`: record a diffusers MoE pipeline (HiDream-I1) saved in a local folder.

A diffusers pipeline is not a model `load_model` returns: it is a folder of components (`model_index.json`)
that runs its own denoising loop, so it gets its own command with its own options (guidance scale, image
size) instead of more branches in `routescope record`. The folder loads with
`DiffusionPipeline.from_pretrained(..., local_files_only=True, use_safetensors=True)`: safetensors
weights only, no hub access and never a checkpoint's own code. Recording is
`hooks.diffusers_loop.record_pipeline`; each sample carries its prompt text as the `prompt` label.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from routescope.store import InputError, ModelSpecError, Run

from .console import out
from .inputs import read_inputs

MAX_SIDE = 16_384
"""Larger than any image a diffusion pipeline generates: a typo such as --height 10240000 fails at once."""


def add_pipeline_arguments(rec: argparse.ArgumentParser) -> None:
    rec.add_argument("folder", help="a local diffusers pipeline folder (saved with save_pretrained)")
    rec.add_argument("--store", required=True, help="store folder (created if absent)")
    rec.add_argument("--name", required=True, help="run name (letters, digits, . _ -)")
    rec.add_argument("--prompt", action="append", help="a prompt, one image each (repeatable)")
    rec.add_argument("--file", help="prompts: .txt (one per line) or .jsonl (see --prompt-column)")
    rec.add_argument("--prompt-column", default="prompt", help="prompt column of a .jsonl file")
    rec.add_argument("--steps", type=int, default=28, help="denoising steps (default 28)")
    rec.add_argument("--guidance-scale", type=float, default=5.0, help="classifier-free guidance (default 5)")
    rec.add_argument("--height", type=int, help="image height in pixels (default: the pipeline's)")
    rec.add_argument("--width", type=int, help="image width in pixels (default: the pipeline's)")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--probs", action="store_true", help="also store each decision's full probabilities")
    rec.add_argument("--dtype", default=None, help="load the pipeline in this dtype (e.g. bfloat16)")
    rec.add_argument("--device", default=None, help="torch device (default: CPU)")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")


def read_prompts(prompts: list[str] | None, file: str | None, column: str = "prompt") -> list[str]:
    """The prompts of `--prompt` (repeated) or `--file` (.txt lines or a .jsonl column); none may be blank."""
    if bool(prompts) == bool(file):
        raise InputError("give either --prompt (repeatable) or --file, not both and not neither")
    texts = list(prompts) if prompts else read_inputs(None, file, [], text_column=column).texts
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            raise InputError(f"prompt {number} is empty; give the text of each image")
    return texts


def load_pipeline(folder: str, *, dtype: str | None = None, device: str | None = None) -> Any:
    """A diffusers pipeline from a local folder: safetensors only, no hub, no remote code."""
    path = Path(folder).expanduser()
    if not (path.is_dir() and (path / "model_index.json").is_file()):
        raise ModelSpecError(
            f"{folder} is not a local pipeline folder (no model_index.json in it); record-pipeline loads a "
            "folder saved with save_pretrained, never from a hub"
        )
    resolved = _dtype(dtype)
    try:
        import diffusers
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging
    except ImportError:
        raise ModelSpecError("record-pipeline needs diffusers: pip install 'routescope[diffusers]'") from None
    diffusers_logging.disable_progress_bar()  # one progress bar (the denoising loop's) per command
    transformers_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {"torch_dtype": resolved} if resolved is not None else {}
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True, trust_remote_code=False, **kwargs
        )
    except (OSError, ValueError, TypeError, ImportError) as exc:
        raise ModelSpecError(f"cannot load the pipeline in {folder}: {_first_line(exc)}") from None
    if device is not None:
        try:
            pipe = pipe.to(device)
        except (RuntimeError, AssertionError, ValueError) as exc:
            raise ModelSpecError(f"cannot use device {device!r}: {_first_line(exc)}") from None
    return pipe


def image_size(height: int | None, width: int | None) -> dict[str, int]:
    """Pipeline keyword arguments for `--height`/`--width` (both or neither), checked before any loading."""
    if height is None and width is None:
        return {}
    if height is None or width is None:
        raise InputError("give --height and --width together")
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise InputError(f"--height and --width must be 1 … {MAX_SIDE} pixels, not {height}×{width}")
    return {"height": height, "width": width}


def fit_default_area(pipe: Any, size: dict[str, int]) -> None:
    """Pipelines that rescale every request to their default area (HiDream: `default_sample_size` latents
    a side) are given the requested area as that default, so `size` is the size generated."""
    scale = getattr(pipe, "vae_scale_factor", None)
    if size and isinstance(getattr(pipe, "default_sample_size", None), int) and isinstance(scale, int):
        pipe.default_sample_size = max(1, round(math.sqrt(size["height"] * size["width"]) / scale))


def cmd_record_pipeline(args: argparse.Namespace) -> int:
    from routescope.hooks.diffusers_loop import record_pipeline
    from routescope.hooks.driver import check_new_run

    prompts = read_prompts(args.prompt, args.file, args.prompt_column)
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, not {args.steps}")
    size = image_size(args.height, args.width)
    store = check_new_run(args.store, args.name, args.overwrite)  # fail before loading a large pipeline
    pipe = load_pipeline(args.folder, dtype=args.dtype, device=args.device)
    fit_default_area(pipe, size)
    run = record_pipeline(
        pipe,
        prompts,
        store=store,
        name=args.name,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        probs=args.probs,
        overwrite=args.overwrite,
        **size,
    )
    out(f"recorded run {run.name!r} in {store.path}")
    summarise(run)
    return 0


def summarise(run: Run) -> None:
    """The recorded pipeline run: its sizes, sampling and per-router summary (one line per router)."""
    from routescope.analysis import router_summary

    m, rows = run.manifest, run.manifest.get("rows", {})
    options, (grid_rows, grid_cols) = m["options"], m["patch_grid"]
    out(f"model     {m['model'].get('spec')}  [{m['model'].get('class')}]")
    out(
        f"samples   {rows.get('samples', 0)}   tokens {rows.get('tokens', 0)}   "
        f"assignments {rows.get('assignments', 0)}   decisions {rows.get('decisions', 0)}"
    )
    out(
        f"sampling  {len(options['prompts'])} prompts, {options['steps']} steps, guidance "
        f"{options['guidance_scale']}, patch grid {grid_rows}×{grid_cols}"
    )
    out(f"labels    {', '.join(run.label_columns)}")
    table = router_summary(run)
    for column in ("mean_entropy", "mean_margin", "dropped_share"):
        table[column] = table[column].round(3)
    out(table.to_string(index=False))


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype):
        raise ModelSpecError(f"unknown dtype {name!r}; use float32, bfloat16 or float16")
    return resolved


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."
