"""Routing by modality (analysis/modality.py): load shares and the within-input permutation test, on
planted runs written through the real store writer (image tokens forced to experts 0–1, text tokens to
2–3) and on nulls (experts drawn without regard to modality), plus the refusal for runs without modality.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from routescope.analysis import compute
from routescope.store import InputError, Run, Store
from routescope.store.schema import STEPS, assignments_schema, decisions_schema, samples_schema, tokens_schema
from routescope.store.writer import RunWriter
from tests.planted import planted_routers, planted_run

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


def test_load_shares_by_modality(tmp_path) -> None:
    run = modality_run(Store(tmp_path), "planted", planted=True, seed=0)
    table = compute("modality", run)
    a = run.assignments().merge(run.tokens()[["sample", "position", "modality"]], on=["sample", "position"])
    expected = a.groupby(["layer", "modality"])["expert"].value_counts(normalize=True)
    mine = table.set_index(["layer", "modality", "expert"])["share"]
    pd.testing.assert_series_equal(
        mine.sort_index(), expected.rename("share").sort_index(), check_names=False
    )
    planted_layer = table[table["layer"] == 1]
    assert planted_layer[planted_layer["modality"] == "image"]["expert"].tolist() == [0, 1]
    assert planted_layer[planted_layer["modality"] == "text"]["expert"].tolist() == [2, 3]
    load = a[a["layer"] == 1]["expert"].value_counts(normalize=True)
    row = planted_layer[(planted_layer["modality"] == "image") & (planted_layer["expert"] == 0)].iloc[0]
    assert row["lift"] == pytest.approx(row["share"] / load[0])
    assert set(compute("modality", run, layer=0)["layer"]) == {0}


def test_specialization_finds_the_planted_split_and_not_the_null(tmp_path) -> None:
    run = modality_run(Store(tmp_path), "planted", planted=True, seed=0)
    table = compute("modality-specialization", run, n_permutations=199).set_index("layer")
    assert table.loc[1, "tvd"] == pytest.approx(1.0)
    assert table.loc[1, "p_value"] == pytest.approx(1 / 200)
    assert table.loc[1, "unit"] == "sample"
    assert table.loc[1, "n_units"] == 12
    assert table.loc[1, "method"] == "permutation within units (sample)"
    assert (table.loc[1, "visual_tokens"], table.loc[1, "text_tokens"]) == (72, 120)
    assert table.loc[0, "p_value"] > 0.01  # layer 0 is drawn at random in the planted run too
    p_values = [
        compute(
            "modality-specialization",
            modality_run(Store(tmp_path), f"null{seed}", planted=False, seed=seed),
            n_permutations=99,
            seed=seed,
        )["p_value"]
        for seed in range(10)
    ]
    p = np.concatenate(p_values)
    assert (p < 0.05).mean() <= 0.2  # 20 null layers: about one below 0.05 by chance
    assert p.mean() > 0.3


def test_runs_without_modality_are_refused(tmp_path) -> None:
    run = planted_run(Store(tmp_path), "text", experts={0: [[0, 1], [1, 2]]})
    for kind in ("modality", "modality-specialization"):
        with pytest.raises(InputError, match="no token modality; record it with images") as info:
            compute(kind, run)
        assert info.value.field == "images"
