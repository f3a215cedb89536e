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
4. DeepSeek-V3's choice is not `topk(logits)`, and Switch drops tokens with weight 0;
5. the nnsight and hooks engines write identical tables.
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

import routescope
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
}
SHARED = {"qwen2_moe": "shared_expert", "deepseek_v3": "shared_experts"}


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


def _inputs(model: Any, text: str) -> dict[str, torch.Tensor]:
    inputs = {"input_ids": torch.tensor([byte_tokenizer()(text)["input_ids"]])}
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id]])
    return inputs


def _keep(seen: dict[str, Any], path: str) -> Callable[..., None]:
    def hook(_module: torch.nn.Module, _args: Any, output: tuple[torch.Tensor, ...]) -> None:
        seen[path] = tuple(t.detach().clone() for t in output)

    return hook


def _reference(fam: Family) -> None:
    """Run a fresh build of the model on each text alone: hooks on the routers + `output_router_logits`."""
    model = tiny_model(fam.name)  # deterministic: same weights as the recorded model, untouched by nnsight
    for text in TEXTS:
        seen: dict[str, Any] = {}
        paths = router_paths(fam.name)
        handles = [model.get_submodule(p).register_forward_hook(_keep(seen, p)) for p in paths]
        try:
            with torch.no_grad():
                out = model(**_inputs(model, text), output_router_logits=True)
        finally:
            for handle in handles:
                handle.remove()
        fam.hooked.append(seen)
        raw = (*out.encoder_router_logits, *out.decoder_router_logits) if fam.switch else out.router_logits
        fam.logits.append([t.reshape(-1, t.shape[-1]).float() for t in raw])


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
    assert stacks == (["encoder"] * 2 + ["decoder"] * 2 if fam.switch else ["decoder"] * 2)
    for r in routers:
        parent = r["path"].rpartition(".")[0]
        assert r["shared_experts"] == ([f"{parent}.{SHARED[family]}"] if family in SHARED else [])
        assert r["n_experts"] == getattr(fam.model.config, EXPERTS_ATTR[family])
        assert r["top_k"] == (1 if fam.switch else fam.model.config.num_experts_per_tok)
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
        else:
            experts.append(out[2].reshape(-1))
            weights.append(out[1].reshape(-1))
            dropped.append(torch.zeros_like(out[2].reshape(-1), dtype=torch.bool))
    return torch.cat(experts).numpy(), torch.cat(weights).numpy(), torch.cat(dropped).numpy()


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
    if fam.name == "deepseek_v3":
        scores = logits.sigmoid()
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


@pytest.mark.parametrize("family", ["deepseek_v3", "switch_transformers"])
def test_family_specific_choice(families: Callable[[str], Family], family: str) -> None:
    fam = families(family)
    table = fam.runs["nnsight"].assignments()
    if family == "switch_transformers":
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
