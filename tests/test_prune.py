"""The prune probe (`probe_prune`, `routescope probe prune`): which experts a criterion disables; the loss.

Checked against computations that do not use RouteScope's capture: REAP from the weights of a tiny
Mixtral (router softmax, top-k, renormalised gates, SwiGLU experts by hand) with one frequent expert
planted to output almost nothing; the loss with never-routed experts disabled is the base loss bit for
bit (top-1 Mixtral: the renormalised gate is p / p = 1 whatever the other logits); the random criterion
is numpy's seeded draw; bad ratios are refused with exit 2 before anything is written.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from routescope.analysis import compute
from routescope.analysis.pruning import prune_curve
from routescope.cli import main
from routescope.hooks import LoadedModel
from routescope.models.tokenizers import byte_tokenizer
from routescope.probes import RecordOptions, probe_of, probe_prune, record_base
from routescope.probes.prune import expert_scores, pruned_count, pruned_experts
from routescope.store import InputError, Store
from tests.tiny_families import TEXTS, tiny_model

HOOKS = RecordOptions(engine="hooks")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _loaded(model: Any) -> LoadedModel:
    return LoadedModel(model=model, tokenizer=byte_tokenizer(), spec="tiny:mixtral")


def _reap_from_weights(model: Any, texts: list[str]) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Layer → REAP per expert (mean of gate × ‖f_e(x)‖ over routed tokens, 0 if never routed) and the
    routed counts, each text alone through the model, gates and expert outputs computed from the weights."""
    layers = model.model.layers
    inputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}

    def keep(layer: int) -> Any:
        def hook(_module: Any, args: tuple[Any, ...]) -> None:
            inputs[layer].append(args[0].detach().reshape(-1, args[0].shape[-1]))

        return hook

    handles = [layer.mlp.gate.register_forward_pre_hook(keep(i)) for i, layer in enumerate(layers)]
    with torch.no_grad():
        for text in texts:
            model(input_ids=torch.tensor([byte_tokenizer()(text)["input_ids"]]))
    for handle in handles:
        handle.remove()
    k = model.config.num_experts_per_tok
    reap, counts = {}, {}
    for i, layer in enumerate(layers):
        hidden = torch.cat(inputs[i])
        probs = torch.softmax(hidden @ layer.mlp.gate.weight.T, dim=-1)
        top, index = probs.topk(k, dim=-1)
        gates = (top / top.sum(dim=-1, keepdim=True)).detach()
        experts = layer.mlp.experts
        n = probs.shape[-1]
        total, count = np.zeros(n), np.zeros(n)
        for t in range(hidden.shape[0]):
            for r in range(k):
                e = int(index[t, r])
                gate, up = torch.nn.functional.linear(hidden[t], experts.gate_up_proj[e]).chunk(2)
                out = torch.nn.functional.linear(experts.act_fn(gate) * up, experts.down_proj[e]).detach()
                total[e] += float(gates[t, r]) * float(out.norm())
                count[e] += 1
        reap[i] = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        counts[i] = count
    return reap, counts


def test_reap_prunes_the_experts_the_formula_ranks_lowest_on_a_planted_model(store: Store) -> None:
    model = tiny_model("mixtral")
    _, counts = _reap_from_weights(model, TEXTS)
    planted = int(np.argmax(counts[0]))  # layer 0's most used expert now outputs almost nothing
    with torch.no_grad():
        model.model.layers[0].mlp.experts.down_proj[planted] *= 1e-3
    reap, counts = _reap_from_weights(model, TEXTS)
    study = probe_prune(
        _loaded(model),
        TEXTS,
        store=store,
        name="p",
        criteria=["reap", "frequency"],
        ratios=[0.25, 0.5],
        options=HOOKS,
    )
    for ratio in (0.25, 0.5):
        n = pruned_count(8, ratio)
        edits = probe_of(study.pruned[("reap", ratio)])["intervention"]["routers"]
        for layer in (0, 1):
            expected = sorted(int(e) for e in np.argsort(reap[layer], kind="stable")[:n])
            assert edits[f"model.layers.{layer}.mlp.gate"]["disable"] == expected
    reap_off = probe_of(study.pruned[("reap", 0.25)])["intervention"]["routers"]["model.layers.0.mlp.gate"]
    freq_off = probe_of(study.pruned[("frequency", 0.25)])["intervention"]["routers"][
        "model.layers.0.mlp.gate"
    ]
    assert planted in reap_off["disable"]
    assert planted not in freq_off["disable"]  # the planted expert is frequent: only REAP sees it is idle
    # the calibration run's saliency is the same formula
    table = compute("saliency", study.base).query("layer == 0").set_index("expert")
    np.testing.assert_allclose(table["reap"].fillna(0).to_numpy(), reap[0], rtol=1e-4, atol=1e-7)
    # the curve: base loss at ratio 0 for each criterion, the pruned runs' losses after
    curve = prune_curve(study.base, list(study.pruned.values()))
    assert curve["criterion"].tolist() == ["frequency"] * 3 + ["reap"] * 3
    assert curve["ratio"].tolist() == [0.0, 0.25, 0.5] * 2
    assert curve["experts_off"].tolist() == [0, 4, 8] * 2
    base = probe_of(study.base)["metrics"]["loss"]
    assert curve.loc[0, "loss"] == pytest.approx(sum(base["nll"]) / sum(base["tokens"]))
    run = study.pruned[("reap", 0.5)]
    loss = probe_of(run)["metrics"]["loss"]
    row = curve[(curve.criterion == "reap") & (curve.ratio == 0.5)].iloc[0]
    assert row["loss"] == pytest.approx(sum(loss["nll"]) / sum(loss["tokens"]))
    assert row["delta"] == pytest.approx(row["loss"] - curve.loc[0, "loss"])
    registered = compute("prune-curve", study.base)
    assert registered.equals(curve)


def test_pruning_experts_never_routed_leaves_the_loss_unchanged_exactly(store: Store) -> None:
    model = _loaded(tiny_model("mixtral", num_local_experts=16, num_experts_per_tok=1))
    texts = [TEXTS[0]]  # 7 tokens: at most 7 of 16 experts routed per layer, top-1
    base = record_base(model, texts, store=store, name="calib", options=RecordOptions(engine="hooks"))
    used = base.assignments().groupby("layer")["expert"].nunique()
    assert (used <= 8).all()
    study = probe_prune(
        model,
        texts,
        store=store,
        name="p",
        criteria=["frequency"],
        ratios=[0.5],
        calibration=base,
        options=HOOKS,
    )
    pruned = study.pruned[("frequency", 0.5)]
    routed = base.assignments()
    for path, edit in probe_of(pruned)["intervention"]["routers"].items():
        layer = next(r.layer for r in base.info.routers if r.path == path)
        assert len(edit["disable"]) == 8
        assert not set(edit["disable"]) & set(routed[routed.layer == layer].expert)
    assert probe_of(pruned)["metrics"]["loss"] == probe_of(study.base)["metrics"]["loss"]  # exactly
    assert pruned.read_table("assignments").equals(study.base.read_table("assignments"))
    assert probe_of(pruned)["params"]["calibration"] == "calib"


def test_the_random_criterion_is_numpys_seeded_draw(store: Store) -> None:
    model = tiny_model("mixtral")
    base = record_base(_loaded(model), TEXTS[:1], store=store, name="calib", options=HOOKS)
    for seed in (0, 7):
        rng = np.random.default_rng(seed)
        expected = {layer: rng.random(8) for layer in (0, 1)}
        scores = expert_scores(base, "random", seed)
        assert sorted(scores) == [0, 1]
        for layer in (0, 1):
            np.testing.assert_array_equal(scores[layer], expected[layer])
    routers = base.routers
    same = pruned_experts(expert_scores(base, "random", 3), routers, 0.5)
    assert same == pruned_experts(expert_scores(base, "random", 3), routers, 0.5)
    assert same != pruned_experts(expert_scores(base, "random", 4), routers, 0.5)


@pytest.mark.parametrize("ratio", ["0", "1", "1.5", "-0.25"])
def test_a_ratio_outside_zero_one_exits_2_with_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ratio: str
) -> None:
    store = tmp_path / "store"
    args = ["probe", "prune", "bundled:tiny-mixtral", "--store", str(store), "--name", "p", "--text", "Hi"]
    assert main([*args, "--ratio", "0.25", f"--ratio={ratio}"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("routescope: error: prune ratio")
    assert "(0, 1)" in error
    assert "--ratio" in error
    assert error.count("\n") == 1
    assert not store.exists() or Store(store).runs() == []


def test_bad_criteria_and_ratios_are_refused_before_recording(store: Store) -> None:
    model = _loaded(tiny_model("mixtral"))
    for kwargs, field in (
        ({"ratios": [1.0]}, "ratio"),
        ({"ratios": [0.01]}, "ratio"),  # disables none of 8
        ({"ratios": [0.9]}, None),  # fewer than top-k left
        ({"criteria": ["magnitude"]}, "criterion"),
    ):
        with pytest.raises(InputError) as caught:
            probe_prune(model, TEXTS, store=store, name="p", options=HOOKS, **kwargs)
        assert "\n" not in str(caught.value)
        if field:
            assert caught.value.field == field
    assert store.runs() == []


def test_cli_probe_prune_prints_the_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    args = [
        "probe",
        "prune",
        "bundled:tiny-mixtral",
        "--store",
        str(store),
        "--name",
        "p",
        "--engine",
        "hooks",
    ]
    texts = [x for t in TEXTS for x in ("--text", t)]
    code = main(
        [*args, *texts, "--criterion", "ean", "--criterion", "random", "--ratio", "0.25", "--format", "csv"]
    )
    assert code == 0
    runs = Store(store)
    assert sorted(runs.runs()) == ["p.base", "p.ean-0.25", "p.random-0.25"]
    printed = capsys.readouterr().out
    table = pd.read_csv(io.StringIO(printed[printed.index("criterion,") :]))
    curve = prune_curve(runs.open("p.base"), [runs.open("p.ean-0.25"), runs.open("p.random-0.25")])
    assert table["criterion"].tolist() == ["ean", "ean", "random", "random"]
    assert table["loss"].tolist() == pytest.approx(curve["loss"].tolist(), rel=1e-6)


def test_an_unknown_criterion_exits_2_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    args = ["probe", "prune", "bundled:tiny-mixtral", "--store", str(store), "--name", "p", "--text", "Hi"]
    assert main([*args, "--criterion", "magnitude", "--ratio", "0.25"]) == 2
    error = capsys.readouterr().err
    assert error == (
        "routescope: error: unknown prune criterion 'magnitude'; choose from reap, ean, frequency, random "
        "(pass --criterion)\n"
    )
    assert not store.exists() or Store(store).runs() == []
