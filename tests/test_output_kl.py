"""Per-token output KL (issue 17 item 5): `record(output_logprobs=True)` keeps each token's next-token
distribution, and `output-kl` compares two runs — against torch's KL from the two models' own logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import routescope
from routescope.analysis import compute, token_kl
from routescope.cli import main
from routescope.models.tokenizers import byte_tokenizer
from routescope.store import InputError, Run, Store
from tests.tiny_families import tiny_model

TEXTS = ["the cat sat on the mat", "x = 1 + 2", "a longer sentence, padded shorter ones beside it", "ok"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, torch.nn.Module], list[Run]]:
    torch.set_num_threads(1)
    store = Store(tmp_path_factory.mktemp("kl") / "store")
    tokenizer = byte_tokenizer()
    models = {"a": tiny_model("qwen2_moe", seed=0), "b": tiny_model("qwen2_moe", seed=1)}
    runs = [
        routescope.record(
            model,
            TEXTS,
            tokenizer=tokenizer,
            store=store,
            name=name,
            output_logprobs=True,
            batch_size=3,
            progress=False,
        )
        for name, model in models.items()
    ]
    return store, models, runs


def torch_kl(models: dict[str, torch.nn.Module], run: Run) -> pd.DataFrame:
    """Per token, F.kl_div of the two models' log-softmax on each sample's own ids (one sequence at a time,
    no padding)."""
    tokens = run.tokens(["sample", "position", "token_id"]).sort_values(["sample", "position"])
    rows = []
    for sample, part in tokens.groupby("sample"):
        ids = torch.tensor([part["token_id"].tolist()])
        with torch.no_grad():
            lp_a = torch.log_softmax(models["a"](input_ids=ids).logits[0].double(), -1)
            lp_b = torch.log_softmax(models["b"](input_ids=ids).logits[0].double(), -1)
        kl = F.kl_div(lp_b, lp_a, log_target=True, reduction="none").sum(-1)
        rows += [(sample, p, float(v)) for p, v in zip(part["position"], kl, strict=True)]
    return pd.DataFrame(rows, columns=["sample", "position", "kl"])


def test_stored_logprobs_are_the_models_log_softmax(pair: tuple) -> None:
    _, models, (run_a, _) = pair
    assert "output_logprobs" in run_a.info.caps
    keys, logprobs = run_a.output_logprobs()
    assert len(keys) == len(run_a.tokens())
    assert logprobs.shape[1] == models["a"].config.vocab_size
    first = keys[keys["sample"] == 0].sort_values("position")
    ids = torch.tensor([run_a.tokens().query("sample == 0").sort_values("position")["token_id"].tolist()])
    with torch.no_grad():
        expected = torch.log_softmax(models["a"](input_ids=ids).logits[0], -1).numpy()
    stored = logprobs[first.index.to_numpy()]
    assert stored == pytest.approx(expected, abs=float(np.abs(expected).max()) * 2**-10)  # float16 rounding


def test_token_kl_equals_torch_kl_from_the_models_logits(pair: tuple) -> None:
    _, models, (run_a, run_b) = pair
    ours = token_kl(run_a, run_b)
    theirs = torch_kl(models, run_a)
    both = ours.merge(theirs, on=["sample", "position"], suffixes=("", "_torch"))
    assert len(both) == len(theirs) == len(run_a.tokens())
    assert both["kl"].to_numpy() == pytest.approx(both["kl_torch"].to_numpy(), rel=2e-2, abs=2e-3)
    assert (both["kl_torch"] > 0).all()  # two different models: every token differs somewhat
    # per sample and overall, with a bootstrap interval over sequences around the estimate
    samples = compute("output-kl-samples", run_a, other=run_b).set_index("sample")
    expected = theirs.groupby("sample")["kl"].mean()
    assert samples["mean_kl"].to_numpy() == pytest.approx(expected.loc[samples.index].to_numpy(), rel=2e-2)
    summary = compute("output-kl", run_a, other=run_b, n_boot=200).iloc[0]
    assert summary["tokens"] == len(theirs)
    assert summary["sequences"] == len(TEXTS)
    assert summary["mean_kl"] == pytest.approx(theirs["kl"].mean(), rel=2e-2)
    assert summary["ci_low"] <= summary["mean_kl"] <= summary["ci_high"]
    assert summary["ci_low"] >= theirs.groupby("sample")["kl"].mean().min() - 1e-9
    # a run against itself: KL 0 everywhere
    assert token_kl(run_a, run_a)["kl"].abs().max() < 1e-9


def test_output_kl_refuses_runs_without_logprobs_and_recordings_that_cannot_give_them(
    pair: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, models, (run_a, _) = pair
    tokenizer = byte_tokenizer()
    plain = routescope.record(models["a"], TEXTS[:1], tokenizer=tokenizer, store=store, name="plain",
                              progress=False)  # fmt: skip
    with pytest.raises(InputError, match="output logprobs") as info:
        compute("output-kl", run_a, other=plain)
    assert info.value.field == "output_logprobs"
    argv = ["report", "--store", str(store.path), "--run", "a", "--kind", "output-kl", "--compare", "plain"]
    assert main(argv) == 2
    assert "--output-logprobs" in capsys.readouterr().err
    with pytest.raises(InputError, match="max_new_tokens"):
        routescope.record(models["a"], TEXTS[:1], tokenizer=tokenizer, store=tmp_path, name="gen",
                          max_new_tokens=2, output_logprobs=True, progress=False)  # fmt: skip
    big = tiny_model("qwen2_moe", vocab_size=70_000)
    with pytest.raises(InputError, match="70,000"):
        routescope.record(big, TEXTS[:1], tokenizer=tokenizer, store=tmp_path, name="big",
                          output_logprobs=True, progress=False)  # fmt: skip
    assert not Store(tmp_path).exists("big")
