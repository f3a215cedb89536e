"""Counterfactual routes (`routescope probe reroute`): the swap, the sampler, the tables and the CLI.

The loss changes are checked against forwards written here: the router's output replaced by a test hook
with the weights the family's formula gives (Mixtral renormalises the top-k softmax probabilities;
Qwen2-MoE with `norm_topk_prob=False` keeps them raw), never against the probe's own code. The sampler is
checked against the Plackett–Luce inclusion probabilities enumerated exactly.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformers import MixtralConfig, MixtralForCausalLM

from routescope.analysis.registry import compute
from routescope.analysis.reroute import reroute_routes, reroute_share, reroute_tokens
from routescope.cli import main
from routescope.hooks import LoadedModel
from routescope.hooks.reroute import swap_routes
from routescope.models.tokenizers import byte_tokenizer
from routescope.probes import RecordOptions, describe, probe_of, probe_reroute
from routescope.probes.gumbel import gumbel_top_k
from routescope.probes.reroute import measure_reroutes
from routescope.store import InputError, Store
from tests.tiny_families import tiny_model

TEXTS = ["def f(x):\n    return x + 1", "The cat sat on the mat.", "2 + 3 = 5, 7 * 6 = 42"]


def _mixtral() -> LoadedModel:
    config = MixtralConfig(
        vocab_size=264,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    torch.manual_seed(7)
    return LoadedModel(model=MixtralForCausalLM(config).eval(), tokenizer=byte_tokenizer())


def _qwen() -> LoadedModel:
    return LoadedModel(model=tiny_model("qwen2_moe", norm_topk_prob=False), tokenizer=byte_tokenizer())


@pytest.fixture(scope="module")
def mixtral() -> LoadedModel:
    return _mixtral()


def _ids(model: LoadedModel, text: str) -> torch.Tensor:
    return torch.tensor([model.tokenizer(text)["input_ids"]], dtype=torch.long)


@torch.no_grad()
def _manual_nll(
    model: LoadedModel, ids: torch.Tensor, gate: str, position: int, experts: list[int], renorm: bool
):
    """[n-1] next-token NLL with the router output at `position` replaced by hand (None: unedited)."""
    module = dict(model.model.named_modules())[gate]

    def replace(_m, _a, output):
        logits, weights, indices = output
        probs = torch.softmax(logits.float(), dim=-1)[position]
        chosen = probs[experts]
        weights, indices = weights.clone(), indices.clone()
        weights[position] = (chosen / chosen.sum() if renorm else chosen).to(weights.dtype)
        indices[position] = torch.tensor(experts)
        return logits, weights, indices

    handle = module.register_forward_hook(replace) if experts else None
    try:
        logits = model.model(input_ids=ids).logits
    finally:
        if handle is not None:
            handle.remove()
    return F.cross_entropy(logits[0, :-1].double(), ids[0, 1:], reduction="none")


@pytest.mark.parametrize(("build", "renorm"), [(_mixtral, True), (_qwen, False)])
def test_rerouted_loss_matches_a_manual_forward(build, renorm: bool) -> None:
    model = build()
    routers = describe(model, TEXTS)
    measured = measure_reroutes(model, TEXTS[:1], routers, alternatives=3, tokens=6, seed=3)
    assert set(measured["rules"].values()) == {"renormalised" if renorm else "probabilities"}
    rows = pd.DataFrame({k: v for k, v in measured.items() if k != "rules"})
    changed = rows[~rows["same"]]
    assert len(changed) >= 3
    ids = _ids(model, TEXTS[0])
    base = _manual_nll(model, ids, routers[0]["path"], 0, [], renorm)
    path_of = {int(r["id"]): r["path"] for r in routers}
    for row in changed.head(4).itertuples():
        nll = _manual_nll(model, ids, path_of[row.router], row.position, list(row.experts), renorm)
        delta = (nll - base).numpy()
        assert row.delta_next == pytest.approx(delta[row.position], abs=2e-5)
        assert row.delta_rest == pytest.approx(delta[row.position :].sum(), abs=1e-4)
        assert row.base_next == pytest.approx(float(base[row.position]), abs=2e-5)
        assert abs(row.delta_next) > 1e-5  # a real change, not a no-op


def test_own_route_changes_nothing(mixtral: LoadedModel) -> None:
    routers = describe(mixtral, TEXTS)
    ids = _ids(mixtral, TEXTS[1])
    with torch.no_grad():
        plain = mixtral.model(input_ids=ids).logits
    # the swap itself: every row replaced by the router's own set (its own order) is the same forward
    with swap_routes(mixtral.model, routers) as swap, torch.no_grad():
        mixtral.model(input_ids=ids)
        own = {r["path"]: swap.seen(r["path"])[1] for r in routers}
        swap.set(
            {path: {row: chosen[row].tolist() for row in range(len(chosen))} for path, chosen in own.items()}
        )
        swapped = mixtral.model(input_ids=ids).logits
    assert torch.equal(plain, swapped)
    # the probe: alternatives equal to the router's own set have loss change exactly 0
    measured = measure_reroutes(mixtral, TEXTS, routers, alternatives=6, tokens=30, seed=0)
    rows = pd.DataFrame({k: v for k, v in measured.items() if k != "rules"})
    same = rows[rows["same"]]
    assert len(same) > 0
    assert (same["delta_next"] == 0).all()
    assert (same["delta_rest"] == 0).all()
    assert (rows["experts"].map(len) == 2).all()  # equal compute: k experts every time
    assert all(len(set(e)) == 2 for e in rows["experts"])


def _plackett_luce_inclusion(p: np.ndarray, k: int) -> np.ndarray:
    inclusion = np.zeros_like(p)
    for order in itertools.permutations(range(len(p)), k):
        chance, left = 1.0, 1.0
        for item in order:
            chance *= p[item] / left
            left -= p[item]
        inclusion[list(order)] += chance
    return inclusion


def test_gumbel_top_k_matches_plackett_luce() -> None:
    p = np.array([0.45, 0.25, 0.15, 0.1, 0.05])
    n = 40_000
    draws = gumbel_top_k(np.log(p), 2, n, np.random.default_rng(11))
    assert draws.shape == (n, 2)
    assert (draws[:, 0] != draws[:, 1]).all()
    frequency = np.bincount(draws.ravel(), minlength=len(p)) / n
    expected = _plackett_luce_inclusion(p, 2)
    assert expected.sum() == pytest.approx(2.0)
    sd = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(frequency - expected) < 5 * sd)
    first = np.bincount(draws[:, 0], minlength=len(p)) / n  # the first draw is a plain categorical
    assert np.all(np.abs(first - p) < 5 * np.sqrt(p * (1 - p) / n))
    again = gumbel_top_k(np.log(p), 2, n, np.random.default_rng(11))
    assert np.array_equal(draws, again)
    assert not np.array_equal(draws, gumbel_top_k(np.log(p), 2, n, np.random.default_rng(12)))


def test_probe_run_and_tables(mixtral: LoadedModel, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    run = probe_reroute(mixtral, TEXTS, store=store, name="rr", alternatives=4, tokens=40, seed=5)
    again = measure_reroutes(mixtral, TEXTS, describe(mixtral, TEXTS), alternatives=4, tokens=40, seed=5)
    entry = probe_of(run)
    assert entry is not None
    assert entry["probe"] == "reroute"
    assert entry["params"]["alternatives"] == 4
    assert entry["metrics"]["reroute"]["delta_next"] == again["delta_next"]  # the seed reproduces
    routes = reroute_routes(run)
    assert len(routes) == 40 * 4
    decisions = run.decisions()
    keyed = decisions.set_index(["sample", "position", "router"])
    for row in routes.head(8).itertuples():
        assert row.margin == pytest.approx(float(keyed.loc[(row.sample, row.position, row.router), "margin"]))
    tokens = reroute_tokens(run)
    assert len(tokens) == 40
    for key, group in routes.groupby(["sample", "position", "router"]):
        other = group[~group["same"]]["delta_next"]
        found = tokens.set_index(["sample", "position", "router"]).loc[key]
        assert bool(found["better"]) == bool((other < -1e-5).any())
    share = reroute_share(run, by="margin", bins=4, n_boot=200)
    overall = share[share["bin"] == "(all)"].iloc[0]
    assert overall["share"] == pytest.approx(tokens["better"].mean())
    assert overall["ci_low"] <= overall["share"] <= overall["ci_high"]
    assert share[share["bin"] != "(all)"]["decisions"].sum() == 40
    assert set(share["unit"]) == {"sequence"}
    by_entropy = compute("reroute-share", run, by="entropy", bins=2)
    assert by_entropy[by_entropy["bin"] != "(all)"]["better"].sum() == tokens["better"].sum()


def test_bad_counts_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    common = [
        "probe",
        "reroute",
        "bundled:tiny-mixtral",
        "--store",
        str(store),
        "--name",
        "r",
        "--text",
        "a b c",
    ]
    for bad in (["--alternatives", "0"], ["--alternatives", "-3"], ["--tokens", "0"]):
        assert main([*common, *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert "must be ≥ 1" in err[0]
    assert not store.exists()
    with pytest.raises(InputError) as caught:
        probe_reroute(_mixtral(), TEXTS, store=store, name="r", alternatives=0, options=RecordOptions())
    assert caught.value.field == "alternatives"
    assert not store.exists()
