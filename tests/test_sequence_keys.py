"""Analyses that pair or order decisions key on (sample, step, router, call) — issue 14 items 3 and 4.

A diffusion run decides every patch again at every sampler step; pairing patch i with patch i + 1 without
the step pairs every step with every other (pairs × steps). Here a real recording of the bundled DiT
(4 × 4 patch grid, 4 steps, a CFG pair per class) and a text run with generation (one position per step
after the prompt) are analysed, and every count and rate is compared with pandas written from the
definition on `run.assignments()` and `run.tokens()`: exact equality, not tolerance.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import routescope
from routescope.analysis import (
    coactivation,
    expert_paths,
    repeat_rate,
    transitions,
    use_engine,
    vocabulary_specialization,
)
from routescope.analysis.vocabulary import expected_top_share
from routescope.hooks import LoadedModel
from routescope.store import InputError, Run, Store

STEPS = 4
DECISION = ["sample", "position", "step", "router", "call"]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def dit_run(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Run:
    dit = routescope.load_model("bundled:dit-digits")
    store = Store(tmp_path_factory.mktemp("keys") / "store")
    return routescope.record_diffusion(
        dit, classes=[1, 2], samples_per_class=1, steps=STEPS, seed=0, store=store, name="dit", progress=False
    )


@pytest.fixture(scope="module")
def text_run(tiny_lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Run:
    store = Store(Path(tmp_path_factory.mktemp("keys-text")) / "store")
    texts = ["the cat sat on the mat", "def f(x): return x", "the cat sat"]
    return routescope.record(tiny_lm, texts, store=store, name="text", max_new_tokens=3, progress=False)


def _top1(run: Run) -> pd.DataFrame:
    a = run.assignments()
    return a[(a["rank"] == 0) & ~a["dropped"]][[*DECISION, "layer", "expert"]]


def _chosen(run: Run) -> pd.DataFrame:
    a = run.assignments()
    return a[~a["dropped"]][[*DECISION, "expert"]]


def _with_cells(run: Run, frame: pd.DataFrame) -> pd.DataFrame:
    tokens = run.tokens()[["sample", "position", "row", "col"]]
    return frame.merge(tokens, on=["sample", "position"])


def _expected_repeat(run: Run, pairs: pd.DataFrame) -> pd.DataFrame:
    """The repeat table from the definition, on pairs with `*_a` and `*_b` decision columns."""
    chosen = _chosen(run)
    sets = chosen.groupby(DECISION)["expert"].apply(frozenset).rename("set").reset_index()
    second = sets.rename(columns={c: f"{c}_b" for c in ["position", "step", "set"]})
    pairs = pairs.merge(second, on=["sample", "position_b", "step_b", "router", "call"])
    pairs["repeat"] = pairs["expert_a"] == pairs["expert_b"]
    pairs["in_topk"] = [e in s for e, s in zip(pairs["expert_a"], pairs["set_b"], strict=True)]
    rows = []
    for layer, part in pairs.groupby("layer"):
        ends = pd.concat(
            [
                part[["sample", "router", "call", f"position_{x}", f"step_{x}", f"expert_{x}"]].set_axis(
                    ["sample", "router", "call", "position", "step", "expert"], axis=1
                )
                for x in "ab"
            ]
        )
        n_experts = 1 + int(run.assignments()["expert"].max())
        p = np.bincount(ends["expert"], minlength=n_experts) / len(ends)
        end_sets = ends.merge(sets, on=DECISION)["set"]
        q = np.array([sum(e in s for s in end_sets) for e in range(n_experts)]) / len(ends)
        rows.append(
            {
                "layer": layer,
                "pairs": len(part),
                "top1_repeat": part["repeat"].sum() / len(part),
                "top1_in_topk": part["in_topk"].sum() / len(part),
                "baseline_top1": float(np.sum(p * p)),
                "baseline_topk": float(np.sum(p * q)),
            }
        )
    return pd.DataFrame(rows)


def _check_repeat(table: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert table["layer"].tolist() == expected["layer"].tolist()
    assert table["pairs"].tolist() == expected["pairs"].tolist()
    for column in ["top1_repeat", "top1_in_topk", "baseline_top1", "baseline_topk"]:
        np.testing.assert_allclose(table[column], expected[column], rtol=1e-12, err_msg=column)


def test_repeat_rate_raster_pairs_within_a_row_and_a_step(dit_run: Run) -> None:
    top = _with_cells(dit_run, _top1(dit_run))
    nxt = top.assign(position=top["position"] - 1)
    pairs = top.merge(
        nxt, on=["sample", "position", "step", "router", "call", "layer"], suffixes=("_a", "_b")
    )
    pairs = pairs[pairs["row_a"] == pairs["row_b"]].rename(columns={"step": "step_a"})
    pairs = pairs.assign(
        position_a=pairs["position"], position_b=pairs["position"] + 1, step_b=pairs["step_a"]
    )
    table = repeat_rate(dit_run)
    rows, cols = dit_run.manifest["patch_grid"]
    samples = len(dit_run.samples())
    assert table["pairs"].tolist() == [samples * STEPS * rows * (cols - 1)] * len(table)
    assert set(table["neighbours"]) == {"raster"}
    _check_repeat(table, _expected_repeat(dit_run, pairs))
    assert table["uniform_top1"].tolist() == [1 / 8] * 4
    assert table["uniform_topk"].tolist() == [2 / 8] * 4


def test_repeat_rate_grid_pairs_right_and_down_neighbours(dit_run: Run) -> None:
    top = _with_cells(dit_run, _top1(dit_run))
    frames = []
    for d_row, d_col in [(0, 1), (1, 0)]:
        moved = top.assign(row=top["row"] - d_row, col=top["col"] - d_col)
        frames.append(
            top.merge(
                moved, on=["sample", "step", "router", "call", "layer", "row", "col"], suffixes=("_a", "_b")
            )
        )
    pairs = pd.concat(frames, ignore_index=True).rename(columns={"step": "step_a"})
    pairs["step_b"] = pairs["step_a"]
    table = repeat_rate(dit_run, neighbours="grid")
    rows, cols = dit_run.manifest["patch_grid"]
    per_image = rows * (cols - 1) + (rows - 1) * cols
    assert table["pairs"].tolist() == [len(dit_run.samples()) * STEPS * per_image] * 4
    assert set(table["neighbours"]) == {"grid"}
    _check_repeat(table, _expected_repeat(dit_run, pairs))
    with pytest.raises(InputError, match="neighbours must be"):
        repeat_rate(dit_run, neighbours="diagonal")  # type: ignore[arg-type]


def test_repeat_rate_on_text_pairs_across_generation_steps(text_run: Run) -> None:
    top = _top1(text_run)
    assert top["step"].max() > 0  # generated positions are decided at later steps
    nxt = top.assign(position=top["position"] - 1)
    pairs = top.merge(nxt, on=["sample", "position", "router", "call", "layer"], suffixes=("_a", "_b"))
    pairs = pairs.assign(position_a=pairs["position"], position_b=pairs["position"] + 1)
    table = repeat_rate(text_run)
    assert set(table["neighbours"]) == {"sequence"}
    expected = _expected_repeat(text_run, pairs)
    _check_repeat(table, expected)
    # the data baselines against the numpy formula Σ p², Σ p q on the layer's paired tokens
    a = text_run.assignments()
    layer0 = pairs[pairs["layer"] == 0]
    ends = np.concatenate([layer0["expert_a"], layer0["expert_b"]])
    p = np.bincount(ends, minlength=16) / len(ends)
    assert table.loc[0, "baseline_top1"] == pytest.approx(np.sum(p**2), rel=1e-12)
    chosen = a[(a["layer"] == 0) & ~a["dropped"]]
    keys = pd.concat(
        [
            layer0[["sample", "position_a", "step_a"]].set_axis(["sample", "position", "step"], axis=1),
            layer0[["sample", "position_b", "step_b"]].set_axis(["sample", "position", "step"], axis=1),
        ]
    )
    q = np.bincount(keys.merge(chosen, on=["sample", "position", "step"])["expert"], minlength=16) / len(keys)
    assert q.sum() == pytest.approx(text_run.routers[0]["top_k"])  # k experts per decision (no drops)
    assert table.loc[0, "baseline_topk"] == pytest.approx(np.sum(p * q), rel=1e-12)
    sizes = {int(r["layer"]): (int(r["n_experts"]), int(r["top_k"])) for r in text_run.routers}
    assert table["uniform_top1"].tolist() == [1 / sizes[layer][0] for layer in table["layer"]]
    assert table["uniform_topk"].tolist() == [sizes[layer][1] / sizes[layer][0] for layer in table["layer"]]
    with pytest.raises(InputError, match="no patch grid"):
        repeat_rate(text_run, neighbours="grid")


def test_transitions_pair_the_same_patch_at_the_same_step(dit_run: Run) -> None:
    top = _top1(dit_run)
    table = transitions(dit_run)
    for layer in range(3):
        first = top[top["layer"] == layer].drop(columns=["router", "layer"])
        second = top[top["layer"] == layer + 1].drop(columns=["router", "layer"])
        joined = first.merge(second, on=["sample", "position", "step", "call"], suffixes=("", "_next"))
        assert len(joined) == len(first)  # one partner per decision, not one per step
        expected = joined.groupby(["expert", "expert_next"]).size()
        got = table[table["layer"] == layer].set_index(["expert", "next_expert"])["count"]
        assert got.to_dict() == {(int(a), int(b)): int(n) for (a, b), n in expected.items()}


def test_paths_are_one_per_patch_and_step(dit_run: Run) -> None:
    top = _top1(dit_run).sort_values(["call", "layer", "router"])
    paths = top.groupby(["sample", "position", "step"])["expert"].agg(lambda e: ">".join(map(str, e)))
    expected = paths.value_counts()
    table = expert_paths(dit_run, top=10_000).set_index("path")
    assert table["count"].sum() == len(dit_run.samples()) * STEPS * 16
    assert table["count"].to_dict() == {k: int(v) for k, v in expected.items()}
    loads = [top[top["layer"] == layer]["expert"].value_counts(normalize=True) for layer in range(4)]
    path, row = next(iter(table.iterrows()))
    independent = math.prod(float(loads[i][int(e)]) for i, e in enumerate(path.split(">")))
    assert row["baseline_share"] == pytest.approx(independent, rel=1e-12)


def test_coactivation_counts_each_decision_once(dit_run: Run) -> None:
    assignments = dit_run.assignments()
    for layer in (0, 3):
        part = assignments[(assignments["layer"] == layer) & ~assignments["dropped"]]
        sets = part.groupby(DECISION)["expert"].apply(sorted)
        counts: dict[tuple[int, int], int] = {}
        for experts in sets:
            for a, b in itertools.permutations(experts, 2):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        table = coactivation(dit_run, layer).set_index(["expert_a", "expert_b"])["count"]
        assert table.to_dict() == counts
        singles = part.groupby("expert").size()
        decisions = len(sets)
        assert decisions == len(dit_run.samples()) * STEPS * 16
        full = coactivation(dit_run, layer).iloc[0]
        a, b = int(full["expert_a"]), int(full["expert_b"])
        assert full["p_b_given_a"] == pytest.approx(counts[(a, b)] / singles[a], rel=1e-12)
        assert full["lift"] == pytest.approx(
            (counts[(a, b)] / decisions) / (singles[a] / decisions * singles[b] / decisions), rel=1e-12
        )


def test_vocabulary_next_refuses_patch_grids_and_pairs_text_in_order(dit_run: Run, text_run: Run) -> None:
    with pytest.raises(InputError, match="patch grid"):
        vocabulary_specialization(dit_run, target="next")
    assert len(vocabulary_specialization(dit_run)) == 4 * 16  # input: one row per patch id and layer
    top = _top1(text_run)
    tokens = text_run.tokens()[["sample", "position", "token_id"]]
    following = top.merge(tokens.assign(position=tokens["position"] - 1), on=["sample", "position"])
    counts = following.groupby(["layer", "token_id", "expert"]).size().rename("n").reset_index()
    counts = counts.sort_values(["layer", "token_id", "n", "expert"], ascending=[True, True, False, True])
    best = counts.groupby(["layer", "token_id"]).head(1).set_index(["layer", "token_id"])
    total = counts.groupby(["layer", "token_id"])["n"].sum()
    table = vocabulary_specialization(text_run, target="next").set_index(["layer", "token_id"])
    assert table["count"].to_dict() == total.to_dict()
    assert table["top_expert"].to_dict() == best["expert"].to_dict()
    assert (table["share"] == best["n"] / total).all()
    # the chance level uses the layer's top-1 loads over the same rows
    loads = following[following["layer"] == 1]["expert"].value_counts().sort_index().to_numpy()
    part = table.loc[1]
    np.testing.assert_allclose(part["baseline_share"], expected_top_share(part["count"].to_numpy(), loads))


def _brute_top_share(n: int, p: np.ndarray) -> float:
    """E[max] / n by enumerating every outcome of Multinomial(n, p)."""
    total = 0.0
    for x in itertools.product(range(n + 1), repeat=len(p)):
        if sum(x) == n:
            weight = math.factorial(n) * math.prod(
                pe**xe / math.factorial(xe) for pe, xe in zip(p, x, strict=True)
            )
            total += weight * max(x)
    return total / n


def test_expected_top_share_exact_and_simulated() -> None:
    p = np.array([0.5, 0.3, 0.15, 0.05])
    ns = np.array([1, 2, 3, 5, 8])
    np.testing.assert_allclose(
        expected_top_share(ns, p * 40), [_brute_top_share(n, p) for n in ns], rtol=1e-12
    )
    assert expected_top_share([2], p)[0] == pytest.approx((1 + np.sum(p**2)) / 2)
    # above the exact range: Monte Carlo, seeded and close to the exact value where both are available
    rng = np.random.default_rng(3)
    q = rng.dirichlet(np.ones(16))
    exact = expected_top_share([64], q)[0]
    from routescope.analysis import vocabulary

    simulated = vocabulary._simulated_top_share(np.array([64]), q / q.sum(), seed=0)[0]
    assert simulated == pytest.approx(exact, abs=0.003)
    many = np.arange(1, 2000)
    values = expected_top_share(many, q)
    assert np.array_equal(values, expected_top_share(many, q))  # seeded
    assert (values >= q.max() - 1e-12).all()
    assert (values <= 1).all()
    assert values[-1] == pytest.approx(q.max(), abs=0.02)
    with pytest.raises(InputError):
        expected_top_share([0], q)


def _with_drops(run: Run, folder: Path) -> Run:
    """A copy of `run` with about a fifth of its assignments marked dropped (rank 0 included)."""
    copy = folder / run.name
    shutil.copytree(run.path, copy)
    table = pq.read_table(copy / "assignments.parquet")
    dropped = np.random.default_rng(0).random(table.num_rows) < 0.2
    column = table.schema.get_field_index("dropped")
    pq.write_table(
        table.set_column(column, table.schema.field(column), pa.array(dropped)), copy / "assignments.parquet"
    )
    return Run(copy)


@pytest.mark.parametrize(("which", "neighbours"), [("dit", "raster"), ("dit", "grid"), ("text", "raster")])
def test_repeat_rate_skips_dropped_assignments(
    dit_run: Run, text_run: Run, tmp_path: Path, which: str, neighbours: Literal["raster", "grid"]
) -> None:
    """A pair needs both top-1 choices kept; a dropped expert is in nobody's top-k and no load."""
    run = _with_drops(dit_run if which == "dit" else text_run, tmp_path)
    top = _top1(run)
    assert len(top) < len(run.assignments().query("rank == 0"))
    if which == "text":
        nxt = top.assign(position=top["position"] - 1)
        pairs = top.merge(nxt, on=["sample", "position", "router", "call", "layer"], suffixes=("_a", "_b"))
        pairs = pairs.assign(position_a=pairs["position"], position_b=pairs["position"] + 1)
    else:
        top = _with_cells(run, top)
        offsets = [(0, 1)] if neighbours == "raster" else [(0, 1), (1, 0)]
        frames = []
        for d_row, d_col in offsets:
            moved = top.assign(row=top["row"] - d_row, col=top["col"] - d_col)
            keys = ["sample", "step", "router", "call", "layer", "row", "col"]
            frames.append(top.merge(moved, on=keys, suffixes=("_a", "_b")))
        pairs = pd.concat(frames, ignore_index=True).rename(columns={"step": "step_a"})
        pairs["step_b"] = pairs["step_a"]
    _check_repeat(repeat_rate(run, neighbours=neighbours), _expected_repeat(run, pairs))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pyspark") is None, reason="pyspark is not installed")
def test_spark_gives_the_same_keys_on_a_diffusion_run(dit_run: Run) -> None:
    """The pairing queries (tokens join, offsets CROSS JOIN, masks) are plain SQL that Spark accepts too."""
    calls = {
        "raster": lambda: repeat_rate(dit_run),
        "grid": lambda: repeat_rate(dit_run, neighbours="grid"),
        "paths": lambda: expert_paths(dit_run, top=10_000),
        "transitions": lambda: transitions(dit_run),
        "vocabulary": lambda: vocabulary_specialization(dit_run),
    }
    duck = {name: call() for name, call in calls.items()}
    try:
        with use_engine("spark"):
            spark = {name: call() for name, call in calls.items()}
    finally:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
    for name in calls:
        keys = [
            c
            for c in duck[name].columns
            if duck[name][c].dtype.kind in "iuO" or str(duck[name][c].dtype) == "str"
        ]
        left = spark[name].sort_values(keys).reset_index(drop=True)
        right = duck[name].sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(left, right, check_dtype=False, rtol=1e-9, obj=name)
