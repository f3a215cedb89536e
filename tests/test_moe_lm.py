"""bundled:moe-lm: loads offline, beats its unigram baselines, ships its evaluation set, trains (smoke run)
and records deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from transformers import Qwen2MoeForCausalLM

import routescope
from routescope.hooks import LoadedModel
from routescope.models import bundled_dataset_names, bundled_names, load_bundled_dataset
from routescope.models.moe_lm.corpus import DOMAINS
from routescope.models.moe_lm.evaluate import domain_losses
from routescope.models.moe_lm.load import WEIGHTS_DIR
from routescope.models.moe_lm.train import train


@pytest.fixture(scope="module")
def moe_lm() -> LoadedModel:
    return routescope.load_model("bundled:moe-lm")


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads((WEIGHTS_DIR / "metrics.json").read_text(encoding="utf-8"))


def test_loads_offline_as_qwen2_moe_with_shared_experts(moe_lm: LoadedModel) -> None:
    assert "moe-lm" in bundled_names()
    model = moe_lm.model
    assert isinstance(model, Qwen2MoeForCausalLM)
    config = model.config
    assert config.num_experts == 16
    assert config.num_experts_per_tok == 2
    assert config.shared_expert_intermediate_size > 0
    assert all(hasattr(layer.mlp, "shared_expert") for layer in model.model.layers)
    assert not model.training
    assert next(model.parameters()).dtype.is_floating_point
    tokenizer = moe_lm.tokenizer
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert len(tokenizer) <= config.vocab_size
    assert (WEIGHTS_DIR / "model.safetensors").stat().st_size <= 15 * 2**20
    assert not list(WEIGHTS_DIR.glob("*.bin"))  # safetensors only, no pickle


def test_eval_loss_is_below_the_unigram_baseline(moe_lm: LoadedModel, metrics: dict) -> None:
    texts, labels = load_bundled_dataset("domains")
    subset_texts: list[str] = []
    subset_domains: list[str] = []
    for domain in DOMAINS:
        chosen = [t for t, d in zip(texts, labels["domain"], strict=True) if d == domain][:4]
        subset_texts += chosen
        subset_domains += [domain] * len(chosen)
    losses = domain_losses(moe_lm.model, moe_lm.tokenizer, subset_texts, subset_domains)
    assert metrics["quality_bar"] is True
    for domain in DOMAINS:
        baseline = metrics["domains"][domain]["unigram_domain"]
        # clearly below: at least a full nat under the domain's own unigram model
        assert losses[domain]["loss"] < baseline - 1.0, (domain, losses[domain], baseline)
        assert metrics["domains"][domain]["loss"] < baseline - 1.0


def test_domains_dataset_has_five_labelled_domains() -> None:
    assert "domains" in bundled_dataset_names()
    texts, labels = load_bundled_dataset("domains")
    assert list(labels) == ["domain"]
    assert len(labels["domain"]) == len(texts)
    assert set(labels["domain"]) == set(DOMAINS)
    assert len(set(labels["domain"])) >= 5
    assert all(isinstance(t, str) and t.strip() for t in texts)
    with pytest.raises(KeyError):
        load_bundled_dataset("no-such-dataset")


def test_training_smoke_run_produces_a_loadable_folder(tmp_path: Path) -> None:
    out = tmp_path / "moe-lm"
    result = train(out, steps=3, smoke=True, progress=False, threads=1)
    assert result["steps"] == 3
    assert set(result["domains"]) == set(DOMAINS)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "domains.jsonl", "metrics.json"):
        assert (out / name).is_file(), name
    loaded = routescope.load_model(str(out))
    assert isinstance(loaded.model, Qwen2MoeForCausalLM)
    assert loaded.tokenizer is not None
    assert loaded.model.config.shared_expert_intermediate_size > 0


def test_recording_the_same_texts_twice_gives_identical_assignments(
    moe_lm: LoadedModel, tmp_path: Path
) -> None:
    texts, labels = load_bundled_dataset("domains")
    picks = [labels["domain"].index(d) for d in DOMAINS]
    sample = [texts[i][:200] for i in picks]
    domains = [labels["domain"][i] for i in picks]
    runs = [
        routescope.record(
            moe_lm,
            sample,
            store=tmp_path / "store",
            name=name,
            labels={"domain": domains},
            max_new_tokens=3,
            progress=False,
        )
        for name in ("first", "second")
    ]
    first, second = (run.assignments() for run in runs)
    assert len(first) > 0
    assert set(first["layer"]) == {0, 1, 2, 3}
    pd.testing.assert_frame_equal(first.reset_index(drop=True), second.reset_index(drop=True))
    samples = runs[0].samples()
    assert list(samples["domain"]) == domains
