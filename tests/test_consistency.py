"""Known answers for the run-consistency kinds (`analysis/consistency.py`) on planted runs: identical
scores give τ = 1, reversed scores τ = −1, Kendall's τ matches scipy, and planted small-margin decisions
that flip against large-margin ones that hold give a flip share falling across margin bins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from routescope.analysis import compute
from routescope.analysis.consistency import kendall_tau
from routescope.cli import main
from routescope.store import InputError, Run, Store
from tests.planted import planted_run

K = 2


def _top_k(probs: np.ndarray) -> list[list[int]]:
    return np.argsort(-probs, axis=1, kind="stable")[:, :K].tolist()


def _pair(store: Store, probs_a: np.ndarray, probs_b: np.ndarray) -> tuple[Run, Run]:
    """Two runs of two layers whose experts are the top-k of their own probabilities."""
    runs = []
    for name, probs in (("a", probs_a), ("b", probs_b)):
        experts = {0: _top_k(probs), 1: _top_k(probs)}
        runs.append(planted_run(store, name, experts=experts, probs={0: probs, 1: probs}))
    return runs[0], runs[1]


def _random_probs(n: int, experts: int = 6, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).dirichlet(np.ones(experts), size=n)
    return p.astype(np.float32)


def test_identical_scores_give_tau_one_and_identical_sets(store: Store) -> None:
    probs = _random_probs(30)
    a, b = _pair(store, probs, probs.copy())
    table = compute("rank-consistency", a, other=b)
    assert table["layer"].tolist() == [0, 1]
    assert table["decisions"].tolist() == [30, 30]
    assert table["mean_tau"].to_numpy() == pytest.approx(1.0)
    assert table["share_same_set"].tolist() == [1.0, 1.0]


def test_reversed_scores_give_tau_minus_one(store: Store) -> None:
    probs = _random_probs(30, seed=1)
    reversed_ = (probs.max(axis=1, keepdims=True) + 0.1 - probs).astype(np.float32)
    reversed_ /= reversed_.sum(axis=1, keepdims=True)
    a, b = _pair(store, probs, reversed_)
    table = compute("rank-consistency", a, other=b)
    assert table["mean_tau"].to_numpy() == pytest.approx(-1.0)
    assert table["min_tau"].to_numpy() == pytest.approx(-1.0)
    assert table["share_same_set"].tolist() == [0.0, 0.0]  # the top-2 became the bottom-2


def test_kendall_tau_matches_scipy_with_and_without_ties() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.random((8, 7)), rng.random((8, 7))
    x[0, :3] = 0.5  # ties in x
    y[1, 2:5] = 0.25  # ties in y
    y[2] = x[2]
    ours = kendall_tau(x, y)
    for i in range(len(x)):
        assert ours[i] == pytest.approx(kendalltau(x[i], y[i]).statistic, abs=1e-12)
    assert np.isnan(kendall_tau(np.ones((1, 4)), y[:1, :4])[0])  # a constant row has no τ


def _margin_probs(margins: np.ndarray) -> np.ndarray:
    """[n, 4] probabilities with p₍2₎ − p₍3₎ = margin, experts 0 > 1 > 2 > 3."""
    c = np.full_like(margins, 0.15)
    b = c + margins
    d = np.full_like(margins, 0.05)
    return np.stack([1.0 - b - c - d, b, c, d], axis=1).astype(np.float32)


def test_small_margins_flip_and_large_ones_hold(store: Store) -> None:
    n = 40
    margins = np.linspace(0.005, 0.2, n)  # sorted: quartile q holds decisions 10q .. 10q+9
    flip_every = {0: 1, 1: 2, 2: 5}  # quartile 0: all flip, 1: every 2nd, 2: every 5th, 3: none
    flips = [i % flip_every[i // 10] == 0 if i // 10 in flip_every else False for i in range(n)]
    probs = _margin_probs(margins)
    a = planted_run(store, "a", experts={0: [[0, 1]] * n}, probs={0: probs})
    b = planted_run(store, "b", experts={0: [[0, 2] if f else [0, 1] for f in flips]}, probs={0: probs})
    table = compute("boundary-flips", a, other=b, bins=4)
    assert table["bin"].tolist() == [0, 1, 2, 3]
    assert table["decisions"].tolist() == [10, 10, 10, 10]
    assert table["flip_share"].tolist() == pytest.approx([1.0, 0.5, 0.2, 0.0])
    assert table["margin_low"].iloc[0] == pytest.approx(0.005, abs=1e-6)
    assert table["mean_margin"].is_monotonic_increasing
    assert table["spearman"].iloc[0] == pytest.approx(-1.0)
    assert table.attrs["spearman"] == pytest.approx(-1.0)
    per_layer = compute("boundary-flips", a, other=b, bins=2, by_layer=True)
    assert per_layer["layer"].tolist() == [0, 0]
    assert per_layer["flip_share"].tolist() == pytest.approx([0.75, 0.1])
    with pytest.raises(InputError, match="bins must be at least 1"):
        compute("boundary-flips", a, other=b, bins=0)


def test_runs_without_scores_refuse_in_one_line(store: Store, tmp_path: Path) -> None:
    probs = _random_probs(5)
    with_probs = planted_run(store, "p", experts={0: _top_k(probs)}, probs={0: probs})
    bare = planted_run(store, "bare", experts={0: _top_k(probs)})
    for kind in ("rank-consistency", "boundary-flips"):
        with pytest.raises(InputError, match="needs full router probability vectors") as raised:
            compute(kind, with_probs, other=bare)
        assert "\n" not in str(raised.value)
    with pytest.raises(InputError, match="router logits"):
        compute("rank-consistency", with_probs, other=with_probs, score="logits")
    out = tmp_path / "tau.json"
    args = ["report", "--store", str(store.path), "--run", "p", "--kind", "rank-consistency"]
    assert main([*args, "--compare", "p", "--format", "json", "--out", str(out)]) == 0
    assert '"mean_tau"' in out.read_text()
    assert main([*args, "--compare", "bare"]) == 2


def test_replay_samples_counts_tokens_differing_in_any_layer(store: Store) -> None:
    same = [[0, 1], [1, 2], [2, 3], [3, 0]]
    changed = [[0, 1], [1, 2], [3, 2], [3, 1]]  # sample 2: same set, other order; sample 3 differs
    a = planted_run(store, "a", experts={0: same, 1: same})
    b = planted_run(store, "b", experts={0: same, 1: changed})
    table = compute("replay-samples", a, other=b)
    assert table["sample"].tolist() == [0, 1, 2, 3]
    assert table["share_differing"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert table["decisions_differing"].tolist() == [0, 0, 0, 1]
    total = compute("replay", a, other=b).iloc[0]
    assert table["tokens_differing"].sum() == total["tokens_differing"] == 1
