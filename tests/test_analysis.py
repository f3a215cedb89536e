"""Analyses on runs with planted routing: known loads, experts that take exactly one domain, tied router
scores — values checked against hand computation and scikit-learn, not only shapes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

import routescope
from routescope.analysis import (
    agreement,
    balance,
    coactivation,
    expert_load,
    expert_similarity,
    label_nmi,
    merge_groups,
    repeat_rate,
    sensitivity,
    specialization,
    top_tokens,
    transitions,
    uncertainty,
    vocabulary_specialization,
)
from routescope.hooks import LoadedModel
from routescope.store import InputError, Store
from tests.planted import planted_run

# layer 0: 8 top-1 decisions, experts 0 ×6, 1 ×2 (2 and 3 dead); layer 1: each expert twice
SKEWED = {0: [[0]] * 6 + [[1]] * 2, 1: [[0], [1], [2], [3]] * 2}


def test_load_and_balance_known_answers(store: Store) -> None:
    run = planted_run(store, "skew", experts=SKEWED)
    load = expert_load(run)
    assert load.query("layer == 0")["count"].tolist() == [6, 2, 0, 0]
    assert load.query("layer == 0")["load"].tolist() == [0.75, 0.25, 0.0, 0.0]
    b = balance(run).set_index("layer")
    assert b.loc[0, "max_over_mean"] == pytest.approx(3.0)
    assert b.loc[0, "cv"] == pytest.approx(np.sqrt(6) / 2)
    assert b.loc[0, "norm_entropy"] == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) / np.log(4))
    assert b.loc[0, "gini"] == pytest.approx(0.625)
    assert b.loc[0, "dead_experts"] == 2
    assert b.loc[1, ["max_over_mean", "norm_entropy"]].tolist() == pytest.approx([1.0, 1.0])
    assert b.loc[1, ["cv", "gini", "dead_experts"]].tolist() == pytest.approx([0.0, 0.0, 0])
    assert "aux_loss" not in b.columns


def test_aux_loss_needs_and_uses_probabilities(store: Store) -> None:
    uniform = {layer: np.full((8, 4), 0.25) for layer in SKEWED}
    run = planted_run(store, "aux", experts=SKEWED, probs=uniform)
    b = balance(run).set_index("layer")
    assert b["aux_loss"].tolist() == pytest.approx([1.0, 1.0])  # uniform probabilities: E · Σ f · 1/E
    peaked = {0: np.tile([0.7, 0.1, 0.1, 0.1], (8, 1)), 1: np.full((8, 4), 0.25)}
    b = balance(planted_run(store, "aux2", experts=SKEWED, probs=peaked)).set_index("layer")
    assert b.loc[0, "aux_loss"] == pytest.approx(4 * (0.75 * 0.7 + 0.25 * 0.1))


def test_expert_that_takes_exactly_one_domain(store: Store) -> None:
    domains = ["a"] * 4 + ["b"] * 4
    run = planted_run(store, "dom", experts={0: [[0]] * 4 + [[1]] * 4}, labels={"domain": domains})
    table = specialization(run, "domain").set_index(["expert", "domain"])
    assert table.loc[(0, "a"), "share"] == 1.0
    assert table.loc[(1, "b"), "share"] == 1.0
    assert table.loc[(0, "a"), "lift"] == pytest.approx(2.0)  # P(a | e0) = 1 against base rate 1/2
    assert table.loc[(0, "a"), "uniform_lift"] == pytest.approx(4.0)  # share 1 against 1/E
    nmi = label_nmi(run, "domain").iloc[0]
    assert nmi["nmi"] == pytest.approx(1.0)
    assert nmi["chi2"] == pytest.approx(8.0)  # [[4, 0], [0, 4]]: Σ (O − E)² / E with E = 2 everywhere
    assert nmi["dof"] == 1


def test_nmi_matches_scikit_learn(store: Store) -> None:
    rng = np.random.default_rng(0)
    domains = rng.choice(["x", "y", "z"], size=60).tolist()
    chosen = [[int(rng.integers(0, 4)) if d != "x" else 0] for d in domains]
    run = planted_run(store, "nmi", experts={3: chosen}, labels={"domain": domains})
    expected = normalized_mutual_info_score(domains, [c[0] for c in chosen])
    assert label_nmi(run, "domain")["nmi"].iloc[0] == pytest.approx(expected)
    with pytest.raises(InputError, match="no label 'topic'"):
        specialization(run, "topic")
    with pytest.raises(InputError, match="cannot group by"):
        balance(run, by=("domain",))


def test_tied_router_scores_are_uncertain(store: Store) -> None:
    probs = {0: np.full((8, 4), 0.25), 1: np.tile([0.97, 0.01, 0.01, 0.01], (8, 1))}
    run = planted_run(store, "tied", experts=SKEWED, probs=probs)
    u = uncertainty(run).set_index("layer")
    assert u.loc[0, "mean_norm_entropy"] == pytest.approx(1.0)
    assert u.loc[0, "uncertain_share"] == 1.0
    assert u.loc[0, "mean_margin"] == pytest.approx(0.0)
    assert u.loc[1, "uncertain_share"] == 0.0
    assert u.loc[1, "mean_margin"] == pytest.approx(0.96, abs=1e-6)


def test_report_cli_formats(store: Store) -> None:
    planted_run(store, "cli", experts=SKEWED)
    base = [sys.executable, "-m", "routescope", "report", "--store", str(store.path), "--run", "cli"]
    done = subprocess.run(
        [*base, "--kind", "balance", "--format", "json"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert [r["dead_experts"] for r in records] == [2, 0]
    latex = subprocess.run(
        [*base, "--kind", "load", "--layer", "0", "--format", "latex"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert "\\toprule" in latex
    assert latex.count("\\\\") == 5
    bad = subprocess.run([*base, "--kind", "nmi"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "nmi needs a label, e.g. token_id (pass --by)" in bad.stderr


PAIRS = {0: [[0, 1]] * 3 + [[0, 2]] + [[2, 3]] * 4}


def test_coactivation_counts_all_pairs_with_lift(store: Store) -> None:
    run = planted_run(store, "co", experts=PAIRS)
    table = coactivation(run, 0).set_index(["expert_a", "expert_b"])
    assert table.loc[(0, 1), "count"] == 3
    assert table.loc[(1, 0), "count"] == 3
    assert table.loc[(0, 1), "p_b_given_a"] == pytest.approx(3 / 4)
    assert table.loc[(1, 0), "p_b_given_a"] == pytest.approx(1.0)
    assert table.loc[(0, 1), "lift"] == pytest.approx((3 / 8) / ((4 / 8) * (3 / 8)))
    assert (1, 2) not in table.index
    # more than 64 experts takes the self-join path: same answer
    wide = coactivation(planted_run(store, "co-wide", experts=PAIRS, n_experts=70), 0)
    assert wide.set_index(["expert_a", "expert_b"])["count"].to_dict() == table["count"].to_dict()
    with pytest.raises(InputError, match="no router at layer 5"):
        coactivation(run, 5)


def test_vocabulary_specialization_on_top1(store: Store) -> None:
    run = planted_run(store, "vocab", experts=SKEWED)  # token id = sample % 3
    v = vocabulary_specialization(run).set_index(["layer", "token_id"])
    assert v.loc[(0, 0), ["count", "top_expert"]].tolist() == [3, 0]
    assert v.loc[(0, 0), "share"] == pytest.approx(2 / 3)
    assert v.loc[(0, 2), "share"] == pytest.approx(1.0)
    assert v.loc[(1, 0), "share"] == pytest.approx(1 / 3)
    assert vocabulary_specialization(run, "next").empty  # one-token samples have no next token


def test_repeat_rate_and_transitions_match_pandas(tiny_lm: LoadedModel, store: Store) -> None:
    run = routescope.record(
        tiny_lm, ["the cat sat on the mat", "def f(x): return x"], store=store, name="seq", progress=False
    )
    top = run.assignments().query("rank == 0")[["sample", "position", "layer", "expert"]]
    nxt = top.assign(position=top["position"] - 1)
    pairs = top.merge(nxt, on=["sample", "position", "layer"], suffixes=("", "_next"))
    expected = pairs.assign(same=pairs["expert"] == pairs["expert_next"]).groupby("layer")["same"].mean()
    chosen = run.assignments().groupby(["sample", "position", "layer"])["expert"].apply(set).rename("set")
    pairs = pairs.merge(
        chosen.reset_index().assign(position=lambda f: f["position"] - 1), on=["sample", "position", "layer"]
    )
    in_topk = pairs.apply(lambda row: row["expert"] in row["set"], axis=1).groupby(pairs["layer"]).mean()
    rates = repeat_rate(run).set_index("layer")
    np.testing.assert_allclose(rates["top1_repeat"], expected.to_numpy())
    np.testing.assert_allclose(rates["top1_in_topk"], in_topk.to_numpy())
    assert rates["uniform_top1"].tolist() == [1 / 8] * 4
    ends = pairs.groupby("layer").apply(lambda f: np.concatenate([f["expert"], f["expert_next"]]))
    loads = [np.bincount(e, minlength=8) / len(e) for e in ends]
    np.testing.assert_allclose(rates["baseline_top1"], [np.sum(p * p) for p in loads])  # Σ p² (observed)
    assert rates["pairs"].tolist() == [len(pairs) // 4] * 4

    wide = top.pivot_table(index=["sample", "position"], columns="layer", values="expert")
    expected_counts = wide.groupby([0, 1]).size()
    t = transitions(run).query("layer == 0").set_index(["expert", "next_expert"])["count"]
    assert t.to_dict() == {(int(a), int(b)): int(n) for (a, b), n in expected_counts.items()}
    assert transitions(run).groupby(["layer", "expert"])["share"].sum().to_numpy() == pytest.approx(1.0)


def test_agreement_between_two_runs(store: Store) -> None:
    a = planted_run(store, "ag-a", experts={0: [[0, 1]] * 4})
    b = planted_run(store, "ag-b", experts={0: [[0, 2]] * 2 + [[1, 0]] * 2})
    table = agreement(a, b).iloc[0]
    assert table["decisions"] == 4
    assert table["top1_agreement"] == pytest.approx(0.5)
    assert table["topk_overlap"] == pytest.approx(0.75)
    assert agreement(a, a)["top1_agreement"].tolist() == [1.0]


def test_sensitivity_puts_labels_side_by_side(store: Store) -> None:
    run = planted_run(
        store,
        "sens",
        experts={0: [[0]] * 4 + [[1]] * 4},
        labels={"domain": ["a"] * 4 + ["b"] * 4, "class": ["x", "y"] * 4},
    )
    table = sensitivity(run).set_index("label")["nmi"]
    assert table["domain"] == pytest.approx(1.0)
    assert table["class"] == pytest.approx(0.0)


def test_expert_similarity_and_merge_groups(store: Store) -> None:
    rng = np.random.default_rng(1)
    pair_scores = rng.random((8, 2))
    probs = np.repeat(pair_scores, 2, axis=1)  # experts 0 = 1 and 2 = 3, column by column
    probs /= probs.sum(axis=1, keepdims=True)
    experts = {0: [[0]] * 5 + [[3]] * 3}
    run = planted_run(store, "sim", experts=experts, probs={0: probs})
    sim = expert_similarity(run, 0, basis="probs").set_index(["expert_a", "expert_b"])["similarity"]
    assert sim[(0, 1)] == pytest.approx(1.0)
    assert sim[(2, 3)] == pytest.approx(1.0)
    first, third = probs.astype(np.float32).astype(np.float64)[:, [0, 2]].T  # as stored (float32)
    cos = first @ third / (np.linalg.norm(first) * np.linalg.norm(third))
    assert sim[(0, 2)] == pytest.approx((cos + 1) / 2, rel=1e-6)
    groups = merge_groups(run, 0, 2, basis="probs")
    assert (
        groups.loc[0, "group"] == groups.loc[1, "group"] != groups.loc[2, "group"] == groups.loc[3, "group"]
    )
    assert groups["usage"].tolist() == pytest.approx([5 / 8, 0, 0, 3 / 8])
    assert groups.query("keep")["expert"].tolist() == [0, 3]
    with pytest.raises(InputError, match="without probabilities"):
        expert_similarity(planted_run(store, "noprobs", experts=experts), 0)


def test_top_tokens_with_example_context(store: Store, tiny_lm: LoadedModel) -> None:
    run = planted_run(store, "top", experts=SKEWED)  # token id = sample % 3; expert 0 takes samples 0..5
    table = top_tokens(run, layer=0, expert=0)
    assert table["token_id"].tolist() == [0, 1, 2]
    assert table["count"].tolist() == [2, 2, 2]
    assert table["share"].tolist() == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert table["example"].tolist() == ["[[0]]", "[[1]]", "[[2]]"]
    text = routescope.record(tiny_lm, ["abcdefgh"], store=store, name="ctx", progress=False)
    first = top_tokens(text, layer=0, expert=int(text.assignments()["expert"].iloc[0]), context=2)
    row = first[first["token"] == "a"].iloc[0] if "a" in set(first["token"]) else first.iloc[0]
    assert "[[" + row["token"] + "]]" in row["example"]
    assert len(row["example"].replace("[[", "").replace("]]", "")) <= 5
