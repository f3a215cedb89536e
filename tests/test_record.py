"""Recording semantics on the bundled tiny Mixtral and on plain torch modules: what lands in a run is what
the model did, whatever the batching, chunking, padding, engine or generation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import routescope
from routescope.hooks import LoadedModel
from routescope.hooks.normalise import DecodeRule
from routescope.store import InputError, NoRoutersError, Store

TEXTS = ["short", "a somewhat longer sentence to force padding", "def f(x): return x * 2"]
KEYS = ["sample", "step", "router", "call", "position", "rank"]


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


def test_batching_and_padding_do_not_change_the_record(tiny_lm: LoadedModel, store: Store) -> None:
    batched = routescope.record(tiny_lm, TEXTS, store=store, name="b3", batch_size=3, progress=False)
    alone = routescope.record(tiny_lm, TEXTS, store=store, name="b1", batch_size=1, progress=False)
    a, b = _sorted(batched.assignments(), KEYS), _sorted(alone.assignments(), KEYS)
    pd.testing.assert_frame_equal(a.drop(columns="weight"), b.drop(columns="weight"))
    np.testing.assert_allclose(a["weight"], b["weight"], atol=1e-5)
    # no padding in the record: positions are exactly 0..n-1 per sample
    n_tokens = batched.samples()["n_tokens"].tolist()
    decisions = batched.decisions()
    for sample, n in enumerate(n_tokens):
        mine = decisions[(decisions["sample"] == sample) & (decisions["router"] == 0)]
        positions = mine["position"].tolist()
        assert sorted(positions) == list(range(n))


def test_record_matches_the_router_own_output(tiny_lm: LoadedModel, store: Store) -> None:
    run = routescope.record(tiny_lm, [TEXTS[1]], store=store, name="own", probs=True, progress=False)
    ids = torch.tensor([tiny_lm.tokenizer(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        out = tiny_lm.model(input_ids=ids, output_router_logits=True)
    gate = tiny_lm.model.model.layers[2].mlp.gate
    seen: list = []
    handle = gate.register_forward_hook(lambda _m, _a, o: seen.append(o))
    with torch.no_grad():
        tiny_lm.model(input_ids=ids)
    handle.remove()
    rows = _sorted(run.assignments().query("router == 2"), ["position", "rank"])
    assert rows["expert"].tolist() == seen[0][2].reshape(-1).tolist()
    np.testing.assert_allclose(rows["weight"], seen[0][1].reshape(-1).numpy(), atol=1e-6)
    decisions = _sorted(run.decisions().query("router == 2"), ["position"])
    probs = torch.softmax(out.router_logits[2].float(), dim=-1)
    np.testing.assert_allclose(np.stack(decisions["probs"].to_list()), probs.numpy(), atol=1e-6)
    entropy = -(probs * probs.log()).sum(-1)
    top2 = probs.topk(2).values
    np.testing.assert_allclose(decisions["entropy"], entropy.numpy(), atol=1e-5)
    np.testing.assert_allclose(decisions["margin"], (top2[:, 0] - top2[:, 1]).numpy(), atol=1e-6)
    np.testing.assert_allclose(decisions["max_prob"], top2[:, 0].numpy(), atol=1e-6)


def test_long_input_is_chunked_with_absolute_positions(tiny_lm: LoadedModel, store: Store) -> None:
    text = "abcdefghij" * 5  # 50 tokens
    run = routescope.record(tiny_lm, [text], store=store, name="chunks", chunk_size=16, progress=False)
    decisions = run.decisions().query("router == 0")
    assert sorted(decisions["position"]) == list(range(50))
    # the third chunk (positions 32..47) was run on its own: same routing as recording that slice alone
    ids = tiny_lm.tokenizer(text)["input_ids"]
    alone = routescope.record(tiny_lm, [ids[32:48]], store=store, name="slice", progress=False)
    chunk = _sorted(run.assignments().query("32 <= position < 48"), ["router", "position", "rank"])
    single = _sorted(alone.assignments(), ["router", "position", "rank"])
    assert chunk["expert"].tolist() == single["expert"].tolist()
    assert (chunk["position"].to_numpy() - 32 == single["position"].to_numpy()).all()


def test_generation_records_each_new_token(tiny_lm: LoadedModel, store: Store) -> None:
    prompts = ["Once upon a time", "Hi"]
    run = routescope.record(tiny_lm, prompts, store=store, name="gen", max_new_tokens=4, progress=False)
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    all_tokens, all_decisions = run.tokens(), run.decisions()
    for sample, prompt in enumerate(prompts):
        ids = torch.tensor([tok(prompt)["input_ids"]])
        with torch.no_grad():
            expected = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0)[
                0, ids.shape[1] :
            ]
        tokens = all_tokens[(all_tokens["sample"] == sample) & all_tokens["generated"]].sort_values(
            "position"
        )
        assert tokens["token_id"].tolist() == expected.tolist()
        n = ids.shape[1]
        assert tokens["position"].tolist() == list(range(n, n + 4))
        mine = all_decisions[(all_decisions["sample"] == sample) & (all_decisions["router"] == 0)]
        routed = mine.sort_values("position")
        # step 0 routes the prompt; step t routes the token generated at step t-1 (the last is never routed)
        assert routed["step"].tolist() == [0] * n + [1, 2, 3]
        assert routed["position"].tolist() == list(range(n + 3))
    assert run.samples()["n_generated"].tolist() == [4, 4]
    assert run.steps()["step"].tolist() == [0, 1, 2, 3]


def test_generated_step_routing_equals_a_forward_on_the_full_sequence(
    tiny_lm: LoadedModel, store: Store
) -> None:
    run = routescope.record(tiny_lm, ["Hello there"], store=store, name="g", max_new_tokens=3, progress=False)
    full = run.tokens().sort_values("position")["token_id"].tolist()
    forward = routescope.record(tiny_lm, [full], store=store, name="f", progress=False)
    g = _sorted(run.assignments(), ["router", "position", "rank"])
    assigned = forward.assignments()
    f = _sorted(assigned[assigned["position"] < len(full) - 1], ["router", "position", "rank"])
    assert g["expert"].tolist() == f["expert"].tolist()
    np.testing.assert_allclose(g["weight"], f["weight"], atol=1e-5)


def test_nnsight_and_hooks_engines_agree(tiny_lm: LoadedModel, store: Store) -> None:
    a = routescope.record(
        tiny_lm, TEXTS, store=store, name="nn", engine="nnsight", max_new_tokens=2, progress=False
    )
    b = routescope.record(
        tiny_lm, TEXTS, store=store, name="hk", engine="hooks", max_new_tokens=2, progress=False
    )
    pd.testing.assert_frame_equal(a.assignments(), b.assignments())
    pd.testing.assert_frame_equal(a.decisions(), b.decisions())
    pd.testing.assert_frame_equal(a.tokens(), b.tokens())


@pytest.mark.parametrize("bad", [[], [""], ["   "], "a plain string"])
def test_empty_inputs_are_refused(tiny_lm: LoadedModel, store: Store, bad: object) -> None:
    with pytest.raises(InputError):
        routescope.record(tiny_lm, bad, store=store, name="empty", progress=False)  # type: ignore[arg-type]
    assert not store.path.exists()


class ToyMoE(torch.nn.Module):
    """A hand-written MoE block with a logits-only router, used once per layer or shared across depth."""

    def __init__(self, n_layers: int = 2, shared: bool = False) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.blocks = torch.nn.ModuleList([ToyBlock() for _ in range(1 if shared else n_layers)])
        self.depth = n_layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(input_ids)
        for i in range(self.depth):
            h = self.blocks[i % len(self.blocks)](h)
        return h


class ToyBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = torch.nn.Linear(16, 4, bias=False)
        self.experts = torch.nn.ModuleList([torch.nn.Linear(16, 16) for _ in range(4)])
        self.top_k = 2

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.gate(h), dim=-1)
        w, idx = probs.topk(self.top_k, dim=-1)
        out = torch.zeros_like(h)
        for k in range(self.top_k):
            for e, expert in enumerate(self.experts):
                mask = (idx[..., k] == e).unsqueeze(-1)
                out = out + mask * w[..., k : k + 1] * expert(h)
        return h + out


def test_plain_module_found_by_heuristic(store: Store) -> None:
    torch.manual_seed(0)
    model = ToyMoE()
    ids = [[1, 2, 3, 4, 5], [6, 7, 8]]
    run = routescope.record(model, ids, store=store, name="toy", progress=False)
    assert [r["path"] for r in run.routers] == ["blocks.0.gate", "blocks.1.gate"]
    assert [r["layer"] for r in run.routers] == [0, 1]
    probs = torch.softmax(model.blocks[1].gate(model.blocks[0](model.embed(torch.tensor([ids[0]])))), -1)[0]
    expected = probs.topk(2, dim=-1)
    rows = _sorted(run.assignments().query("sample == 0 and router == 1"), ["position", "rank"])
    assert rows["expert"].tolist() == expected.indices.reshape(-1).tolist()
    np.testing.assert_allclose(rows["weight"], expected.values.detach().reshape(-1).numpy(), atol=1e-6)


def test_shared_router_called_per_depth_records_call_index(store: Store) -> None:
    torch.manual_seed(0)
    model = ToyMoE(n_layers=3, shared=True)
    run = routescope.record(
        model,
        [[1, 2, 3, 4]],
        store=store,
        name="shared",
        routers={"blocks.0.gate": DecodeRule(convention="logits", top_k=2)},
        progress=False,
    )
    assert run.routers[0]["call_count"] == 3
    decisions = run.decisions()
    assert sorted(decisions["call"].unique()) == [0, 1, 2]
    assert len(decisions) == 4 * 3
    # call 0 sees the embeddings: its top-1 equals argmax of the gate on the embeddings
    first = decisions.query("call == 0").sort_values("position")
    probs = torch.softmax(model.blocks[0].gate(model.embed(torch.tensor([[1, 2, 3, 4]]))), -1)[0]
    np.testing.assert_allclose(first["max_prob"], probs.max(-1).values.detach().numpy(), atol=1e-6)


def test_model_without_routers_is_a_clear_error(store: Store) -> None:
    with pytest.raises(NoRoutersError, match="no routers found in Sequential"):
        routescope.record(
            torch.nn.Sequential(torch.nn.Embedding(10, 4)), [[1, 2]], store=store, name="none", progress=False
        )
    assert not store.path.exists()


def test_encoder_decoder_generation_and_targets(store: Store) -> None:
    from routescope.models.tokenizers import byte_tokenizer
    from tests.tiny_families import tiny_model

    model, tok = tiny_model("switch_transformers"), byte_tokenizer()
    start = model.config.decoder_start_token_id
    run = routescope.record(
        model,
        ["hello world", "abc"],
        tokenizer=tok,
        store=store,
        name="s2s-gen",
        max_new_tokens=3,
        progress=False,
    )
    routers = {r["id"]: r["stack"] for r in run.routers}
    tokens = run.tokens()
    decoder_tokens = tokens.query("sample == 0 and stack == 'decoder'").sort_values("position")
    assert decoder_tokens["position"].tolist() == [0, 1, 2, 3]
    assert decoder_tokens["token_id"].iloc[0] == start
    assert decoder_tokens["generated"].tolist()[1:] == [True] * 3
    with torch.no_grad():
        expected = model.generate(
            input_ids=torch.tensor([tok("hello world")["input_ids"]]), max_new_tokens=3, do_sample=False
        )[0, 1:]
    assert decoder_tokens["token_id"].tolist()[1:] == expected.tolist()
    d = run.decisions().assign(stack=lambda f: f["router"].map(routers))
    assert set(d.query("stack == 'encoder'")["step"]) == {0}
    assert sorted(d.query("stack == 'decoder' and sample == 0")["position"]) == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]  # 2 routers

    forced = routescope.record(
        model, ["hello world"], targets=["hi"], tokenizer=tok, store=store, name="s2s-t", progress=False
    )
    dec = forced.tokens().query("stack == 'decoder'").sort_values("position")
    assert dec["token_id"].tolist() == [start, *tok("hi", add_special_tokens=False)["input_ids"]]
    seen: list = []
    router = model.decoder.block[1].layer[2].mlp.router
    handle = router.register_forward_hook(lambda _m, _a, o: seen.append(o))
    with torch.no_grad():
        model(
            input_ids=torch.tensor([tok("hello world")["input_ids"]]),
            decoder_input_ids=torch.tensor([dec["token_id"].tolist()]),
        )
    handle.remove()
    last = forced.assignments().query("router == 3").sort_values("position")
    assert last["expert"].tolist() == seen[0][2].argmax(-1).reshape(-1).tolist()
    with pytest.raises(InputError, match="encoder–decoder"):
        routescope.record(
            routescope.load_model("bundled:tiny-mixtral"),
            ["x"],
            targets=["y"],
            store=store,
            name="bad",
            progress=False,
        )


def test_generation_from_a_long_prompt_keeps_the_most_context(tiny_lm: LoadedModel, store: Store) -> None:
    text = "0123456789" * 4  # 40 tokens; chunk 16 with 3 new tokens: generate on the last 13 tokens
    run = routescope.record(
        tiny_lm, [text], store=store, name="long-gen", chunk_size=16, max_new_tokens=3, progress=False
    )
    d = run.decisions()
    prompt = d[(d["router"] == 0) & (d["step"] == 0)]
    assert sorted(prompt["position"]) == list(range(40))
    steps = d[(d["router"] == 0) & (d["step"] > 0)].sort_values("step")
    assert steps["position"].tolist() == [40, 41]
    ids = tiny_lm.tokenizer(text)["input_ids"]
    with torch.no_grad():
        expected = tiny_lm.model.generate(
            input_ids=torch.tensor([ids[27:]]), max_new_tokens=3, do_sample=False, pad_token_id=0
        )[0, 13:]
    generated = run.tokens().query("generated").sort_values("position")
    assert generated["token_id"].tolist() == expected.tolist()


def test_chunked_encoder_decoder_records_one_decoder_pass(store: Store) -> None:
    from routescope.models.tokenizers import byte_tokenizer
    from tests.tiny_families import tiny_model

    model = tiny_model("switch_transformers")
    run = routescope.record(
        model,
        ["abcdefghijklmnopqrst"],
        tokenizer=byte_tokenizer(),
        store=store,
        name="s2s-chunks",
        chunk_size=8,
        progress=False,
    )
    decoder_ids = [r["id"] for r in run.routers if r["stack"] == "decoder"]
    d = run.decisions()
    assert len(d[d["router"].isin(decoder_ids)]) == len(decoder_ids)  # one decoder token, once per router
    assert len(run.tokens().query("stack == 'decoder'")) == 1
    assert sorted(d[d["router"] == 0]["position"]) == list(range(20))


class PositionalMoE(torch.nn.Module):
    """Takes token ids positionally and no attention mask, like many research models."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ToyMoE()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner(tokens)


def test_module_without_mask_gets_unpadded_batches(store: Store) -> None:
    torch.manual_seed(0)
    model = PositionalMoE()
    run = routescope.record(
        model,
        [[1, 2, 3], [4, 5, 6, 7, 8], [9, 10, 11]],
        store=store,
        name="pos",
        batch_size=3,
        progress=False,
    )
    alone = routescope.record(model, [[4, 5, 6, 7, 8]], store=store, name="pos1", progress=False)
    a = run.assignments()
    mine = _sorted(a[a["sample"] == 1], ["router", "position", "rank"])
    single = _sorted(alone.assignments(), ["router", "position", "rank"])
    assert mine["expert"].tolist() == single["expert"].tolist()
    assert run.routers[0]["path"] == "inner.blocks.0.gate"


def test_a_declared_rule_that_does_not_fit_is_a_clear_error(store: Store) -> None:
    from routescope.store.errors import RouterOutputError

    with pytest.raises(RouterOutputError, match="does not fit the 'triple' convention"):
        routescope.record(
            ToyMoE(),
            [[1, 2, 3]],
            store=store,
            name="wrong",
            routers={"blocks.0.gate": DecodeRule(convention="triple")},
            progress=False,
        )
    assert not store.path.exists()


def test_files_hold_few_row_groups(tiny_lm: LoadedModel, store: Store) -> None:
    import pyarrow.parquet as pq

    run = routescope.record(
        tiny_lm, TEXTS * 4, store=store, name="groups", batch_size=2, max_new_tokens=3, progress=False
    )
    for table in ("assignments", "decisions", "tokens"):
        assert pq.ParquetFile(run.table_path(table)).num_row_groups == 1
