"""`record(expert_stats=True)`: `assignments.output_norm` is ‖f_e(x)‖₂ of each chosen expert before its gate.

Checked against an independent, unpadded batch-1 forward of the same model (NLLB-MoE: the recording's
batches, its capacity being per batch), with forward hooks on its routers or experts modules: (1) from the
weights — the fused SwiGLU experts of Mixtral-style families from `gate_up_proj`/`down_proj`, Switch's from
its per-expert modules, Llama4's stacked experts on the unscaled token, JetMoE's FFN experts and attention
experts (MoA, attention by hand) from `input_linear`/`output_linear`, NLLB-MoE's from the expert modules
transformers 5.24/5.25 actually runs (not the router's choice: `NLLB_RAN`); (2) for every other tiny
family, the generic property: the per-rank outputs the mechanism computes add up, gate-weighted, to what
the experts module returned, and their norms are what the run holds (non-null, finite, positive; null
exactly where Switch dropped a token); (3) both engines write the same norms on the bundled moe-lm and,
generating, on the three families whose norms wait for the decoded choices or are read from the run;
(4) the shared experts' table holds ‖shared(x)‖ and, for Qwen2-MoE, sigmoid(shared_expert_gate(x)).
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
    return _rows_of(run.assignments(), sample, router)


def _rows_of(table: pd.DataFrame, sample: int, router: int) -> pd.DataFrame:
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


OTHER_SHAPES = ("jetmoe", "llama4_text", "nllb-moe")
"""Families whose experts are not called per rank as experts(hidden, ids, weights) (hooks/expert_outputs.py):
NLLB-MoE's call takes per-expert mask and weights, Llama4's experts are stacked (every expert on every
token), JetMoE's run on slots sorted by expert; each is checked against its weights below."""


def _router_io(model: Any, inputs: dict[str, torch.Tensor], paths: list[str]) -> dict[str, tuple[Any, Any]]:
    """Router path → (its input `[T, H]`, its output) on one forward of `inputs`."""
    seen: dict[str, tuple[Any, Any]] = {}

    def keep(path: str) -> Callable[..., None]:
        def hook(_module: Any, args: tuple[Any, ...], output: Any) -> None:
            hidden = args[0].detach().clone()
            seen[path] = (hidden.reshape(-1, hidden.shape[-1]), output)

        return hook

    handles = [model.get_submodule(p).register_forward_hook(keep(p)) for p in paths]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_llama4_norms_are_its_stacked_experts_on_the_unscaled_token(
    recorded: Callable[[str], tuple[Any, Run]],
) -> None:
    """Llama4 feeds each expert score · x; output_norm is ‖f_e(x)‖ of the router's top-k (its dispatch), from
    `gate_up_proj`/`down_proj`: f_e(x) = (up · act(gate)) down_e with [gate, up] = x gate_up_e."""
    model, run = recorded("llama4_text")
    paths = router_paths("llama4_text")
    k = model.config.num_experts_per_tok
    for sample, text in enumerate(TEXTS):
        io = _router_io(model, _inputs(model, text), paths)
        for router, path in enumerate(paths):
            hidden, (_scores, logits) = io[path]
            experts = model.get_submodule(path.rpartition(".")[0] + ".experts")
            chosen = torch.topk(logits, k, dim=-1).indices
            with torch.no_grad():
                gate, up = torch.einsum("th,tkhf->tkf", hidden, experts.gate_up_proj[chosen]).chunk(2, dim=-1)
                out = torch.einsum("tkf,tkfh->tkh", up * experts.act_fn(gate), experts.down_proj[chosen])
            rows = _rows(run, sample, router)
            np.testing.assert_array_equal(rows["expert"].to_numpy(), chosen.reshape(-1).numpy())
            expected = out.norm(dim=-1).reshape(-1).numpy()
            np.testing.assert_allclose(
                rows["output_norm"].to_numpy(dtype=float), expected, rtol=1e-4, atol=1e-6
            )


def _jetmoe_attention_outputs(
    model: Any, path: str, hidden: torch.Tensor, chosen: torch.Tensor
) -> torch.Tensor:
    """`[T, k, H]`: JetMoE's attention experts (MoA) by hand for one unpadded sequence: rank r's heads query
    with W_in[e_{t,r}] x_t, attend causally over the rotated keys and values of `kv_proj`, and W_out[e_{t,r}]
    projects their outputs (the block's bias, added once after the gated sum, is no expert's)."""
    from transformers.models.jetmoe.modeling_jetmoe import apply_rotary_pos_emb

    attention = model.get_submodule(path.removesuffix(".experts.router"))
    moa = attention.experts
    tokens, k = chosen.shape
    kv_heads, head_dim = attention.num_key_value_heads, attention.head_dim
    query = torch.einsum("th,tkdh->tkd", hidden, moa.input_linear.weight[chosen])  # [T, k, kv·hd]
    query = query.reshape(tokens, k * kv_heads, head_dim).transpose(0, 1)[None]  # head r·kv + j
    key, value = (
        t.reshape(tokens, kv_heads, head_dim).transpose(0, 1)[None]
        for t in attention.kv_proj(hidden).chunk(2, -1)
    )
    cos, sin = model.model.rotary_emb(hidden[None], torch.arange(tokens)[None])
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    key, value = key.repeat(1, k, 1, 1), value.repeat(1, k, 1, 1)  # head h reads kv head h % kv_heads
    scores = query @ key.transpose(-1, -2) * attention.scaling
    causal = torch.ones(tokens, tokens, dtype=torch.bool).tril()
    mixed = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ value  # [1, heads, T, hd]
    per_rank = mixed[0].transpose(0, 1).reshape(tokens, k, kv_heads * head_dim)
    return torch.einsum("tkd,tkhd->tkh", per_rank, moa.output_linear.weight[chosen])


def test_jetmoe_norms_equal_its_ffn_and_attention_experts_from_the_weights(
    recorded: Callable[[str], tuple[Any, Run]],
) -> None:
    """JetMoE's norms are read from its own run (the sorted-slot rows of `output_linear`); here they are
    computed from `input_linear`/`output_linear` weights: FFN experts W_out_e(act(g) · u), [g, u] = W_in_e x;
    attention experts as `_jetmoe_attention_outputs`. Choices: the router's top-k of its logits."""
    model, run = recorded("jetmoe")
    paths = router_paths("jetmoe")
    k = model.config.num_experts_per_tok
    for sample, text in enumerate(TEXTS):
        io = _router_io(model, _inputs(model, text), paths)
        for router, path in enumerate(paths):
            hidden, output = io[path]
            chosen = torch.topk(output[4], k, dim=-1).indices
            with torch.no_grad():
                if ".self_attention." in path:
                    out = _jetmoe_attention_outputs(model, path, hidden, chosen)
                else:
                    mlp = model.get_submodule(path.rpartition(".")[0])
                    inner = torch.einsum("th,tkfh->tkf", hidden, mlp.input_linear.weight[chosen])
                    gate, up = inner.chunk(2, dim=-1)
                    out = torch.einsum(
                        "tkf,tkhf->tkh", mlp.activation(gate) * up, mlp.output_linear.weight[chosen]
                    )
            rows = _rows(run, sample, router)
            np.testing.assert_array_equal(rows["expert"].to_numpy(), chosen.reshape(-1).numpy())
            expected = out.norm(dim=-1).reshape(-1).numpy()
            np.testing.assert_allclose(
                rows["output_norm"].to_numpy(dtype=float), expected, rtol=1e-4, atol=1e-6
            )


NLLB_RAN = (1, 0)
"""The expert module transformers 5.24/5.25's `NllbMoeExperts` runs for each rank, whatever the router chose:
it indexes its experts by the top-1 mask's values (docs/routers.md), so `expert_1` for every kept first
choice and `expert_0` for every second. A transformers that fixes this fails the test below, on purpose."""


def test_nllb_norms_are_those_of_the_experts_it_ran(recorded: Callable[[str], tuple[Any, Run]]) -> None:
    """NLLB-MoE: output_norm = (1 − moe_token_dropout) · ‖expert_{NLLB_RAN[r]}(x)‖ from fc1/fc2 (the scale is
    applied inside the experts call), on the recording's batches (its capacity is per batch); null where the
    capacity refused the choice. It is not the norm of the router's chosen expert (checked: they differ)."""
    model, run = recorded("nllb-moe")
    paths = router_paths("nllb-moe")
    experts = experts_paths(model, paths)
    scale = 1.0 - model.config.moe_token_dropout
    lengths = [len(byte_tokenizer()(text)["input_ids"]) for text in TEXTS]
    differs = False
    for batch in ([0, 1], [2]):  # record_family's batches (batch_size=2), right-padded as record() pads
        ids = [byte_tokenizer()(TEXTS[i])["input_ids"] for i in batch]
        width = max(lengths[i] for i in batch)
        inputs = {
            "input_ids": torch.tensor([row + [0] * (width - len(row)) for row in ids]),
            "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids]),
            "decoder_input_ids": torch.full((len(batch), 1), model.config.decoder_start_token_id),
        }
        calls: Calls = {}
        handles = [
            model.get_submodule(experts[p]).register_forward_hook(
                lambda _m, args, out, p=p, seen=calls: seen.__setitem__(p, (*args, out))
            )
            for p in paths
        ]
        try:
            with torch.no_grad():
                model(**inputs)
        finally:
            for handle in handles:
                handle.remove()
        for router, path in enumerate(paths):
            module = model.get_submodule(experts[path])
            hidden = calls[path][0].reshape(len(batch), -1, calls[path][0].shape[-1])
            for row, sample in enumerate(batch):
                x = hidden[row, : min(lengths[sample], hidden.shape[1])]  # the decoder has 1 start token
                rows = _rows(run, sample, router)
                norms = rows["output_norm"].to_numpy(dtype=float).reshape(-1, 2)
                dropped = rows["dropped"].to_numpy().reshape(-1, 2)
                chosen = rows["expert"].to_numpy().reshape(-1, 2)
                assert np.isnan(norms[dropped]).all()
                with torch.no_grad():
                    ran = [module[f"expert_{e}"](x).norm(dim=-1) * scale for e in NLLB_RAN]
                expected = torch.stack(ran, dim=-1).numpy()
                np.testing.assert_allclose(norms[~dropped], expected[~dropped], rtol=1e-4, atol=1e-6)
                with torch.no_grad():
                    choice = np.array(
                        [
                            [float(module[f"expert_{e}"](x[t]).norm()) * scale for e in chosen[t]]
                            for t in range(len(x))
                        ]
                    )
                differs |= not np.allclose(norms[~dropped], choice[~dropped], rtol=1e-3)
    assert differs


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in OTHER_SHAPES])
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
            torch.testing.assert_close(weighted, output.reshape(weighted.shape), rtol=1e-4, atol=1e-5)
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


@pytest.mark.parametrize("family", OTHER_SHAPES)
def test_engines_agree_while_generating(tmp_path: Any, family: str) -> None:
    """Norms resolved when the batch is written (NLLB-MoE, Llama4) or read from the run (JetMoE) line up with
    the router calls of every generation step, on both engines."""
    model = tiny_model(family)
    tables = [
        record_family(
            model, Store(tmp_path / engine), family, expert_stats=True, max_new_tokens=2, engine=engine
        ).assignments()
        for engine in ("nnsight", "hooks")
    ]
    assert sorted(tables[0]["step"].unique()) == [0, 1]
    routed = tables[0].loc[~tables[0]["dropped"], "output_norm"].to_numpy(dtype=float)
    assert np.isfinite(routed).all()
    assert (routed > 0).all()
    assert tables[0].loc[tables[0]["dropped"], "output_norm"].isna().all()
    pd.testing.assert_frame_equal(*tables)


def test_module_list_experts_record_their_members_norms(store: Store) -> None:
    """A hand-written block whose experts are a `ModuleList` of `Linear`s (tests/test_record.py's ToyMoE), in
    text recording: each chosen member's ‖W_e x + b_e‖ on the router's input, for the recorded choice."""
    torch.manual_seed(0)
    model = ToyMoE()
    ids = [[1, 2, 3, 4, 5], [6, 7, 8]]
    table = routescope.record(
        model, ids, store=store, name="toy", batch_size=2, progress=False, expert_stats=True
    ).assignments()
    inputs: dict[str, torch.Tensor] = {}
    paths = ["blocks.0.gate", "blocks.1.gate"]
    for sample, row in enumerate(ids):
        handles = [
            model.get_submodule(p).register_forward_hook(
                lambda _m, args, _o, p=p, seen=inputs: seen.__setitem__(p, args[0][0])
            )
            for p in paths
        ]
        try:
            with torch.no_grad():
                model(torch.tensor([row]))
        finally:
            for handle in handles:
                handle.remove()
        for router, path in enumerate(paths):
            rows = _rows_of(table, sample, router)
            experts = model.get_submodule(path.rpartition(".")[0] + ".experts")
            with torch.no_grad():
                expected = [
                    float(
                        torch.nn.functional.linear(inputs[path][p], experts[e].weight, experts[e].bias).norm()
                    )
                    for p, e in zip(rows["position"], rows["expert"], strict=True)
                ]
            np.testing.assert_allclose(
                rows["output_norm"].to_numpy(dtype=float), expected, rtol=1e-4, atol=1e-6
            )


def test_experts_that_cannot_be_evaluated_are_refused(store: Store) -> None:
    torch.manual_seed(0)
    model = ToyMoE()
    for block in model.blocks:
        block.experts = torch.nn.Linear(16, 16)  # one module of one argument: none of the four shapes
    with pytest.raises(InputError, match="expert_stats needs experts") as caught:
        routescope.record(model, [[1, 2, 3]], store=store, name="toy", progress=False, expert_stats=True)
    assert caught.value.field == "expert_stats"
    assert "\n" not in str(caught.value)
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
