"""`record(expert_means=True)` and output-based expert similarity (`similarity`, `merge-groups`: outputs).

Checked against a computation from the weights that does not use RouteScope's capture: each text alone
(unpadded, batch 1) through the model with a pre-hook on every experts module keeping its input rows, then
every expert's SwiGLU output computed by hand from `gate_up_proj` / `down_proj` for every token, averaged
over all tokens of all texts; the recorded run holds the same means (padding excluded), and the similarity
is (cos + 1) / 2 of those means. On tiny random Mixtral and Qwen2-MoE configs built here and on the
bundled moe-lm (a trained Qwen2-MoE).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

import routescope
from routescope.analysis import compute
from routescope.analysis.similarity import mc_smoe_groups, mean_outputs
from routescope.cli import main
from routescope.models.tokenizers import byte_tokenizer
from routescope.store import InputError, Run, Store
from tests.tiny_families import TEXTS, record_family, tiny_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _means_from_weights(model: Any, token_ids: list[list[int]]) -> dict[int, np.ndarray]:
    """Layer → `[E, H]` mean of f_e(x) over every token of every input, each input alone."""
    layers = model.model.layers
    rows: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}

    def keep(layer: int) -> Callable[..., None]:
        def hook(_module: Any, args: tuple[Any, ...]) -> None:
            rows[layer].append(args[0].detach().reshape(-1, args[0].shape[-1]))

        return hook

    handles = [layer.mlp.experts.register_forward_pre_hook(keep(i)) for i, layer in enumerate(layers)]
    with torch.no_grad():
        for ids in token_ids:
            model(input_ids=torch.tensor([ids]))
    for handle in handles:
        handle.remove()
    means = {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            hidden = torch.cat(rows[i]).double()
            experts = layer.mlp.experts
            outputs = []
            for e in range(experts.gate_up_proj.shape[0]):
                gate, up = torch.nn.functional.linear(hidden, experts.gate_up_proj[e].double()).chunk(
                    2, dim=-1
                )
                out = torch.nn.functional.linear(experts.act_fn(gate) * up, experts.down_proj[e].double())
                outputs.append(out.mean(dim=0))
            means[i] = torch.stack(outputs).numpy()
    return means


def _cosine_map(means: np.ndarray) -> np.ndarray:
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    return (unit @ unit.T + 1) / 2


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Run]]:
    store = Store(tmp_path_factory.mktemp("expert-means"))
    built: dict[str, tuple[Any, Run]] = {}

    def get(family: str) -> tuple[Any, Run]:
        if family not in built:
            model = tiny_model(family)
            built[family] = (model, record_family(model, store, family, expert_means=True, engine="hooks"))
        return built[family]

    return get


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_mean_outputs_and_similarity_equal_a_computation_from_the_weights(
    recorded: Callable[[str], tuple[Any, Run]], family: str
) -> None:
    model, run = recorded(family)
    assert run.info.expert_means
    assert "expert_means" in run.info.caps
    expected = _means_from_weights(model, [byte_tokenizer()(t)["input_ids"] for t in TEXTS])
    tokens = run.expert_means().groupby(["layer", "expert"])["tokens"].sum()
    assert (tokens == sum(len(byte_tokenizer()(t)["input_ids"]) for t in TEXTS)).all()  # padding excluded
    for layer in (0, 1):
        np.testing.assert_allclose(mean_outputs(run, layer), expected[layer], rtol=1e-4, atol=1e-6)
        table = compute("similarity", run, layer=layer, basis="outputs")
        got = table.pivot(index="expert_a", columns="expert_b", values="similarity").to_numpy()
        np.testing.assert_allclose(got, _cosine_map(expected[layer]), rtol=1e-5, atol=1e-6)


def test_merge_groups_by_outputs_follow_the_output_similarity(
    recorded: Callable[[str], tuple[Any, Run]],
) -> None:
    model, run = recorded("mixtral")
    expected = _means_from_weights(model, [byte_tokenizer()(t)["input_ids"] for t in TEXTS])
    counts = run.assignments().query("layer == 1").groupby("expert").size()
    usage = np.zeros(8)
    usage[counts.index.to_numpy()] = counts.to_numpy()
    groups = compute("merge-groups", run, layer=1, n_groups=3, basis="outputs")
    np.testing.assert_array_equal(
        groups["group"].to_numpy(), mc_smoe_groups(usage / usage.sum(), _cosine_map(expected[1]), 3)
    )
    by_router = compute("merge-groups", run, layer=1, n_groups=3, basis="coactivation")
    assert len(by_router) == len(groups) == 8  # either basis groups the same experts


def test_moe_lm_mean_outputs_equal_the_weights_with_nnsight(store: Store) -> None:
    lm = routescope.load_model("bundled:moe-lm")
    texts = ["The river rose after a week of rain.", "x = [n * n for n in range(10)]"]
    run = routescope.record(lm, texts, store=store, name="lm", expert_means=True, progress=False)
    ids = [lm.tokenizer(t)["input_ids"] for t in texts]
    expected = _means_from_weights(lm.model, ids)
    for layer in range(len(lm.model.model.layers)):
        np.testing.assert_allclose(mean_outputs(run, layer), expected[layer], rtol=1e-4, atol=1e-5)


def test_runs_without_expert_means_and_generation_are_refused(tiny_lm: Any, store: Store) -> None:
    run = routescope.record(tiny_lm, TEXTS[:1], store=store, name="bare", progress=False, engine="hooks")
    for kind, params in (("similarity", {}), ("merge-groups", {"n_groups": 2})):
        with pytest.raises(InputError) as caught:
            compute(kind, run, layer=0, basis="outputs", **params)
        assert caught.value.field == "expert_means"
        assert str(caught.value) == "this run has no mean expert outputs; record it with expert means"
    with pytest.raises(InputError) as caught:
        routescope.record(tiny_lm, TEXTS[:1], store=store, name="gen", expert_means=True, max_new_tokens=2)
    assert caught.value.field == "expert_means"
    assert store.runs() == ["bare"]


def test_cli_record_expert_means(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    args = ["record", "bundled:tiny-mixtral", "--store", str(store), "--name", "m", "--text", "Hi moe!"]
    assert main([*args, "--expert-means", "--engine", "hooks"]) == 0
    run = Store(store).open("m")
    assert run.info.expert_means
    assert main(["report", "--store", str(store), "--run", "m", "--kind", "similarity", "--layer", "0",
                 "--param", "basis=outputs", "--format", "csv"]) == 0  # fmt: skip
    assert "expert_a,expert_b,similarity" in capsys.readouterr().out
