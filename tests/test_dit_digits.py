"""bundled:dit-digits: offline loading, the gate/MoE contract RouteScope records, the observable sampler,
the training smoke run and the quality of the shipped weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import routescope
from routescope.hooks.routers import candidate_paths
from routescope.models import load_bundled
from routescope.models.dit_digits import DiTMoE, MoEGate, StepInfo, load_dit_digits, sample
from routescope.models.dit_digits.diffusion import NoiseSchedule
from routescope.models.dit_digits.quality import DigitClassifier
from routescope.models.dit_digits.train import train


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The model's ops are tiny: one thread is fastest, and two threads on a busy 2-core machine spin-wait
    (sampling measured 0.8 s with one thread, 18 s with two while another job ran)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def dit() -> DiTMoE:
    return load_dit_digits()


def test_loads_offline_through_the_registry_and_load_model(dit: DiTMoE) -> None:
    model, tokenizer = load_bundled("dit-digits")
    assert isinstance(model, DiTMoE)
    assert tokenizer is None
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    loaded = routescope.load_model("bundled:dit-digits")
    assert isinstance(loaded.model, DiTMoE)
    for (name, a), (_, b) in zip(model.state_dict().items(), dit.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_forward_shapes_and_geometry(dit: DiTMoE) -> None:
    size = dit.image_size
    rows, cols = dit.patch_grid
    assert (rows, cols) == (size // dit.config.patch_size, size // dit.config.patch_size)
    assert dit.null_class == dit.config.n_classes == 10
    x = torch.randn(3, 1, size, size)
    with torch.no_grad():
        eps = dit(x, torch.tensor([0, 500, 999]), torch.tensor([1, 7, dit.null_class]))
    assert eps.shape == x.shape
    assert eps.dtype == torch.float32


def test_routers_are_found_declaratively_and_by_layout(dit: DiTMoE) -> None:
    expected = [f"blocks.{i}.moe.gate" for i in range(dit.config.depth)]
    assert DiTMoE._can_record_outputs == {"router_logits": MoEGate}
    assert candidate_paths(dit) == expected
    for block in dit.blocks:
        assert isinstance(block.moe.experts, torch.nn.ModuleList)
        assert len(block.moe.experts) == dit.config.n_routed_experts
        assert hasattr(block.moe, "shared_experts")


def test_gate_triple_is_exactly_what_the_moe_layer_applies(dit: DiTMoE) -> None:
    seen: dict[int, tuple] = {}
    handles = []
    for i, block in enumerate(dit.blocks):
        handles.append(block.moe.gate.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out)))
        handles.append(
            block.moe.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(100 + i, (a[0], out[0])))
        )
    n, size = 2, dit.image_size
    try:
        with torch.no_grad():
            dit(torch.randn(n, 1, size, size), torch.tensor([900, 40]), torch.tensor([3, 10]))
    finally:
        for h in handles:
            h.remove()
    tokens = n * dit.patch_grid[0] * dit.patch_grid[1]
    for i, block in enumerate(dit.blocks):
        logits, weights, indices = seen[i]
        hidden, moe_out = seen[100 + i]
        k, e = dit.config.top_k, dit.config.n_routed_experts
        assert logits.shape == (tokens, e)
        assert logits.dtype == torch.float32
        assert weights.shape == (tokens, k)
        assert weights.dtype == torch.float32
        assert indices.shape == (tokens, k)
        assert indices.dtype == torch.int64
        probs = logits.softmax(-1)
        assert torch.equal(weights, probs.gather(1, indices))  # softmax then top-k, not renormalised
        assert torch.equal(indices, probs.topk(k, dim=-1).indices)
        assert bool((weights.sum(-1) < 1).all())
        with torch.no_grad():
            flat = hidden.reshape(-1, hidden.shape[-1])
            expected = block.moe.shared_experts(flat)
            for t in range(tokens):
                for j in range(k):
                    expected[t] += weights[t, j] * block.moe.experts[int(indices[t, j])](flat[t : t + 1])[0]
        torch.testing.assert_close(moe_out.reshape(-1, flat.shape[-1]), expected, rtol=1e-5, atol=1e-5)


def test_sampling_is_deterministic_and_calls_the_doubled_batch_once_per_step(dit: DiTMoE) -> None:
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    infos: list[StepInfo] = []

    def spy(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append((x.clone(), t.clone(), y.clone()))
        return dit(x, t, y)

    classes = torch.tensor([2, 5, 5])
    steps = 6
    a = sample(dit, classes, steps=steps, cfg_scale=3.0, seed=11, forward=spy, on_step=infos.append)
    assert len(calls) == steps
    for x, t, y in calls:
        assert x.shape == (6, 1, dit.image_size, dit.image_size)
        assert torch.equal(x[:3], x[3:])
        assert torch.equal(y, torch.tensor([2, 5, 5, 10, 10, 10]))
        assert t.dtype == torch.long
        assert len(set(t.tolist())) == 1
    timesteps = [int(t[0]) for _, t, _ in calls]
    assert timesteps == [info.timestep for info in infos] == sorted(timesteps, reverse=True)
    assert timesteps[0] == dit.config.n_timesteps - 1
    assert timesteps[-1] == 0
    assert [info.step for info in infos] == list(range(steps))
    schedule = NoiseSchedule.from_config(dit.config)
    assert [info.sigma for info in infos] == [schedule.sigma(t) for t in timesteps]
    assert all(info.x0.shape == (3, dit.image_size, dit.image_size) for info in infos)
    assert torch.equal(infos[-1].x0, a)
    assert a.shape == (3, dit.image_size, dit.image_size)
    assert 0 <= float(a.min()) <= float(a.max()) <= 1
    b = sample(dit, classes, steps=steps, cfg_scale=3.0, seed=11)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample(dit, classes, steps=steps, cfg_scale=3.0, seed=12))
    calls.clear()
    sample(dit, classes, steps=2, cfg_scale=1.0, seed=11, forward=spy)  # no guidance: still doubled
    assert [tuple(x.shape) for x, _, _ in calls] == [(6, 1, dit.image_size, dit.image_size)] * 2


def test_training_smoke_run_writes_a_loadable_folder(tmp_path: Path) -> None:
    metrics = train(tmp_path, steps=3, batch_size=16, threads=1, eval_per_class=0, log_every=1)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "metrics.json"}
    assert metrics["steps"] == 3
    assert len(metrics["curve"]) == 3
    model = load_dit_digits(tmp_path)
    assert isinstance(model, DiTMoE)
    with torch.no_grad():
        out = model(
            torch.zeros(1, 1, model.image_size, model.image_size), torch.tensor([10]), torch.tensor([1])
        )
    assert bool(torch.isfinite(out).all())


def test_guided_samples_are_recognised_as_their_class(dit: DiTMoE) -> None:
    classifier = DigitClassifier.fit()
    classes = torch.tensor([0] * 6 + [7] * 6)
    images = sample(dit, classes, steps=25, cfg_scale=4.0, seed=3)
    hits = (torch.as_tensor(classifier.predict(images)) == classes).float().mean()
    assert float(hits) >= 0.9
