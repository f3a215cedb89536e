"""`record(token_loss=True)`: `tokens.nll` and `tokens.predicted` equal a separate plain forward's
`cross_entropy(reduction="none")` and argmax, token by token, through padding and chunking; bad requests
are refused in one line and write nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import routescope
from routescope.models.tokenizers import byte_tokenizer
from routescope.store import InputError, Run, Store
from tests.tiny_families import tiny_model

TEXTS = ["Hi moe!", "Routers pick experts for every token", "Padding test"]


def _reference(model: Any, ids: list[int], next_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unpadded batch-1 forward: per position the cross-entropy against the next token (NaN on the last,
    unless `next_id` follows the piece) and the argmax."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    targets = torch.tensor([*ids[1:], next_id if next_id is not None else 0])
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none").numpy()
    if next_id is None:
        nll[-1] = np.nan
    return nll, logits.argmax(-1).numpy()


def _check(run: Run, sample: int, nll: np.ndarray, predicted: np.ndarray, start: int = 0) -> None:
    tokens = run.tokens().query("sample == @sample").sort_values("position")
    got = tokens.iloc[start : start + len(nll)]
    np.testing.assert_allclose(got["nll"].to_numpy(dtype=float), nll, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got["predicted"].to_numpy(), predicted)


def _tokenizer_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


@pytest.fixture(scope="module")
def moe_lm() -> Any:
    return routescope.load_model("bundled:moe-lm")


def test_moe_lm_loss_equals_a_plain_forward(moe_lm: Any, tmp_path: Any) -> None:
    run = routescope.record(
        moe_lm, TEXTS, store=Store(tmp_path), name="loss", batch_size=2, progress=False, token_loss=True
    )
    assert run.info.token_loss
    assert run.info.options["token_loss"] is True
    assert "token_loss" in run.info.capabilities  # the manifest says so, not only the options
    assert not run.info.expert_stats
    for sample, text in enumerate(TEXTS):
        ids = _tokenizer_ids(moe_lm.tokenizer, text)
        nll, predicted = _reference(moe_lm.model, ids)
        _check(run, sample, nll, predicted)
    tokens = run.tokens()
    last = tokens.groupby("sample")["position"].transform("max") == tokens["position"]
    assert tokens.loc[last, "nll"].isna().all()
    assert tokens.loc[~last, "nll"].notna().all()
    assert tokens["predicted"].notna().all()


def test_chunks_score_their_last_token_against_the_next_chunk(moe_lm: Any, tmp_path: Any) -> None:
    text = TEXTS[1]
    ids = _tokenizer_ids(moe_lm.tokenizer, text)
    chunk = 5
    run = routescope.record(
        moe_lm,
        [text],
        store=Store(tmp_path),
        name="chunks",
        chunk_size=chunk,
        progress=False,
        token_loss=True,
    )
    for start in range(0, len(ids), chunk):
        piece = ids[start : start + chunk]
        following = ids[start + chunk] if start + chunk < len(ids) else None
        nll, predicted = _reference(moe_lm.model, piece, following)
        _check(run, 0, nll, predicted, start=start)


@pytest.mark.parametrize("engine", ["nnsight", "hooks"])
def test_tiny_family_loss_equals_a_plain_forward(engine: str, tmp_path: Any) -> None:
    model = tiny_model("qwen3_moe")
    tokenizer = byte_tokenizer()
    run = routescope.record(
        model,
        TEXTS,
        tokenizer=tokenizer,
        store=Store(tmp_path),
        name="qwen3",
        batch_size=3,
        progress=False,
        engine=engine,
        token_loss=True,
    )
    for sample, text in enumerate(TEXTS):
        nll, predicted = _reference(model, _tokenizer_ids(tokenizer, text))
        _check(run, sample, nll, predicted)


def test_runs_without_token_loss_have_no_columns(tiny_lm: Any, store: Store) -> None:
    run = routescope.record(tiny_lm, TEXTS[:1], store=store, name="plain", progress=False)
    assert not run.info.token_loss
    assert "nll" not in run.tokens().columns
    assert "output_norm" not in run.assignments().columns


def test_encoder_decoder_scores_decoder_targets(tmp_path: Any) -> None:
    model = tiny_model("switch_transformers")
    tokenizer = byte_tokenizer()
    target = [5, 9, 7, 3]
    run = routescope.record(
        model,
        ["Hi moe!"],
        targets=[target],
        tokenizer=tokenizer,
        store=Store(tmp_path),
        name="switch",
        progress=False,
        token_loss=True,
    )
    decoder_ids = [model.config.decoder_start_token_id, *target]
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor([_tokenizer_ids(tokenizer, "Hi moe!")]),
            decoder_input_ids=torch.tensor([decoder_ids]),
        ).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(decoder_ids[1:]), reduction="none")
    tokens = run.tokens()
    decoder = tokens.query("stack == 'decoder'").sort_values("position")
    np.testing.assert_allclose(decoder["nll"].to_numpy(dtype=float)[:-1], expected.numpy(), atol=1e-5)
    assert np.isnan(decoder["nll"].to_numpy(dtype=float)[-1])
    assert tokens.query("stack == 'encoder'")["nll"].isna().all()


def test_generation_with_token_loss_is_refused(tiny_lm: Any, store: Store) -> None:
    with pytest.raises(InputError, match="forward recordings") as caught:
        routescope.record(
            tiny_lm, ["hello"], store=store, name="gen", max_new_tokens=2, progress=False, token_loss=True
        )
    assert caught.value.field == "token_loss"
    assert not store.exists("gen")


def test_a_model_without_lm_head_is_refused(store: Store) -> None:
    base = tiny_model("mixtral").model  # MixtralModel: hidden states, no logits
    with pytest.raises(InputError, match="LM head") as caught:
        routescope.record(
            base, [[5, 6, 7]], store=store, name="base", progress=False, token_loss=True, engine="hooks"
        )
    assert caught.value.field == "token_loss"
    assert not store.exists("base")


def test_cli_flags_record_loss_and_expert_stats(tmp_path: Any) -> None:
    from routescope.cli import main

    argv = [
        "record",
        "bundled:tiny-mixtral",
        "--store",
        str(tmp_path),
        "--name",
        "flags",
        "--text",
        "hi there",
    ]
    assert main([*argv, "--token-loss", "--expert-stats"]) == 0
    run = Store(tmp_path).open("flags")
    assert run.info.token_loss
    assert run.info.expert_stats
    assert run.tokens()["nll"].notna().sum() == len(run.tokens()) - 1
    assert run.assignments()["output_norm"].notna().all()


@pytest.mark.parametrize("option", ["token_loss", "expert_stats"])
def test_remote_recording_refuses_local_statistics(tiny_lm: Any, store: Store, option: str) -> None:
    with pytest.raises(InputError, match="not in a remote trace") as caught:
        routescope.record(
            tiny_lm, ["hello"], store=store, name="r", remote="local", progress=False, **{option: True}
        )
    assert caught.value.field == option
    assert not store.exists("r")
