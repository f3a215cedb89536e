"""What the Run page records, without Streamlit: inputs from the page and a recording with progress (the
default runs a fresh store gets on first start are `routescope.default_runs`, re-exported here).

The page only turns widgets into these calls and a progress bar; the same functions run in tests. Model
loading is passed in (`load`), so the dashboard can hand over its cached loader.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from routescope.store import InputError, RunExistsError, Store
from routescope.store.reader import check_run_name

from ..datasets import load_dataset
from ..default_runs import DEFAULT_RUNS as DEFAULT_RUNS  # re-exported: defined with `demo`
from ..default_runs import DefaultRun as DefaultRun
from ..default_runs import record_default as record_default
from ..inputs import Inputs, attach_images, read_inputs
from ..requests import DiffusionRequest, RecordRequest
from ..requests import Progress as Progress

INPUT_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True, kw_only=True)
class TextOptions:
    """How to record a text model."""

    probs: bool = False
    """Also store each decision's full probability vector."""
    max_new_tokens: int = 0
    """Generate this many tokens after each input and record their routing too."""
    token_loss: bool = False
    """Also store each token's next-token loss and prediction (`tokens.nll`, `predicted`)."""
    expert_stats: bool = False
    """Also store each chosen expert's output norm (`assignments.output_norm`: saliency)."""


def check_new_run(store: Store, name: str, overwrite: bool) -> str:
    """`name` if a run may be recorded under it (before any model is loaded); a one-line error otherwise."""
    name = check_run_name(name.strip() if isinstance(name, str) else name)
    if store.exists(name) and not overwrite:
        raise RunExistsError(f"run {name!r} already exists in {store.path}; pick another name or overwrite")
    return name


def typed_inputs(text: str) -> Inputs:
    """Typed text: one input per non-empty line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError("type at least one input (one per line)")
    return Inputs(texts=lines)


def uploaded_inputs(filename: str, data: bytes, text_column: str, label_columns: list[str]) -> Inputs:
    """An uploaded `.txt` (one input per line) or `.jsonl` (objects with `text_column` and labels)."""
    base = Path(filename).name
    if not base.lower().endswith(INPUT_SUFFIXES):
        raise InputError(f"{base}: upload a .txt or .jsonl file")
    with tempfile.TemporaryDirectory(prefix="routescope-upload-") as folder:
        path = Path(folder) / ("upload" + Path(base).suffix.lower())
        path.write_bytes(data)
        try:
            return read_inputs(None, str(path), label_columns, text_column or "text")
        except InputError as exc:
            raise InputError(str(exc).replace(str(path), base)) from None


def uploaded_images(inputs: Inputs, files: Sequence[tuple[str, bytes]]) -> Inputs:
    """Uploaded image files (name, bytes) decoded and attached to the inputs as `--image` attaches paths:
    one per input, or all of them onto a single input. A file that does not decode is a one-line error."""
    from routescope.hooks.vision import decode_image  # torch and PIL: only when images are uploaded

    images = [decode_image(data, Path(name).name) for name, data in files]
    return attach_images(inputs, images, noun="uploaded images")


def dataset_inputs(spec: str = "bundled:domains") -> Inputs:
    """A bundled input set with its label columns."""
    texts, labels = load_dataset(spec)
    return Inputs(texts=texts, labels={column: list(values) for column, values in labels.items()})


def text_request(
    inputs: Inputs, options: TextOptions, *, name: str, overwrite: bool = False
) -> RecordRequest:
    """The Run page's text recording as the request `routescope record` builds for the same inputs."""
    return RecordRequest(
        name=name,
        inputs=inputs,
        probs=options.probs,
        max_new_tokens=options.max_new_tokens,
        token_loss=options.token_loss,
        expert_stats=options.expert_stats,
        overwrite=overwrite,
    )


def image_request(
    sampling: DiffusionRequest,
    *,
    probs: bool,
    name: str,
    overwrite: bool = False,
    expert_stats: bool = False,
) -> RecordRequest:
    """The Run page's diffusion recording as the request `routescope record` builds for the same options."""
    return RecordRequest(
        name=name, diffusion=sampling, probs=probs, overwrite=overwrite, expert_stats=expert_stats
    )
