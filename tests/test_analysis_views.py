"""Known answers and pandas cross-checks for the views added on top of the core metrics: spatial maps,
expert paths, embeddings, bootstrap intervals, capacity overflow, expert-size weighting, co-activation
similarity, uncertainty by label, the registry's `compute` and side-by-side comparison."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

import routescope
from routescope.analysis import (
    ANALYSES,
    balance,
    bootstrap_ci,
    coerce_params,
    compute,
    embeddings,
    expert_paths,
    expert_similarity,
    label_nmi,
    repeat_rate,
    side_by_side,
    spatial_preference,
    uncertainty,
    uncertainty_by_label,
)
from routescope.cli import main
from routescope.store import InputError, Run, Store
from tests.planted import planted_run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A small text run of the bundled LM (with probabilities) and a small diffusion run of the DiT."""
    store = Store(tmp_path_factory.mktemp("views") / "store")
    texts, labels = routescope.load_dataset("bundled:domains")
    picked = list(range(0, len(texts), max(1, len(texts) // 15)))[:15]
    lm = routescope.load_model("bundled:moe-lm")
    routescope.record(
        lm,
        [texts[i][:300] for i in picked],
        store=store,
        name="lm",
        labels={"domain": [labels["domain"][i] for i in picked]},
        probs=True,
        progress=False,
    )
    dit = routescope.load_model("bundled:dit-digits")
    routescope.record_diffusion(
        dit, classes=[1, 7], samples_per_class=1, steps=3, seed=0, store=store, name="dit", progress=False
    )
    return store


def _top_tokens_frame(run: Run) -> pd.DataFrame:
    a = run.assignments()
    a = a[~a["dropped"]]
    routers = pd.DataFrame(run.routers)[["id", "stack"]].rename(columns={"id": "router"})
    return a.merge(routers, on="router").merge(run.tokens(), on=["sample", "position", "stack"])


def test_spatial_preference_matches_pandas(recorded: Store) -> None:
    run = recorded.open("dit")
    table = spatial_preference(run, layer=1)
    frame = _top_tokens_frame(run).query("layer == 1")
    expected = frame.groupby(["expert", "row", "col"]).size().rename("n").reset_index()
    merged = table.merge(expected, on=["expert", "row", "col"], how="outer")
    assert (merged["count"] == merged["n"]).all()
    per_patch = table.groupby(["row", "col"])["share"].sum()
    assert per_patch.to_numpy() == pytest.approx(1.0)  # P(expert | patch) sums to 1 on every patch
    grid = run.manifest["patch_grid"]
    assert set(table["row"]) == set(range(grid[0]))
    assert set(table["col"]) == set(range(grid[1]))
    load = frame.groupby("expert").size() / len(frame)
    row = table.iloc[0]
    assert row["lift"] == pytest.approx(row["share"] / load[row["expert"]])
    with pytest.raises(InputError, match="patch grid"):
        spatial_preference(recorded.open("lm"))


def test_expert_paths_known_answer(store: Store) -> None:
    # three tokens take 0 → 1, one takes 2 → 3
    run = planted_run(store, "paths", experts={0: [[0], [0], [0], [2]], 1: [[1], [1], [1], [3]]})
    table = expert_paths(run).set_index("path")
    assert table.loc["0>1", "count"] == 3
    assert table.loc["2>3", "count"] == 1
    assert table.loc["0>1", "share"] == pytest.approx(0.75)
    assert table.loc["0>1", "baseline_share"] == pytest.approx(0.75 * 0.75)
    assert table.loc["2>3", "lift"] == pytest.approx(0.25 / (0.25 * 0.25))
    assert expert_paths(run, top=1)["path"].tolist() == ["0>1"]


def test_token_embedding_is_pca_of_router_probabilities(recorded: Store) -> None:
    run = recorded.open("lm")
    table = embeddings(run, layer=2, method="pca", max_points=200, seed=3)
    assert len(table) == 200
    decisions = run.decisions().query("layer == 2").set_index(["sample", "position", "step", "call"])
    vectors = np.stack(
        decisions.loc[
            list(zip(table["sample"], table["position"], table["step"], table["call"], strict=True)), "probs"
        ]
        .map(np.asarray)
        .to_list()
    )
    expected = PCA(n_components=2, random_state=3).fit_transform(vectors.astype(np.float64))
    for axis, column in enumerate(["x", "y"]):  # PCA axes are defined up to sign
        assert np.abs(table[column].to_numpy()) == pytest.approx(np.abs(expected[:, axis]), abs=1e-5)
    assert {"domain", "token", "top_expert"} <= set(table.columns)
    again = embeddings(run, layer=2, max_points=200, seed=3)
    other = embeddings(run, layer=2, max_points=200, seed=4)
    assert again[["sample", "position"]].equals(table[["sample", "position"]])
    assert not other[["sample", "position"]].equals(table[["sample", "position"]])


def test_expert_embedding_and_umap(recorded: Store) -> None:
    run = recorded.open("dit")
    experts = embeddings(run, layer=0, of="experts", method="umap", seed=0)
    assert experts["expert"].tolist() == list(range(8))
    assert experts["load"].sum() == pytest.approx(1.0)
    assert np.isfinite(experts[["x", "y"]].to_numpy()).all()
    again = embeddings(run, layer=0, of="experts", method="umap", seed=0)
    assert again[["x", "y"]].to_numpy() == pytest.approx(experts[["x", "y"]].to_numpy())
    with pytest.raises(InputError, match="unknown embedding method"):
        embeddings(run, layer=0, method="tsne")


def test_bootstrap_estimates_equal_the_metrics_and_bracket_them(recorded: Store) -> None:
    run = recorded.open("lm")
    cases = [
        ("balance", None, balance(run), "cv"),
        ("nmi", "domain", label_nmi(run, "domain"), "nmi"),
        ("uncertainty", None, uncertainty(run), "mean_margin"),
        ("repeat", None, repeat_rate(run), "top1_repeat"),
    ]
    for kind, label, table, metric in cases:
        ci = bootstrap_ci(run, kind, label=label, n_boot=200, seed=1).query("metric == @metric")
        assert ci["estimate"].to_numpy() == pytest.approx(table[metric].to_numpy()), kind
        assert (ci["lo"] <= ci["hi"]).all(), kind
        assert (ci["hi"] > ci["lo"]).any(), kind
        if kind != "nmi":  # plug-in NMI is biased upward under resampling (see the module docstring)
            assert ((ci["lo"] <= ci["estimate"]) & (ci["estimate"] <= ci["hi"])).all(), kind


def test_bootstrap_of_identical_samples_has_zero_width(store: Store) -> None:
    run = planted_run(store, "same", experts={0: [[0, 1]] * 10})
    ci = bootstrap_ci(run, "balance", n_boot=50).set_index("metric")
    assert ci.loc["cv", "lo"] == ci.loc["cv", "hi"] == pytest.approx(ci.loc["cv", "estimate"])
    with pytest.raises(InputError, match="no bootstrap"):
        bootstrap_ci(run, "paths")


def test_bootstrap_nmi_when_the_last_label_skips_the_last_expert(store: Store) -> None:
    # label "a" → expert 3, label "b" → expert 0: the statistics' width must not come from the data
    labels = {"domain": ["a"] * 4 + ["b"] * 4}
    run = planted_run(store, "skip", experts={0: [[3]] * 4 + [[0]] * 4}, labels=labels)
    ci = bootstrap_ci(run, "nmi", label="domain", n_boot=20).iloc[0]
    assert ci["estimate"] == pytest.approx(label_nmi(run, "domain")["nmi"].iloc[0])
    assert ci["estimate"] == pytest.approx(1.0)


def test_capacity_overflow_matches_pandas(recorded: Store) -> None:
    run = recorded.open("lm")
    table = balance(run, capacity_factor=1.25).set_index("layer")
    a = run.assignments().query("not dropped")
    counts = (
        a.groupby(["layer", "sample", "step", "call", "router", "expert"]).size().rename("n").reset_index()
    )
    counts["total"] = counts.groupby(["layer", "sample", "step", "call", "router"])["n"].transform("sum")
    capacity = np.ceil(1.25 * counts["total"] / 16)
    counts["over"] = (counts["n"] - capacity).clip(lower=0)
    expected = counts.groupby("layer")["over"].sum() / counts.groupby("layer")["n"].sum()
    assert table["overflow"].to_numpy() == pytest.approx(expected.to_numpy())
    assert (balance(run, capacity_factor=16.0)["overflow"] == 0).all()  # C ≥ every group's size
    with pytest.raises(InputError, match="capacity_factor"):
        balance(run, capacity_factor=0)


def test_expert_size_weighting(store: Store) -> None:
    run = planted_run(store, "sizes", experts={0: [[0]] * 2 + [[1]] * 2})
    even = balance(run).iloc[0]
    same = balance(run, expert_size={0: 3.0, 1: 3.0, 2: 3.0, 3: 3.0}).iloc[0]
    assert same["cv"] == pytest.approx(even["cv"])
    assert same["gini"] == pytest.approx(even["gini"])
    weighted = balance(run, expert_size={0: 3.0, 1: 1.0, 2: 1.0, 3: 1.0}).iloc[0]
    assert weighted["max_over_mean"] == pytest.approx(0.75 * 4)  # compute 6 of 8 on expert 0
    with pytest.raises(InputError, match="positive size"):
        balance(run, expert_size={0: 1.0})


def test_coactivation_similarity_is_ochiai(store: Store) -> None:
    run = planted_run(store, "pairs", experts={0: [[0, 1]] * 3 + [[0, 2]]})
    table = expert_similarity(run, 0, basis="coactivation").set_index(["expert_a", "expert_b"])
    assert table.loc[(0, 1), "similarity"] == pytest.approx(3 / math.sqrt(4 * 3))
    assert table.loc[(1, 2), "similarity"] == 0.0
    assert table.loc[(3, 3), "similarity"] == 1.0
    with pytest.raises(InputError, match="without probabilities"):
        expert_similarity(run, 0)  # the router basis needs probs


def test_uncertainty_by_label_matches_pandas(recorded: Store) -> None:
    run = recorded.open("lm")
    table = uncertainty_by_label(run, "domain", threshold=0.8, min_count=1)
    d = run.decisions().merge(run.samples()[["sample", "domain"]], on="sample")
    d["uncertain"] = d["entropy"] / np.log(16) >= 0.8
    expected = d.groupby(["layer", "domain"])["uncertain"].mean()
    got = table.set_index(["layer", "domain"])["uncertain_share"]
    assert got.sort_index().to_numpy() == pytest.approx(expected.sort_index().to_numpy())
    first = table.query("layer == 0")["uncertain_share"].to_numpy()
    assert (np.diff(first) <= 0).all()  # most uncertain first


def test_compute_checks_what_each_kind_needs(recorded: Store) -> None:
    run = recorded.open("lm")
    with pytest.raises(InputError, match="needs a label"):
        compute("nmi", run)
    with pytest.raises(InputError, match="needs a layer"):
        compute("coactivation", run)
    with pytest.raises(InputError, match="n_groups"):
        compute("merge-groups", run, layer=0)
    with pytest.raises(InputError, match="compares two runs") as raised:
        compute("agreement", run)
    assert raised.value.field == "compare"  # the CLI names --compare, the dashboard its second-run picker
    assert compute("load", run, layer=1)["layer"].unique().tolist() == [1]
    assert coerce_params("balance", {"capacity_factor": "1.5", "by": "layer,step"}) == {
        "capacity_factor": 1.5,
        "by": ("layer", "step"),
    }
    with pytest.raises(InputError, match="no parameter"):
        coerce_params("balance", {"colour": "red"})
    with pytest.raises(InputError, match="one of"):
        coerce_params("embedding", {"of": "pixels"})
    assert {"spatial", "embedding", "agreement", "paths", "similarity"} <= set(ANALYSES)


def test_side_by_side_of_a_run_and_its_rerecording(recorded: Store, tmp_path: Path) -> None:
    run = recorded.open("lm")
    texts = run.samples()["text"].tolist()
    lm = routescope.load_model("bundled:moe-lm")
    again = routescope.record(
        lm, texts, store=recorded, name="lm-again", probs=True, progress=False,
        labels={"domain": run.samples()["domain"].tolist()},
    )  # fmt: skip
    table = side_by_side([run, again], "balance")
    mixed = side_by_side([run, recorded.open("dit")], "balance")  # only lm has probs: aux_loss on one side
    assert "aux_loss@lm" in mixed.columns
    assert "aux_loss@diff" not in mixed.columns
    assert table["cv@diff"].to_numpy() == pytest.approx(0.0, abs=1e-12)
    assert table["cv@lm"].to_numpy() == pytest.approx(balance(run)["cv"].to_numpy())
    out = tmp_path / "agree.json"
    assert main(["report", "--store", str(recorded.path), "--run", "lm", "--kind", "agreement",
                 "--compare", "lm-again", "--format", "json", "--out", str(out)]) == 0  # fmt: skip
    agreement = pd.read_json(out)
    assert agreement["top1_agreement"].tolist() == pytest.approx([1.0] * 4)


def test_report_cli_params_ci_and_errors(recorded: Store, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["report", "--store", str(recorded.path), "--run", "lm"]
    assert main([*base, "--kind", "balance", "--param", "capacity_factor=1.25", "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert "overflow" in csv.splitlines()[0]
    assert (
        main([*base, "--kind", "uncertainty", "--ci", "0.9", "--param", "n_boot=50", "--format", "csv"]) == 0
    )
    assert (
        capsys.readouterr().out.splitlines()[0]
        == "layer,metric,estimate,lo,hi,bias,n_boot,level,unit,n_units"
    )
    assert main([*base, "--kind", "balance", "--ci", "0.9", "--param", "n_boot=many"]) == 2
    assert capsys.readouterr().err == "routescope: error: n_boot='many' is not a valid int\n"
    assert main([*base, "--kind", "balance", "--param", "capacity_factor"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main([*base, "--kind", "spatial"]) == 2
    assert "patch grid" in capsys.readouterr().err


def test_views_share_one_normalised_entropy(recorded: Store) -> None:
    """`norm_entropy` (H / ln E) is one definition: the registered views, `uncertainty` and
    `uncertainty_by_label` all agree with each other on the same decisions."""
    from routescope.analysis import VIEWS, compute, uncertainty

    run = recorded.open("lm")
    assert "decisions" in VIEWS
    assert "decisions" not in routescope.analysis.ANALYSES
    per_decision = compute("decisions", run)
    means = per_decision.groupby("layer")["norm_entropy"].mean()
    assert uncertainty(run).set_index("layer")["mean_norm_entropy"].to_numpy() == pytest.approx(
        means.to_numpy()
    )
    histogram = compute("decision_histogram", run, bins=10)
    assert histogram.groupby("layer")["count"].sum().tolist() == per_decision.groupby("layer").size().tolist()
    top = compute("most_uncertain", run, layer=0, n=3)
    assert top["norm_entropy"].iloc[0] == pytest.approx(
        per_decision.loc[per_decision["layer"] == 0, "norm_entropy"].max()
    )
    with pytest.raises(InputError, match="needs a layer"):
        compute("most_uncertain", run)
