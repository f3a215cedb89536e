"""Dimension tables every recording writes beside its router rows: samples, steps and images.

Each source used to build these tables in its own words (three samples tables, three image tables, steps
rows in four places); one builder per table keeps the column order, types and null conventions the same
for text, sampler and pipeline runs and for any later source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from routescope.store.schema import IMAGES, STEPS


def steps_table(
    steps: Sequence[int] | np.ndarray,
    timesteps: Sequence[float | None] | None = None,
    sigmas: Sequence[float | None] | None = None,
) -> pa.Table:
    """Rows of the `steps` table; a missing timestep or sigma column is null (text runs have neither)."""
    n = len(steps)
    return pa.table(
        {
            "step": np.asarray(steps, dtype=np.int32),
            "timestep": pa.nulls(n, pa.float64()) if timesteps is None else list(timesteps),
            "sigma": pa.nulls(n, pa.float64()) if sigmas is None else list(sigmas),
        },
        schema=STEPS,
    )


def samples_table(
    sample: Sequence[int] | np.ndarray,
    *,
    n_tokens: Sequence[int] | np.ndarray,
    text: Sequence[str | None] | None = None,
    n_generated: Sequence[int] | np.ndarray | None = None,
    generated: Sequence[str | None] | None = None,
    labels: Mapping[str, Sequence[str | None]] | None = None,
) -> pa.Table:
    """Rows of the `samples` table: core columns (no text, nothing generated unless given), then labels."""
    n = len(sample)
    return pa.table(
        {
            "sample": np.asarray(sample, dtype=np.int32),
            "text": pa.nulls(n, pa.string()) if text is None else list(text),
            "n_tokens": np.asarray(n_tokens, dtype=np.int32),
            "n_generated": np.zeros(n, np.int32)
            if n_generated is None
            else np.asarray(n_generated, np.int32),
            "generated": pa.nulls(n, pa.string()) if generated is None else list(generated),
            **(labels or {}),
        }
    )


def image_rows(samples: Sequence[int], images: np.ndarray, step: int) -> pa.Table:
    """Rows of an image table (`images`, `x0`): one [H, W] image per sample at `step` (-1: final)."""
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
