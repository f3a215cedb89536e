"""Expert-placement analyses on planted runs: coverage and hot sets, device load under the three
placements with and without replicas, load drift between runs and cross-layer predictability — each
checked against a hand-computed answer, and the device loads against a brute-force count over the run's
raw assignment rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score

from routescope.analysis import (
    coerce_params,
    compute,
    coverage,
    device_load,
    device_loads,
    expert_drift,
    hot_set,
    layer_predictability,
    load_drift,
    place,
)
from routescope.store import InputError, Run, Store
from tests.planted import planted_run


def top1(counts: list[int]) -> list[list[int]]:
    """One-token samples whose only (top-1) expert gives each expert `counts[e]` assignments."""
    return [[e] for e, n in enumerate(counts) for _ in range(n)]


# layer 0: loads 5, 3, 1, 1 of 10; layer 1: 3, 3, 2, 2
CONCENTRATED = {0: top1([5, 3, 1, 1]), 1: [[0], [1], [2], [3], [0], [1], [2], [3], [0], [1]]}


def test_coverage_and_hot_set_known_answers(store: Store) -> None:
    run = planted_run(store, "conc", experts=CONCENTRATED)
    curve = coverage(run)
    np.testing.assert_allclose(curve[curve["layer"] == 0]["coverage"], [0.5, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(curve[curve["layer"] == 1]["coverage"], [0.3, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(curve[curve["layer"] == 0]["expert_share"], [0.25, 0.5, 0.75, 1.0])
    hot = hot_set(run, thresholds=(0.9, 0.5, 0.8))
    assert hot[hot["layer"] == 0]["hot_set"].tolist() == [1, 2, 3]  # a threshold met exactly counts
    assert hot[hot["layer"] == 1]["hot_set"].tolist() == [2, 3, 4]
    assert hot[hot["layer"] == 0]["uniform_hot_set"].tolist() == [2, 4, 4]
    np.testing.assert_allclose(hot[hot["layer"] == 0]["hot_share"], [0.25, 0.5, 0.75])
    params = coerce_params("hot-set", {"thresholds": "0.5, 0.8"})
    assert compute("hot-set", run, layer=1, **params)["hot_set"].tolist() == [2, 3]
    with pytest.raises(InputError, match=r"thresholds must be shares in \(0, 1\]"):
        hot_set(run, thresholds=(0.5, 1.5))


# one layer of 6 experts with loads 5, 4, 3, 3, 3, 2 (20 top-1 decisions)
SIX = {0: top1([5, 4, 3, 3, 3, 2])}


def test_device_load_known_answers(store: Store) -> None:
    run = planted_run(store, "six", experts=SIX, n_experts=6)
    table = device_load(run, devices=2).set_index("placement")
    # contiguous: {0,1,2} = 12, {3,4,5} = 8; round-robin: {0,2,4} = 11, {1,3,5} = 9; balanced (LPT): 10, 10
    np.testing.assert_allclose(
        table.loc[["contiguous", "round-robin", "balanced"], "max_share"], [0.6, 0.55, 0.5]
    )
    np.testing.assert_allclose(table["balancedness"], [10 / 12, 10 / 11, 1.0])
    np.testing.assert_allclose(table["max_over_mean"], [1.2, 1.1, 1.0])
    # one replica of expert 0 (2.5 + 2.5): physical loads 2.5 4 3 3 3 2 2.5, contiguous blocks of 4 and 3
    replicated = device_load(run, devices=2, replicas=1).set_index("placement")
    assert replicated.loc["contiguous", "balancedness"] == pytest.approx(10 / 12.5)
    # LPT: 4 → d0, 3 → d1, 3 → d1, 3 → d0, 2.5 → d1, 2.5 → d0, 2 → d1: 9.5 and 10.5 (greedy, not optimal)
    assert replicated.loc["balanced", "balancedness"] == pytest.approx(10 / 10.5)
    # three devices, at most two experts each: LPT gives {5, 2}, {4, 3}, {3, 3}
    np.testing.assert_allclose(device_loads(np.array([5, 4, 3, 3, 3, 2.0]), 3, "balanced"), [7, 7, 6])
    params = coerce_params("placement", {"devices": "3", "replicas": "2"})
    assert compute("placement", run, **params)["devices"].unique().tolist() == [3]
    with pytest.raises(InputError, match="devices must be between 1 and the 6 physical experts"):
        device_load(run, devices=7)
    with pytest.raises(InputError, match="replicas must be between 0 and the layer's 6 experts"):
        device_load(run, devices=2, replicas=7)


def brute_force_devices(run: Run, layer: int, devices: int, placement: str, replicas: int) -> np.ndarray:
    """Per-device load from the raw assignment rows: each routed row adds 1 to its expert's device, split
    in halves between the two copies of a replicated expert. The expert → device map is written out here
    for contiguous and round-robin; for balanced it is the analysis' own (its load is what is checked)."""
    rows = run.assignments()
    rows = rows[(rows["layer"] == layer) & ~rows["dropped"]]
    n = max(r.n_experts for r in run.info.routers if r.layer == layer)
    counts = np.zeros(n)
    for expert in rows["expert"]:
        counts[expert] += 1
    hottest = sorted(range(n), key=lambda e: (-counts[e], e))[:replicas]
    copies = list(range(n)) + hottest
    if placement == "contiguous":
        device_of = [i * devices // len(copies) for i in range(len(copies))]
    elif placement == "round-robin":
        device_of = [i % devices for i in range(len(copies))]
    else:
        loads = np.array([counts[e] / copies.count(e) for e in copies])
        device_of = list(place(loads, devices, "balanced"))
    per_device = np.zeros(devices)
    for expert in rows["expert"]:
        holders = [i for i, e in enumerate(copies) if e == expert]
        for i in holders:
            per_device[device_of[i]] += 1 / len(holders)
    return per_device


def test_device_load_equals_a_brute_force_count_of_the_assignments(store: Store) -> None:
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.full(8, 0.5), size=3)
    experts = {
        layer: [list(rng.choice(8, 2, replace=False, p=p[layer])) for _ in range(150)] for layer in range(3)
    }
    run = planted_run(store, "random", experts=experts, n_experts=8)
    for devices, replicas in [(2, 0), (4, 0), (4, 3), (3, 1)]:
        table = device_load(run, devices=devices, replicas=replicas)
        for row in table.itertuples():
            expected = brute_force_devices(run, row.layer, devices, row.placement, replicas)
            assert row.max_share == pytest.approx(expected.max() / expected.sum())
            assert row.balancedness == pytest.approx(expected.mean() / expected.max())
        balanced = table[table["placement"] == "balanced"]["max_share"].to_numpy()
        others = table[table["placement"] != "balanced"].groupby("layer")["max_share"].min().to_numpy()
        assert (balanced <= others + 1e-12).all()  # on these loads LPT beats both fixed placements
    assert len(place(np.ones(10), 3, "balanced")) == 10
    assert np.bincount(place(rng.random(10), 3, "balanced")).max() <= 4  # at most ⌈10/3⌉ per device


def test_load_drift_known_answers(store: Store) -> None:
    a = planted_run(store, "a", experts={0: top1([5, 3, 1, 1])})
    b = planted_run(store, "b", experts={0: top1([3, 3, 2, 2])})
    drift = load_drift(a, b)
    assert drift["tv_distance"].tolist() == pytest.approx([0.2])
    assert drift["max_change"].tolist() == pytest.approx([0.2])
    assert drift["max_change_expert"].tolist() == [0]
    assert drift[["assignments_a", "assignments_b"]].values.tolist() == [[10, 10]]
    p, q = np.array([5, 3, 1, 1]) / 10, np.array([3, 3, 2, 2]) / 10
    assert drift["js_divergence"].iloc[0] == pytest.approx(jensenshannon(p, q, base=2) ** 2)
    experts = expert_drift(a, b)
    np.testing.assert_allclose(experts["change"], q - p)
    assert load_drift(a, a)["tv_distance"].tolist() == [0.0]
    assert compute("drift", a, other=b)["tv_distance"].tolist() == pytest.approx([0.2])
    wider = planted_run(store, "wide", experts={0: top1([1, 1, 1, 1, 1, 1])}, n_experts=6)
    with pytest.raises(InputError, match="layer 0 has 4 experts in 'a' and 6 in 'wide'"):
        load_drift(a, wider)


def brute_force_predictability(run: Run) -> pd.DataFrame:
    rows = run.assignments()
    top = rows[(rows["rank"] == 0) & ~rows["dropped"]]
    first, second = (top[top["layer"] == layer] for layer in (0, 1))
    keys = ["sample", "position", "step", "call"]
    pairs = first.merge(second, on=keys, suffixes=("_a", "_b"))
    counts = pd.crosstab(pairs["expert_a"], pairs["expert_b"]).to_numpy(dtype=float)
    p = counts.sum(axis=0) / counts.sum()
    return pd.DataFrame(
        {
            "accuracy": [counts.max(axis=1).sum() / counts.sum()],
            "baseline_majority": [p.max()],
            "baseline_chance": [(p**2).sum()],
        }
    )


def test_layer_predictability_known_answers(store: Store) -> None:
    partial = planted_run(
        store, "partial", experts={0: [[0]] * 4 + [[1]] * 4, 1: [[0], [0], [0], [1], [1], [1], [2], [2]]}
    )
    table = layer_predictability(partial)
    assert table[["layer", "previous_layer", "decisions"]].values.tolist() == [[1, 0, 8]]
    assert table["accuracy"].iloc[0] == pytest.approx(5 / 8)
    assert table["baseline_majority"].iloc[0] == pytest.approx(3 / 8)
    assert table["baseline_chance"].iloc[0] == pytest.approx(22 / 64)
    a, b = [0] * 4 + [1] * 4, [0, 0, 0, 1, 1, 1, 2, 2]
    theil = mutual_info_score(a, b) / entropy(np.bincount(b))  # Theil's U, both in nats
    assert table["uncertainty_coefficient"].iloc[0] == pytest.approx(theil)
    expected = brute_force_predictability(partial)
    np.testing.assert_allclose(table[expected.columns].to_numpy(), expected.to_numpy())
    follows = planted_run(
        store, "follows", experts={0: top1([2, 2, 2, 2]), 1: [[3], [3], [2], [2], [1], [1], [0], [0]]}
    )
    assert layer_predictability(follows)[["accuracy", "uncertainty_coefficient"]].values.tolist() == [
        [1.0, 1.0]
    ]
    independent = planted_run(store, "indep", experts={0: [[0], [0], [1], [1]], 1: [[0], [1], [0], [1]]})
    row = layer_predictability(independent).iloc[0]
    assert (row["accuracy"], row["baseline_chance"], row["uncertainty_coefficient"]) == (0.5, 0.5, 0.0)
    single = planted_run(store, "single", experts={0: [[0], [1]]})
    assert layer_predictability(single).empty
