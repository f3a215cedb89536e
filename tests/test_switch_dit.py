"""switch-dit-digits: the timestep gate (one decision per image and step, shared by its tokens), the shared
expert, the diffusion prior, the training smoke run, and recording such positionless routers — the rows
written are the gate's own decisions, with a null position, and position-based analyses refuse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from routescope.analysis import compute
from routescope.figures import make_figure
from routescope.hooks import LoadedModel, record_diffusion
from routescope.hooks.routers import candidate_paths
from routescope.models import BUNDLED
from routescope.models.switch_dit import SwitchDiT, SwitchDiTConfig, TimestepGate, sample
from routescope.models.switch_dit.prior import (
    diffusion_prior_loss,
    jensen_shannon,
    match_units,
    prior_windows,
)
from routescope.models.switch_dit.train import train
from routescope.store import InputError, Run, Store

TINY = SwitchDiTConfig(
    hidden_size=32, depth=2, num_heads=2, n_routed_experts=4, top_k=2, expert_hidden=16,
    shared_expert_hidden=16, frequency_embedding_size=32,
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny() -> SwitchDiT:
    torch.manual_seed(0)
    model = SwitchDiT(TINY).eval()
    with torch.no_grad():  # adaLN-Zero starts with the MoE switched off; give it a visible effect
        for block in model.blocks:
            block.adaLN_modulation[-1].bias.normal_(0, 0.5)
            block.moe.gate.proj.weight.normal_(0, 1.0)
    return model


@pytest.fixture(scope="module")
def recorded(tiny: SwitchDiT, tmp_path_factory: pytest.TempPathFactory) -> Run:
    loaded = LoadedModel(model=tiny, sampler=sample, spec="tiny-switch-dit")
    return record_diffusion(
        loaded, classes=[0, 3], samples_per_class=2, steps=5, store=Store(tmp_path_factory.mktemp("sw")),
        name="tiny", probs=True, engine="hooks", progress=False,
    )  # fmt: skip


def test_gate_decides_once_per_image_from_the_timestep_only(tiny: SwitchDiT) -> None:
    gate = tiny.blocks[0].moe.gate
    assert isinstance(gate, TimestepGate)
    t = torch.tensor([10, 10, 900])
    with torch.no_grad():
        logits, weights, indices = gate(tiny.t_embedder(t))
        probs = logits.softmax(-1)
    assert logits.shape == (3, 4)
    assert weights.shape == indices.shape == (3, 2)
    assert torch.equal(indices[0], indices[1])  # same timestep, same decision (whatever the image)
    assert torch.allclose(weights, probs.gather(1, indices))  # not renormalised
    assert bool((weights[:, 0] >= weights[:, 1]).all())


def test_moe_output_is_shared_expert_plus_gate_weighted_experts(tiny: SwitchDiT) -> None:
    moe = tiny.blocks[1].moe
    h = torch.randn(3, 16, 32)
    t_emb = tiny.t_embedder(torch.tensor([0, 500, 999]))
    with torch.no_grad():
        out, probs = moe(h, t_emb)
        _, weights, indices = moe.gate(t_emb)
        expected = moe.shared_experts(h)
        for i in range(3):
            for j in range(2):
                expected[i] += weights[i, j] * moe.experts[int(indices[i, j])](h[i])
    assert torch.allclose(out, expected, atol=1e-5)
    assert probs.shape == (3, 4)


def test_routers_are_found_and_declared_without_positions(tiny: SwitchDiT) -> None:
    assert candidate_paths(tiny) == ["blocks.0.moe.gate", "blocks.1.moe.gate"]
    assert TimestepGate.router_positions == "none"
    assert "switch-dit-digits" in BUNDLED
    assert BUNDLED["switch-dit-digits"].sampler is not None


def test_prior_windows_slide_so_nearby_timesteps_share_units() -> None:
    windows = prior_windows(1000, units=8, width=4, alpha=1.0)
    assert windows.shape == (1000, 8)
    assert bool((windows.sum(1) == 4).all())
    assert torch.equal(windows[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))
    assert torch.equal(windows[999], torch.tensor([0.0, 0, 0, 0, 1, 1, 1, 1]))
    assert float((windows[500] * windows[501]).sum()) >= 3  # neighbours share (almost) everything


def test_jsd_and_matching() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    assert float(jensen_shannon(p, p)) == pytest.approx(0.0, abs=1e-5)
    disjoint = jensen_shannon(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert float(disjoint) == pytest.approx(np.log(2), abs=1e-4)
    windows = prior_windows(50, units=6, width=2, alpha=1.0)
    shuffled = torch.tensor([3, 0, 5, 1, 4, 2])
    chosen = windows[:, shuffled]  # the gates use the prior's units under another numbering
    perm = match_units(chosen, windows, torch.Generator().manual_seed(0))
    assert torch.equal(perm, shuffled)  # matching recovers the numbering ...
    probs = (chosen / 2).reshape(50, 3, 2) * 3  # ... so gates that follow the prior have zero loss
    loss = diffusion_prior_loss(probs, windows, torch.arange(50), perm)
    assert float(loss) == pytest.approx(0.0, abs=1e-5)


def test_training_smoke_run_writes_a_loadable_folder(tmp_path: Path) -> None:
    metrics = train(tmp_path, steps=3, batch_size=16, eval_per_class=0, log_every=1, config=TINY)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "metrics.json"}
    assert metrics["steps"] == 3
    assert len(metrics["curve"]) == 3
    assert all(np.isfinite(point["jsd"]) for point in metrics["curve"])
    from routescope.models.switch_dit import load_switch_dit_digits

    model = load_switch_dit_digits(tmp_path)
    assert model.config == TINY
    again = train(tmp_path / "more", steps=2, batch_size=16, eval_per_class=0, log_every=1, init=tmp_path)
    assert again["init"] == str(tmp_path)
    assert load_switch_dit_digits(tmp_path / "more").config == TINY  # the config comes from the folder


def test_recorded_decisions_are_the_gates_own_output(tiny: SwitchDiT, recorded: Run) -> None:
    info = recorded.info
    assert [r.positions for r in info.routers] == ["none", "none"]
    assert "positions" not in info.caps
    decisions = recorded.decisions()
    assert decisions["position"].isna().all()
    assert len(decisions) == 8 * 5 * 2  # (2 classes × 2 samples × 2 branches) × steps × routers
    assignments = recorded.assignments()
    assert assignments["position"].isna().all()
    timesteps = recorded.steps().set_index("step")["timestep"]
    for router in info.routers:
        gate = dict(tiny.named_modules())[router.path]
        for step, timestep in timesteps.items():
            with torch.no_grad():
                logits, weights, indices = gate(tiny.t_embedder(torch.tensor([int(timestep)])))
            rows = assignments[(assignments["router"] == router.id) & (assignments["step"] == step)]
            assert rows["sample"].nunique() == 8
            for _, one in rows.groupby("sample"):
                one = one.sort_values("rank")
                assert one["expert"].tolist() == indices[0].tolist()
                assert np.allclose(one["weight"], weights[0].numpy(), atol=1e-6)
            logged = decisions[(decisions["router"] == router.id) & (decisions["step"] == step)]
            assert np.allclose(np.stack(logged["logits"].to_numpy()), logits.numpy(), atol=1e-5)


def test_denoising_paths_count_the_gates_choices(tiny: SwitchDiT, recorded: Run) -> None:
    table = compute("denoising-paths", recorded)
    assert set(table.columns) >= {"layer", "step", "timestep", "expert", "usage", "weight"}
    assert np.allclose(table.groupby(["layer", "step"])["usage"].sum(), 2.0)
    assert set(table["usage"].round(6)) <= {0.0, 1.0}  # every image of a step makes the same choice
    first = table[(table["layer"] == 0) & (table["step"] == 0)]
    with torch.no_grad():
        _, weights, indices = tiny.blocks[0].moe.gate(tiny.t_embedder(torch.tensor([999])))
    used = first[first["usage"] == 1.0].set_index("expert")["weight"]
    assert sorted(used.index) == sorted(indices[0].tolist())
    assert np.allclose(used.loc[indices[0].tolist()], weights[0].numpy(), atol=1e-6)
    figure, _ = make_figure("denoising-paths", recorded)
    assert len(figure.data) == 1


def test_position_analyses_refuse_and_others_run(recorded: Run) -> None:
    for kind in ("spatial", "token_routing"):
        with pytest.raises(InputError, match="positions"):
            compute(kind, recorded, **({"sample": 0, "router": 0} if kind == "token_routing" else {}))
    assert len(compute("steps", recorded)) == 2 * 5 * 4
    assert len(compute("summary", recorded)) == 2


def test_shipped_model_loads_offline_and_its_guided_samples_are_recognised() -> None:
    import routescope
    from routescope.models import load_bundled
    from routescope.models.dit_digits.quality import DigitClassifier

    model, tokenizer = load_bundled("switch-dit-digits")
    assert isinstance(model, SwitchDiT)
    assert tokenizer is None
    assert not model.training
    loaded = routescope.load_model("bundled:switch-dit-digits")
    assert loaded.sampler is not None
    assert loaded.quality is not None
    classes = torch.tensor([0] * 6 + [7] * 6)
    images = sample(model, classes, steps=25, cfg_scale=4.0, seed=3)
    hits = (torch.as_tensor(DigitClassifier.fit().predict(images)) == classes).float().mean()
    assert float(hits) >= 0.9
