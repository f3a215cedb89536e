"""A planted vision-language run for the modality tests and figures: written through the real store writer,
image tokens forced to experts 0–1 and text tokens to 2–3 at layer 1 (`planted=True`), or every layer drawn
at random (a null)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from routescope.store import Run, Store
from routescope.store.schema import STEPS, assignments_schema, decisions_schema, samples_schema, tokens_schema
from routescope.store.writer import RunWriter
from tests.planted import planted_routers

N_EXPERTS, LAYERS = 4, [0, 1]


def modality_run(store: Store, name: str, *, planted: bool, seed: int, n_samples: int = 12) -> Run:
    """Samples of 6 image then 10 text tokens, top-1 routing; `planted`: image tokens go to experts 0–1
    and text tokens to 2–3 at layer 1 (layer 0 is always drawn at random); else all layers at random."""
    rng = np.random.default_rng(seed)
    n_image, n_text = 6, 10
    n = n_image + n_text
    modality = np.array(["image"] * n_image + ["text"] * n_text)
    schemas = {
        "samples": samples_schema([]),
        "tokens": tokens_schema(with_modality=True),
        "assignments": assignments_schema(),
        "decisions": decisions_schema(False),
        "steps": STEPS,
    }
    manifest = {
        "model": {"spec": "planted"},
        "routers": planted_routers(LAYERS, N_EXPERTS, 1),
        "labels": [],
        "options": {"images": True},
    }
    with RunWriter(store, name, schemas=schemas, manifest=manifest, overwrite=True) as writer:
        for router, layer in enumerate(LAYERS):
            experts = rng.integers(0, N_EXPERTS, size=(n_samples, n))
            if planted and layer == 1:
                experts = np.where(modality == "image", rng.integers(0, 2, (n_samples, n)), 2 + experts % 2)
            keys = {
                "sample": np.repeat(np.arange(n_samples), n).astype(np.int32),
                "position": np.tile(np.arange(n), n_samples).astype(np.int32),
                "step": 0,
                "router": router,
                "layer": layer,
                "call": 0,
            }
            rows = pd.DataFrame(
                {**keys, "rank": 0, "expert": experts.reshape(-1), "weight": 1.0, "dropped": False}
            )
            writer.write("assignments", pa.Table.from_pandas(rows, preserve_index=False))
            stats = {"entropy": 1.0, "margin": 0.1, "max_prob": 0.5}
            writer.write(
                "decisions", pa.Table.from_pandas(pd.DataFrame({**keys, **stats}), preserve_index=False)
            )
        grid = np.arange(n_image)
        total = n_samples * n
        visual = np.tile(modality == "image", n_samples)
        tokens = {
            "sample": np.repeat(np.arange(n_samples), n),
            "position": np.tile(np.arange(n), n_samples),
            "token_id": np.where(visual, 3, 50),
            "token": ["x"] * total,
            "generated": np.zeros(total, bool),
            "stack": ["decoder"] * total,
            "row": pa.array(
                np.where(visual, np.tile(np.r_[grid // 3, np.zeros(n_text)], n_samples), 0),
                pa.int32(),
                mask=~visual,
            ),
            "col": pa.array(
                np.where(visual, np.tile(np.r_[grid % 3, np.zeros(n_text)], n_samples), 0),
                pa.int32(),
                mask=~visual,
            ),
            "modality": np.tile(modality, n_samples),
            "image": pa.array(np.zeros(total, np.int32), mask=~visual),
            "frame": pa.array(np.zeros(total, np.int32), mask=~visual),
        }
        writer.write("tokens", pa.table(tokens))
        writer.write(
            "samples",
            pa.table(
                {
                    "sample": np.arange(n_samples),
                    "text": ["x"] * n_samples,
                    "n_tokens": np.full(n_samples, n),
                    "n_generated": np.zeros(n_samples),
                    "generated": pa.nulls(n_samples, pa.string()),
                }
            ),
        )
        writer.write("steps", pa.table({"step": [0], "timestep": [None], "sigma": [None]}))
        path = writer.publish()
    return Run(path)
