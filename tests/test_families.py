"""Per-family golden tests: what RouteScope records equals what each MoE family's model itself computed.

Every family's router returns something different (a `(logits, weights, indices)` triple, Switch's
`(one-hot, max prob, logits)` with capacity drops), chooses differently (DeepSeek-V3: sigmoid + bias within
groups) and puts routers in different places (dense layers, encoder/decoder stacks).  Unit tests of the
normaliser cannot catch a family that is decoded wrongly, so for each tiny family model this file checks,
token by token, a batched, right-padded `record()` against an independent, unpadded run of the same model:
1. discovery equals the hand-written router paths and config;
2. experts, weights and drop flags equal the router's own return values (plain torch forward hooks);
3. probabilities, entropy, margin and max prob equal `output_router_logits` passed through the family's
   scoring function;
4. DeepSeek-V3's choice is not `topk(logits)`, Switch and NLLB-MoE drop tokens with weight 0, JetMoE's
   attention-head and FFN routers are separate routers of kind `attention` / `ffn`;
5. the nnsight and hooks engines write identical tables.
NLLB-MoE's capacity is shared by every token of a batch, so its reference runs the recording's batches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from transformers.activations import ACT2FN

import routescope
from routescope.hooks.families import family_info
from routescope.models.tokenizers import byte_tokenizer
from routescope.store import Run, Store
from tests.tiny_families import FAMILIES, router_paths, tiny_model

TEXTS = ["Hi moe!", "Routers pick experts", "Padding test"]  # 7, 20 and 12 byte tokens
SORT = ["router", "position", "rank"]
EXPERTS_ATTR = {
    "mixtral": "num_local_experts",
    "qwen2_moe": "num_experts",
    "qwen3_moe": "num_experts",
    "olmoe": "num_experts",
    "deepseek_v3": "n_routed_experts",
    "gpt_oss": "num_local_experts",
    "switch_transformers": "num_experts",
    "granitemoe": "num_local_experts",
    "jetmoe": "num_local_experts",
    "nllb-moe": "num_experts",
}
TOP_K = {"switch_transformers": 1, "nllb-moe": 2, "dbrx": 2, "nemo_speechlm": 2}
N_EXPERTS = {"longcat_flash": 10, "zaya": 9}
"""Families whose routers score more experts than the config's count: LongCat-Flash's 8 + 2 zero experts."""
BATCHES = {"nllb-moe": [[0, 1], [2]]}
DISPATCH = {"dbrx": "experts"}
"""Families whose router returns logits only: their reference is what the MoE block passed to this sibling
of the router, `(hidden, top_k_index, top_k_weights)`, kept as the triple `(logits, weights, indices)`."""
"""Families whose reference runs the recording's batches (batch_size=2): their capacity is per batch."""
SHARED = {
    "qwen2_moe": "shared_expert",
    "lara_mini": "shared_expert",
    "hunyuan_v1_moe": "shared_mlp",
    "granitemoehybrid": "{layer}.shared_mlp",  # beside the MoE block, not in it
    "ernie4_5_vl_moe_text": "{layer}.shared_experts",  # beside the text and vision sub-blocks
    **dict.fromkeys(
        ("llama4_text", "qwen3_next", "qwen3_5_moe_text", "flint", "qwen4_exp_text"), "shared_expert"
    ),
    **dict.fromkeys(
        (
            *("deepseek_v3", "kolibri1", "aria_text", "ernie4_5_moe", "exaone_moe", "solar_open", "glm4_moe"),
            *("axk1", "axk2", "deepseek_v2", "deepseek_v32", "dots3_note_text", "glm_moe_dsa", "sarvam_mla"),
            *("sarvam_moe", "minimax_m3_vl_text", "glm4_moe_lite", "hy_v3", "hy_v4", "laguna"),
            *("mistral_large4_text", "nemotron_h", "afmoe", "inkling_text", "bailing_hybrid", "kimi_linear"),
            *("deepseek_v4", "hy_v4_vl_text", "dots1", "mistral4", "glm5_next_text", "step3p5"),
            *("deepseek_ocr2_text", "unlimited_ocr_text", "nemo_speechlm", "ergo", "minicpm5_moe"),
            *("param2moe", "kolibri1_1"),
        ),
        "shared_experts",
    ),
}


@dataclass
class Family:
    """One family's tiny model, its two recordings and its unpadded reference runs (one per text)."""

    name: str
    model: Any
    runs: dict[str, Run]
    hooked: list[dict[str, Any]] = field(default_factory=list)
    """Per text: router path → the router module's raw output (batch 1, no padding)."""
    logits: list[list[torch.Tensor]] = field(default_factory=list)
    """Per text: `output_router_logits` as [T, E] per router, in router-id order."""

    @property
    def switch(self) -> bool:
        return self.name == "switch_transformers"

    @property
    def encoder_decoder(self) -> bool:
        return bool(self.model.config.is_encoder_decoder)


def _inputs(model: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    """A right-padded batch, as `record` builds it."""
    ids = [byte_tokenizer()(text)["input_ids"] for text in texts]
    width = max(len(row) for row in ids)
    inputs = {
        "input_ids": torch.tensor([row + [0] * (width - len(row)) for row in ids]),
        "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids]),
    }
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = torch.full((len(ids), 1), model.config.decoder_start_token_id)
    return inputs


def _row_of(value: Any, batch: int, row: int, length: int) -> Any:
    """Sample `row`'s first `length` rows of a router output computed on `batch` samples ([B·S, ...])."""
    if batch == 1:
        return value
    if isinstance(value, tuple):
        return tuple(_row_of(v, batch, row, length) for v in value)
    shaped = value.reshape(batch, -1, value.shape[-1])
    return shaped[row, : min(length, shaped.shape[1])]  # a decoder of 1 start token has 1 row


def _keep(seen: dict[str, Any], path: str) -> Callable[..., None]:
    def hook(_module: torch.nn.Module, _args: Any, output: tuple[Any, ...] | torch.Tensor) -> None:
        output = (output,) if isinstance(output, torch.Tensor) else output
        seen[path] = tuple(t.detach().clone() if isinstance(t, torch.Tensor) else t for t in output)

    return hook


def _dispatched(seen: dict[str, Any], path: str) -> Callable[..., None]:
    """Pre-hook on the experts beside a logits-only router: append the indices and weights they were given."""

    def hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        _hidden, index, weights = args[:3]
        seen[path] = (*seen[path][:1], weights.detach().clone(), index.detach().clone())

    return hook


def _reference(fam: Family) -> None:
    """Run a fresh build of the model on each text alone (or on the recording's batches, `BATCHES`): hooks
    on the routers + `output_router_logits`."""
    model = tiny_model(fam.name)  # deterministic: same weights as the recorded model, untouched by nnsight
    lengths = [len(byte_tokenizer()(text)["input_ids"]) for text in TEXTS]
    for batch in BATCHES.get(fam.name, [[i] for i in range(len(TEXTS))]):
        seen: dict[str, Any] = {}
        paths = router_paths(fam.name)
        handles = [model.get_submodule(p).register_forward_hook(_keep(seen, p)) for p in paths]
        if fam.name in DISPATCH:
            siblings = [(p, f"{p.rpartition('.')[0]}.{DISPATCH[fam.name]}") for p in paths]
            handles += [
                model.get_submodule(s).register_forward_pre_hook(_dispatched(seen, p)) for p, s in siblings
            ]
        try:
            with torch.no_grad():
                out = model(**_inputs(model, [TEXTS[i] for i in batch]), output_router_logits=True)
        finally:
            for handle in handles:
                handle.remove()
        encdec = fam.encoder_decoder
        raw = (
            (*out.encoder_router_logits, *out.decoder_router_logits)
            if encdec
            else getattr(out, "router_logits", None)
        )
        if (
            raw is None
        ):  # Nemotron-3.5-Transcribe's output drops its language model's: the routers' own logits
            raw = [seen[path][0] for path in paths]
        for row, sample in enumerate(batch):
            n, b = lengths[sample], len(batch)
            fam.hooked.append({path: _row_of(value, b, row, n) for path, value in seen.items()})
            fam.logits.append([_row_of(t, b, row, n).reshape(-1, t.shape[-1]).float() for t in raw])


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Family]:
    """Build, record and run each family once per module, on first use."""
    store = Store(tmp_path_factory.mktemp("families"))
    built: dict[str, Family] = {}

    def get(name: str) -> Family:
        if name not in built:
            model = tiny_model(name)
            runs = {
                engine: routescope.record(
                    model,
                    TEXTS,
                    tokenizer=byte_tokenizer(),
                    store=store,
                    name=f"{name}-{engine}",
                    probs=True,
                    batch_size=2,
                    progress=False,
                    engine=engine,
                )
                for engine in ("nnsight", "hooks")
            }
            built[name] = Family(name, model, runs)
            _reference(built[name])
        return built[name]

    return get


def _sample(frame: pd.DataFrame, sample: int, by: list[str]) -> pd.DataFrame:
    return frame[frame["sample"] == sample].sort_values(by).reset_index(drop=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_discovery_matches_golden_paths(families: Callable[[str], Family], family: str) -> None:
    fam = families(family)
    routers = sorted(fam.runs["nnsight"].manifest["routers"], key=lambda r: r["id"])
    assert [r["path"] for r in routers] == router_paths(family)
    assert [r["id"] for r in routers] == list(range(len(routers)))
    assert [r["layer"] for r in routers] == [int(re.findall(r"\.(\d+)\.", r["path"])[0]) for r in routers]
    if family == "deepseek_v3":
        assert [r["layer"] for r in routers] == [1, 2]  # layer 0 is dense
    stacks = [r["stack"] for r in routers]
    n = len(routers)
    half = n // 2
    assert stacks == (["encoder"] * half + ["decoder"] * half if fam.encoder_decoder else ["decoder"] * n)
    kinds = [r["kind"] for r in routers]
    assert kinds == (["attention", "ffn"] * 2 if family == "jetmoe" else ["ffn"] * n)
    for r in routers:
        parent = r["path"].rpartition(".")[0]
        shared = SHARED.get(family, "").format(layer=parent.rpartition(".")[0])
        assert r["shared_experts"] == (
            [shared if "{" in SHARED[family] else f"{parent}.{shared}"] if shared else []
        )
        n_experts = getattr(fam.model.config, EXPERTS_ATTR[family]) if family in EXPERTS_ATTR else 8
        assert r["n_experts"] == N_EXPERTS.get(family, n_experts)
        top_k = TOP_K[family] if family in TOP_K else fam.model.config.num_experts_per_tok  # noqa: SIM401
        assert r["top_k"] == top_k  # (NLLB-MoE's config has no num_experts_per_tok to default to)
        assert r["call_count"] == 1


def _expected_assignments(fam: Family, sample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expert ids, weights and drop flags the routers returned, ordered by router, position, rank."""
    experts, weights, dropped = [], [], []
    for path in router_paths(fam.name):
        out = fam.hooked[sample][path]
        if fam.switch:
            onehot, max_prob, logits = (t.reshape(-1, t.shape[-1]) for t in out)
            drop = onehot.sum(-1) == 0
            experts.append(torch.where(drop, logits.argmax(-1), onehot.argmax(-1)))
            weights.append(torch.where(drop, 0.0, max_prob[:, 0]))
            dropped.append(drop)
        elif fam.name == "jetmoe":
            expert, weight = _jetmoe_slots(out)
            experts.append(expert.reshape(-1))
            weights.append(weight.reshape(-1))
            dropped.append(torch.zeros_like(expert.reshape(-1), dtype=torch.bool))
        elif fam.name == "llama4_text":  # (scores [T, E], logits [T, E]): top-k of the logits, their scores
            scores, logits = (t.reshape(-1, t.shape[-1]) for t in out)
            expert = torch.topk(logits, fam.model.config.num_experts_per_tok, dim=-1).indices
            experts.append(expert.reshape(-1))
            weights.append(scores.gather(1, expert).reshape(-1))
            dropped.append(torch.zeros_like(expert.reshape(-1), dtype=torch.bool))
        elif fam.name == "nllb-moe":
            expert, weight = _nllb_choice(out)
            experts.append(expert.reshape(-1))
            weights.append(weight.reshape(-1))
            dropped.append(weight.reshape(-1) == 0)
        elif fam.name == "zaya":  # its choice, from the logits and balancing biases: the skip class is 8
            bias = fam.model.get_submodule(path).get_buffer("balancing_biases")
            expert = torch.topk(torch.softmax(out[0], -1) + bias, 1, dim=-1).indices
            experts.append(expert.reshape(-1))
            weights.append(out[1].reshape(-1))
            dropped.append(torch.zeros_like(expert.reshape(-1), dtype=torch.bool))
        else:
            experts.append(out[2].reshape(-1))
            weights.append(out[1].reshape(-1))
            dropped.append(torch.zeros_like(out[2].reshape(-1), dtype=torch.bool))
    return torch.cat(experts).numpy(), torch.cat(weights).numpy(), torch.cat(dropped).numpy()


def _jetmoe_slots(out: tuple[Any, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, k] experts and gates from JetMoE's own slots: sorted slot j goes to the j-th expert by the counts
    (`expert_size`) and belongs to token `batch_index[j]`; ranks are the topk order of the logits."""
    _order, token, gates, counts, logits = out
    slot_expert = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    k = token.numel() // logits.shape[0]
    rank_of = {}
    for t, row in enumerate(torch.topk(logits, k, dim=-1).indices.tolist()):
        rank_of.update({(t, e): r for r, e in enumerate(row)})
    expert = torch.full((logits.shape[0], k), -1)
    weight = torch.zeros(logits.shape[0], k)
    for t, e, g in zip(token.tolist(), slot_expert.tolist(), gates.tolist(), strict=True):
        expert[t, rank_of[(t, e)]], weight[t, rank_of[(t, e)]] = e, g
    assert (expert >= 0).all()  # every (token, rank) has exactly one slot
    return expert, weight


def _nllb_choice(out: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, 2] experts and combine weights of NLLB-MoE's router: its top-2 of the logits (the first one is the
    top-1 mask's column whenever the token kept it), weighted by the combine weights it returned, which are
    non-zero nowhere else."""
    mask, combine, logits = out
    expert = torch.topk(logits, 2, dim=-1).indices
    kept = mask.sum(-1) > 0
    assert torch.equal(mask.argmax(-1)[kept], expert[kept, 0])
    weight = combine.gather(1, expert)
    assert torch.equal((combine > 0).sum(-1), (weight > 0).sum(-1))
    return expert, weight


@pytest.mark.parametrize("family", FAMILIES)
def test_assignments_equal_router_outputs(families: Callable[[str], Family], family: str) -> None:
    fam = families(family)
    # batch 0 holds samples 0 and 1 (7 and 20 tokens), so sample 0 carries 13 right pads
    assert fam.runs["nnsight"].samples()["n_tokens"].tolist() == [7, 20, 12]
    table = fam.runs["nnsight"].assignments()
    assert sorted(table["sample"].unique()) == [0, 1, 2]
    for sample in range(len(TEXTS)):
        got = _sample(table, sample, SORT)
        expert, weight, dropped = _expected_assignments(fam, sample)
        assert len(got) == len(expert) > 0
        np.testing.assert_array_equal(got["expert"].to_numpy(), expert)
        np.testing.assert_allclose(got["weight"].to_numpy(), weight, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(got["dropped"].to_numpy(), dropped)
        assert (got["step"] == 0).all()
        assert (got["call"] == 0).all()


def _reference_probs(fam: Family, sample: int) -> np.ndarray:
    logits = torch.cat(fam.logits[sample])
    scoring = family_info(fam.name).scoring
    if scoring == "probs":  # the router returned its softmax probabilities (Gemma 4): no second softmax
        return (logits / logits.sum(-1, keepdim=True)).numpy()
    if scoring in ("sigmoid", "sqrtsoftplus"):  # the model's own score function (DeepSeek-V4: √softplus)
        scores = ACT2FN[scoring](logits)
        return (scores / scores.sum(-1, keepdim=True)).numpy()
    return torch.softmax(logits, -1).numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_probs_equal_output_router_logits(families: Callable[[str], Family], family: str) -> None:
    fam = families(family)
    table = fam.runs["nnsight"].decisions()
    for sample in range(len(TEXTS)):
        got = _sample(table, sample, ["router", "position"])
        probs = _reference_probs(fam, sample)
        assert np.stack(got["probs"].to_list()).shape == probs.shape
        np.testing.assert_allclose(np.stack(got["probs"].to_list()), probs, rtol=0, atol=1e-5)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        top = -np.sort(-probs, axis=-1)
        entropy = -(probs * np.log(probs)).sum(-1)
        np.testing.assert_allclose(got["entropy"].to_numpy(), entropy, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got["margin"].to_numpy(), top[:, 0] - top[:, 1], rtol=0, atol=1e-5)
        np.testing.assert_allclose(got["max_prob"].to_numpy(), top[:, 0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["deepseek_v3", "switch_transformers", "nllb-moe", "zaya"])
def test_family_specific_choice(families: Callable[[str], Family], family: str) -> None:
    fam = families(family)
    table = fam.runs["nnsight"].assignments()
    if family == "zaya":  # the skip class (8), which the router returns as (0, weight 0), is recorded as 8
        assert [(r["zero_experts"], r["skip_expert"]) for r in fam.runs["nnsight"].routers] == [([8], 8)] * 2
        skipped = table[table["expert"] == 8]
        assert len(skipped) > 0
        assert (skipped["weight"] == 0.0).all()
        assert (table.loc[table["expert"] != 8, "weight"] > 0).all()
        return
    if family in ("switch_transformers", "nllb-moe"):
        dropped = table[table["dropped"]]
        assert len(dropped) > 0
        assert (dropped["weight"] == 0.0).all()
        assert (table.loc[~table["dropped"], "weight"] > 0).all()
        return
    differs = 0
    for sample in range(len(TEXTS)):
        chosen = _sample(table, sample, SORT)["expert"].to_numpy().reshape(-1, 2)
        naive = torch.topk(torch.cat(fam.logits[sample]), 2, dim=-1).indices.numpy()
        differs += sum(set(a) != set(b) for a, b in zip(chosen, naive, strict=True))
    assert differs > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_engines_write_identical_tables(families: Callable[[str], Family], family: str) -> None:
    runs = families(family).runs
    pd.testing.assert_frame_equal(runs["nnsight"].assignments(), runs["hooks"].assignments())
    a, b = runs["nnsight"].decisions(), runs["hooks"].decisions()
    lists = ["probs", "logits"]
    pd.testing.assert_frame_equal(a.drop(columns=lists), b.drop(columns=lists))
    for column in lists:
        np.testing.assert_array_equal(np.stack(a[column].to_list()), np.stack(b[column].to_list()))
    assert len(a) > 0
