"""Diffusion recording: every step, every patch, both CFG branches, exactly as the model routed them.

Uses a randomly initialised DiT-MoE of the bundled architecture (seeded), so these tests check the
recording mechanics independently of the trained weights (tests/test_dit_digits.py covers those).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import routescope
from routescope.hooks import LoadedModel
from routescope.models.dit_digits import DiTDigitsConfig, DiTMoE, sample
from routescope.store import InputError, ModelSpecError, Store

STEPS = 4


@pytest.fixture(scope="module")
def dit() -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(model=DiTMoE(DiTDigitsConfig()).eval(), sampler=sample, spec="random-dit")


def test_run_layout_steps_branches_and_patches(dit: LoadedModel, store: Store) -> None:
    run = routescope.record_diffusion(
        dit,
        classes=[3, 7],
        samples_per_class=2,
        steps=STEPS,
        cfg_scale=3.0,
        seed=1,
        store=store,
        name="d",
        save_x0=True,
        progress=False,
    )
    samples = run.samples()
    assert samples["branch"].tolist() == ["cond"] * 4 + ["uncond"] * 4
    assert samples["class"].tolist() == ["3", "3", "7", "7"] * 2
    assert samples["pair"].tolist() == ["0", "1", "2", "3"] * 2
    rows, cols = dit.model.patch_grid
    tokens = run.tokens()
    assert len(tokens) == 8 * rows * cols
    first = tokens[tokens["sample"] == 5].sort_values("position")
    assert first["row"].tolist() == [p // cols for p in range(rows * cols)]
    assert first["col"].tolist() == [p % cols for p in range(rows * cols)]
    n_routers = len(run.routers)
    assert len(run.decisions()) == STEPS * n_routers * 8 * rows * cols
    steps = run.steps()
    assert steps["step"].tolist() == list(range(STEPS))
    assert steps["timestep"].is_monotonic_decreasing
    assert (steps["sigma"].diff().dropna() < 0).all()
    images = run.images()
    assert images.shape == (4, dit.model.image_size, dit.model.image_size)
    assert images.min() >= 0
    assert images.max() <= 1
    x0_steps, x0 = run.x0()
    assert x0_steps.tolist() == list(range(STEPS))
    assert x0.shape == (STEPS, *images.shape)
    # recording does not change the result: the same seed without recording gives the same images
    plain = sample(dit.model, torch.tensor([3, 3, 7, 7]), steps=STEPS, cfg_scale=3.0, seed=1)
    np.testing.assert_allclose(images, plain.numpy(), atol=1e-6)


def test_step_rows_equal_the_gate_output_at_that_step(dit: LoadedModel, store: Store) -> None:
    run = routescope.record_diffusion(
        dit,
        classes=[1],
        samples_per_class=1,
        steps=STEPS,
        cfg_scale=2.0,
        seed=5,
        store=store,
        name="gate",
        progress=False,
    )
    seen: list = []
    gate = dit.model.blocks[2].moe.gate
    handle = gate.register_forward_hook(lambda _m, _a, o: seen.append(o))
    sample(dit.model, torch.tensor([1]), steps=STEPS, cfg_scale=2.0, seed=5)
    handle.remove()
    assert len(seen) == STEPS
    a = run.assignments()
    patches = dit.model.patch_grid[0] * dit.model.patch_grid[1]
    for step in (0, STEPS - 1):
        mine = a[(a["router"] == 2) & (a["step"] == step)].sort_values(["sample", "position", "rank"])
        expert = seen[step][2].reshape(2, patches, -1)  # rows: [cond; uncond]
        assert mine["expert"].tolist() == expert.reshape(-1).tolist()
        np.testing.assert_allclose(mine["weight"], seen[step][1].reshape(-1).numpy(), atol=1e-6)


def test_same_seed_same_routing_and_engines_agree(dit: LoadedModel, store: Store) -> None:
    kwargs = {
        "classes": [0, 9],
        "samples_per_class": 1,
        "steps": 3,
        "cfg_scale": 4.0,
        "seed": 11,
        "progress": False,
    }
    a = routescope.record_diffusion(dit, store=store, name="a", **kwargs)
    b = routescope.record_diffusion(dit, store=store, name="b", engine="hooks", **kwargs)
    pd.testing.assert_frame_equal(a.assignments(), b.assignments())
    pd.testing.assert_frame_equal(a.decisions(), b.decisions())
    c = routescope.record_diffusion(dit, store=store, name="c", **{**kwargs, "seed": 12})
    assert not a.assignments()["expert"].equals(c.assignments()["expert"])


def test_bad_diffusion_inputs(dit: LoadedModel, store: Store, tiny_lm: LoadedModel) -> None:
    with pytest.raises(InputError, match="unknown class"):
        routescope.record_diffusion(dit, classes=[10], store=store, name="x", progress=False)
    with pytest.raises(InputError):
        routescope.record_diffusion(dit, classes=[], store=store, name="x", progress=False)
    with pytest.raises(ModelSpecError, match="not a diffusion model"):
        routescope.record_diffusion(tiny_lm, classes=[0], store=store, name="x", progress=False)
    assert not store.path.exists()


def test_steps_view_counts_every_patch_of_both_branches(dit: LoadedModel, store: Store) -> None:
    from routescope.analysis import steps

    run = routescope.record_diffusion(
        dit,
        classes=[2],
        samples_per_class=3,
        steps=3,
        cfg_scale=4.0,
        seed=0,
        store=store,
        name="steps",
        progress=False,
    )
    table = steps(run)
    patches = dit.model.patch_grid[0] * dit.model.patch_grid[1]
    per_step = table.groupby(["layer", "step"])
    assert (per_step["count"].sum() == 2 * 3 * patches * 2).all()  # 2 branches × 3 samples × patches × top-2
    np.testing.assert_allclose(per_step["load"].sum(), 1.0)
    assert sorted(table["step"].unique()) == [0, 1, 2]


def test_step_similarity_and_phases(dit: LoadedModel, store: Store) -> None:
    from routescope.analysis import denoising_phases, step_similarity

    run = routescope.record_diffusion(
        dit,
        classes=[1, 4],
        samples_per_class=2,
        steps=6,
        cfg_scale=4.0,
        seed=0,
        store=store,
        name="phases",
        progress=False,
    )
    js = step_similarity(run)
    matrix = js.query("layer == 0").pivot_table(index="step_a", columns="step_b", values="js").to_numpy()
    np.testing.assert_allclose(np.diag(matrix), 0.0, atol=1e-12)
    np.testing.assert_allclose(matrix, matrix.T)
    assert (matrix >= 0).all()
    assert (matrix <= np.log(2) + 1e-12).all()
    phases = denoising_phases(run, n_phases=2).query("layer == 0")
    assert phases["step"].tolist() == list(range(6))
    assert phases["phase"].iloc[0] == 0
    assert set(phases["phase"]) == {0, 1}
