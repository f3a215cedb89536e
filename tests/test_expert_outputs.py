"""`record(expert_stats=True)`: `assignments.output_norm` is ‖f_e(x)‖₂ of each chosen expert before its gate.

Checked three ways against an independent, unpadded batch-1 forward of the same model, with forward hooks
on its experts modules: (1) from the weights — the fused SwiGLU experts of Mixtral-style families computed
by hand from `gate_up_proj`/`down_proj`, Switch's from its per-expert modules; (2) for every tiny family,
the generic property: the per-rank outputs the mechanism computes add up, gate-weighted, to what the
experts module returned, and their norms are what the run holds (non-null, finite, positive; null exactly
where Switch dropped a token); (3) both engines write the same norms on the bundled moe-lm; (4) the
shared experts' table holds ‖shared(x)‖ and, for Qwen2-MoE, sigmoid(shared_expert_gate(x)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import routescope
from routescope.hooks.expert_outputs import experts_paths, rank_outputs
from routescope.models.tokenizers import byte_tokenizer
from routescope.store import InputError, Run, Store
from tests.test_record import ToyMoE
from tests.tiny_families import FAMILIES, TEXTS, record_family, router_paths, tiny_model

FUSED_SWIGLU = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "granitemoe")
"""Families with concatenated [gate; up] 3-D expert weights: f_e(x) = down_e(act(gate_e x) · up_e x)."""

Calls = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


def _inputs(model: Any, text: str) -> dict[str, torch.Tensor]:
    inputs = {"input_ids": torch.tensor([byte_tokenizer()(text)["input_ids"]])}
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id]])
    return inputs


def _experts_calls(model: Any, text: str, paths: list[str]) -> Calls:
    """Router path → (hidden, index, weights, output) of its experts module on `text` alone."""
    experts = experts_paths(model, paths)
    seen: Calls = {}

    def keep(router: str) -> Callable[..., None]:
        def hook(_module: Any, args: tuple[Any, ...], output: torch.Tensor) -> None:
            seen[router] = (*(a.detach().clone() for a in args[:3]), output.detach().clone())  # type: ignore[assignment]

        return hook

    handles = [model.get_submodule(experts[p]).register_forward_hook(keep(p)) for p in paths]
    try:
        with torch.no_grad():
            model(**_inputs(model, text))
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _rows(run: Run, sample: int, router: int) -> pd.DataFrame:
    table = run.assignments()
    return table.query("sample == @sample and router == @router").sort_values(["position", "rank"])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Run]]:
    store = Store(tmp_path_factory.mktemp("expert-outputs"))
    built: dict[str, tuple[Any, Run]] = {}

    def get(family: str) -> tuple[Any, Run]:
        if family not in built:
            model = tiny_model(family)
            run = record_family(model, store, family, expert_stats=True)
            built[family] = (model, run)
        return built[family]

    return get


@pytest.mark.parametrize("family", FUSED_SWIGLU)
def test_norms_equal_a_computation_from_the_weights(
    recorded: Callable[[str], tuple[Any, Run]], family: str
) -> None:
    model, run = recorded(family)
    assert run.info.expert_stats
    assert "output_norms" in run.info.capabilities
    paths = router_paths(family)
    experts = experts_paths(model, paths)
    for sample, text in enumerate(TEXTS):
        calls = _experts_calls(model, text, paths)
        for router, path in enumerate(paths):
            module = model.get_submodule(experts[path])
            hidden, index, _weights, _out = calls[path]
            expected = torch.zeros(index.shape)
            for token in range(hidden.shape[0]):
                for rank in range(index.shape[1]):
                    e = int(index[token, rank])
                    gate, up = torch.nn.functional.linear(hidden[token], module.gate_up_proj[e]).chunk(2)
                    out = torch.nn.functional.linear(module.act_fn(gate) * up, module.down_proj[e])
                    expected[token, rank] = out.norm()
            got = _rows(run, sample, router)["output_norm"].to_numpy(dtype=float)
            np.testing.assert_allclose(got, expected.reshape(-1).detach().numpy(), rtol=1e-4, atol=1e-6)


def test_switch_norms_equal_its_expert_modules_and_dropped_are_null(
    recorded: Callable[[str], tuple[Any, Run]],
) -> None:
    model, run = recorded("switch_transformers")
    paths = router_paths("switch_transformers")
    experts = experts_paths(model, paths)
    for sample, text in enumerate(TEXTS):
        calls = _experts_calls(model, text, paths)
        for router, path in enumerate(paths):
            hidden, onehot, _weights, _out = calls[path]
            rows = _rows(run, sample, router)
            routed = onehot[:, 0].sum(-1) > 0
            np.testing.assert_array_equal(rows["dropped"].to_numpy(), ~routed.numpy())
            assert rows.loc[rows["dropped"], "output_norm"].isna().all()
            container = model.get_submodule(experts[path])
            with torch.no_grad():
                expected = [
                    float(container[f"expert_{int(onehot[t, 0].argmax())}"](hidden[t]).norm())
                    for t in range(hidden.shape[0])
                    if routed[t]
                ]
            got = rows.loc[~rows["dropped"], "output_norm"].to_numpy(dtype=float)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


REFUSED = {"jetmoe", "llama4_text", "nllb-moe"}
"""Families whose experts are not one module called as experts(hidden, indices, weights): expert_stats
refuses them in one line and writes nothing."""


@pytest.mark.parametrize("family", sorted(REFUSED))
def test_families_without_callable_experts_are_refused(store: Store, family: str) -> None:
    with pytest.raises(InputError, match="expert_stats") as caught:
        record_family(tiny_model(family), store, family, expert_stats=True)
    assert caught.value.field == "expert_stats"
    assert "\n" not in str(caught.value)
    assert not store.exists(family)
    assert store.runs() == []


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in REFUSED])
def test_rank_outputs_add_up_to_the_experts_output(
    recorded: Callable[[str], tuple[Any, Run]], family: str
) -> None:
    model, run = recorded(family)
    paths = router_paths(family)
    experts = experts_paths(model, paths)
    table = run.assignments()
    routed = table.loc[~table["dropped"], "output_norm"].to_numpy(dtype=float)
    assert np.isfinite(routed).all()
    assert (routed > 0).all()
    assert table.loc[table["dropped"], "output_norm"].isna().all()
    for sample, text in enumerate(TEXTS):
        calls = _experts_calls(model, text, paths)
        for router, path in enumerate(paths):
            hidden, index, weights, output = calls[path]
            per_rank = rank_outputs(model.get_submodule(experts[path]), hidden, index, weights)
            weighted = (per_rank * weights.transpose(0, 1).reshape(per_rank.shape[0], -1, 1)).sum(0)
            torch.testing.assert_close(weighted, output, rtol=1e-4, atol=1e-5)
            rows = _rows(run, sample, router)
            expected = per_rank.norm(dim=-1).transpose(0, 1).reshape(-1).numpy()
            got = rows["output_norm"].to_numpy(dtype=float)
            real = ~rows["dropped"].to_numpy()
            np.testing.assert_allclose(got[real], expected[real], rtol=1e-4, atol=1e-6)


def test_engines_agree_on_moe_lm(tmp_path: Any) -> None:
    model = routescope.load_model("bundled:moe-lm")
    runs = [
        routescope.record(
            model,
            TEXTS,
            store=Store(tmp_path),
            name=engine,
            batch_size=2,
            progress=False,
            engine=engine,
            expert_stats=True,
            token_loss=True,
        )
        for engine in ("nnsight", "hooks")
    ]
    a, b = (run.assignments() for run in runs)
    assert a["output_norm"].notna().all()
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(runs[0].tokens(), runs[1].tokens())


def test_experts_that_cannot_be_called_per_rank_are_refused(store: Store) -> None:
    torch.manual_seed(0)
    with pytest.raises(InputError, match="expert_stats needs experts") as caught:
        routescope.record(ToyMoE(), [[1, 2, 3]], store=store, name="toy", progress=False, expert_stats=True)
    assert caught.value.field == "expert_stats"
    assert not store.exists("toy")


@pytest.mark.parametrize("family", ["qwen2_moe", "deepseek_v3"])
def test_shared_experts_table_holds_their_norms_and_gates(
    recorded: Callable[[str], tuple[Any, Run]], family: str
) -> None:
    model, run = recorded(family)
    shared = run.shared_experts()
    assert len(shared) == len(run.decisions())  # one shared module per router in both families
    for sample, text in enumerate(TEXTS):
        for router in range(len(router_paths(family))):
            spec = run.info.router(router)
            module = model.get_submodule(spec.shared_experts[0])
            inputs: list[torch.Tensor] = []
            handle = module.register_forward_hook(lambda _m, args, _o, seen=inputs: seen.append(args[0]))
            try:
                with torch.no_grad():
                    model(**_inputs(model, text))
            finally:
                handle.remove()
            hidden = inputs[0].reshape(-1, inputs[0].shape[-1])
            mine = (shared["sample"] == sample) & (shared["router"] == router)
            rows = shared[mine].sort_values("position")
            with torch.no_grad():
                norms = module(hidden).norm(dim=-1).numpy()
            np.testing.assert_allclose(rows["output_norm"], norms, rtol=1e-4, atol=1e-7)
            if family == "qwen2_moe":
                gate = model.get_submodule(spec.shared_experts[0] + "_gate")
                with torch.no_grad():
                    expected = torch.sigmoid(gate(hidden)).reshape(-1).numpy()
                np.testing.assert_allclose(rows["gate"], expected, rtol=1e-5, atol=1e-6)
            else:
                assert rows["gate"].isna().all()


def test_generation_records_norms_at_every_step(tiny_lm: Any, store: Store) -> None:
    runs = [
        routescope.record(
            tiny_lm,
            ["hello world", "a longer prompt"],
            store=store,
            name=engine,
            max_new_tokens=3,
            progress=False,
            engine=engine,
            expert_stats=True,
        )
        for engine in ("nnsight", "hooks")
    ]
    table = runs[0].assignments()
    assert sorted(table["step"].unique()) == [0, 1, 2]
    assert table["output_norm"].notna().all()
    pd.testing.assert_frame_equal(table, runs[1].assignments())


def test_long_batches_are_evaluated_in_slices(
    recorded: Callable[[str], tuple[Any, Run]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from routescope.hooks import expert_outputs

    model, _run = recorded("mixtral")
    path = router_paths("mixtral")[0]
    hidden, index, weights, _out = _experts_calls(model, TEXTS[1], [path])[path]
    module = model.get_submodule(experts_paths(model, [path])[path])
    whole = expert_outputs.rank_norms(module, hidden, index, weights)
    monkeypatch.setattr(expert_outputs, "MAX_ELEMENTS", 3 * 2 * hidden.shape[1])  # 3 tokens a slice
    torch.testing.assert_close(expert_outputs.rank_norms(module, hidden, index, weights), whole)
    assert whole.shape == index.shape
