"""Units of independence, bootstrap over units, permutation machinery, counting conventions, the
co-activation and lift nulls, and the `routescope claims` command — each against a known answer or a
computation written from the definition."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from routescope import analysis as A
from routescope.analysis import nulls
from routescope.analysis.permutation import permutation_p, shuffle_within
from routescope.analysis.units import count_units, unit_codes, unit_name
from routescope.cli import main
from routescope.store import InputError, Store
from tests.planted_claims import add_second, diffusion_run, domain_run, text_run


def test_permutation_p_counts_ties_and_the_observed_value() -> None:
    assert permutation_p(0.5, np.array([0.1, 0.5, 0.7, 0.2])) == pytest.approx(3 / 5)
    assert permutation_p(1.0, np.zeros(999)) == pytest.approx(1 / 1000)


def test_within_unit_shuffles_never_cross_units() -> None:
    rng = np.random.default_rng(0)
    for groups in (np.repeat([0, 1, 2], 5), np.array([2, 0, 0, 1, 2, 2, 1, 0, 0])):
        index = shuffle_within(groups, rng, 50)
        assert (groups[index] == groups[None, :]).all()
        assert all(sorted(row) == list(range(len(groups))) for row in index)


def _diffusion(store: Store, n: int = 3, steps: int = 2) -> object:
    rng = np.random.default_rng(0)
    first = rng.integers(0, 8, size=(2, 2 * n, steps, 4))
    return diffusion_run(store, "d", experts=add_second(first, 8, rng), classes=list(range(n)), grid=(2, 2))


def test_diffusion_runs_resample_images_with_both_branches(store: Store) -> None:
    run = _diffusion(store)
    assert unit_name(run) == "pair"
    codes = unit_codes(run)
    samples = run.samples()
    assert (codes["unit"].to_numpy() == samples["pair"].astype(int).to_numpy()).all()  # cond and uncond
    assert count_units(run) == 3
    ci = A.bootstrap_ci(run, "balance", n_boot=20)
    assert set(ci["unit"]) == {"pair"}
    assert set(ci["n_units"]) == {3}
    assert unit_name(run, "sample") == "sample"
    with pytest.raises(InputError, match="no sample column 'document'"):
        unit_name(run, "document")


def test_branch_is_permuted_within_images_and_class_between_them(store: Store) -> None:
    run = _diffusion(store)
    branch = A.label_nmi(run, "branch", n_permutations=99)
    klass = A.label_nmi(run, "class", n_permutations=99)
    assert set(branch["method"]) == {"permutation within units (pair)"}
    assert set(klass["method"]) == {"permutation between units (pair)"}


def test_label_nmi_bad_inputs(store: Store) -> None:
    run = domain_run(store, "dom", extra_labels={"one": ["x"] * 32})
    with pytest.raises(InputError, match="a permutation test needs two or more"):
        A.label_nmi(run, "one")
    with pytest.raises(InputError, match="positive integer"):
        A.label_nmi(run, "domain", n_permutations=0)
    assert A.label_nmi(run, "one", n_permutations=None)["nmi"].tolist() == [0.0, 0.0]


def test_counting_conventions_top1_and_gate(store: Store) -> None:
    run = domain_run(store, "dom")
    a = run.assignments()
    top1 = A.expert_load(run, ranks="top1")
    expected = a[a["rank"] == 0].groupby(["layer", "expert"]).size()
    assert top1.set_index(["layer", "expert"])["count"].loc[expected.index].tolist() == expected.tolist()
    gate = A.label_counts(run, "domain", weight="gate")
    merged = a.merge(run.samples()[["sample", "domain"]], on="sample")
    sums = merged.groupby(["layer", "expert", "domain"])["weight"].sum()
    got = gate.set_index(["layer", "expert", "domain"])["count"]
    assert np.allclose(got.loc[sums.index].to_numpy(), sums.to_numpy())
    with pytest.raises(InputError, match="unknown ranks"):
        A.expert_load(run, ranks="second")


def test_lift_null_separates_planted_specialization_from_chance(store: Store) -> None:
    run = domain_run(store, "dom", strength=0.6)
    table = A.specialization(run, "domain", n_permutations=199)
    preferred = table[(table["domain"] == "code") & table["expert"].isin([0, 1])]
    assert (preferred["p_value"] <= 1 / 200 + 1e-12).all()
    assert (preferred["null_lift"] < 1.2).all()  # chance lift is about 1, the planted one far above
    assert (preferred["lift"] > 1.5).all()


def _pairs_run(store: Store, name: str, planted: bool) -> object:
    rng = np.random.default_rng(1)
    n_samples, length = 40, 20
    first = rng.integers(0, 8, size=(1, n_samples, length))
    second = (first + rng.integers(1, 8, size=first.shape)) % 8
    if planted:
        second = np.where(first == 0, 1, second)  # expert 0 always comes with expert 1
        second = np.where((first == 1) & (second == 1), 2, second)
    experts = np.stack([first, second], axis=-1)
    return text_run(store, name, experts=experts, token_ids=np.zeros((n_samples, length), int))


def test_coactivation_null_matches_coactivation_and_finds_a_planted_pair(store: Store) -> None:
    planted = nulls.coactivation_null(_pairs_run(store, "pl", True), 0, n_permutations=99)
    reference = A.coactivation(store.open("pl"), 0)
    merged = planted.merge(reference, on=["expert_a", "expert_b"], suffixes=("", "_ref"))
    assert len(merged) == len(reference)
    assert np.allclose(merged["lift"], merged["lift_ref"])
    pair = planted.set_index(["expert_a", "expert_b"]).loc[(0, 1)]
    assert pair["p_value"] == pytest.approx(1 / 100)
    null = nulls.coactivation_null(_pairs_run(store, "null", False), 0, n_permutations=99)
    assert null.set_index(["expert_a", "expert_b"]).loc[(0, 1), "p_value"] > 0.05


def test_claims_command_prints_verdicts_and_refuses_what_does_not_apply(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    domain_run(store, "dom", strength=0.6)
    base = ["claims", "--store", str(store.path), "--run", "dom"]
    assert main([*base, "--claim", "olmoe-domain", "--format", "json", "--permutations", "199"]) == 0
    verdicts = json.loads(capsys.readouterr().out)
    assert [v["claim"] for v in verdicts] == ["olmoe-domain"]
    assert verdicts[0]["reproduces"] is True
    assert verdicts[0]["p_value"] == pytest.approx(2 / 200)
    assert main([*base, "--claim", "switch-dit-phases"]) == 2
    assert "does not apply" in capsys.readouterr().err
    assert main([*base, "--claim", "olmoe-domain", "--permutations", "10"]) == 2
    assert "use at least 199" in capsys.readouterr().err
    assert main([*base, "--claim", "nonsense"]) == 2
    assert main([*base, "--format", "markdown", "--permutations", "199"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| claim | reproduces |")
    assert "| olmoe-domain | True |" in table


def test_report_nmi_takes_permutation_options(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    domain_run(store, "dom")
    base = ["report", "--store", str(store.path), "--run", "dom", "--kind", "nmi", "--by", "domain"]
    assert main([*base, "--param", "n_permutations=49", "--param", "seed=3", "--format", "csv"]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert set(table["n_permutations"]) == {49}
    assert set(table["unit"]) == {"sample"}
    assert main([*base, "--param", "n_permutations=0"]) == 2


def test_merge_budget_shares_groups_across_layers_as_mc_smoe(store: Store) -> None:
    from tests.planted import planted_run

    layer0 = [[0]] * 5 + [[1]] * 3 + [[2]] * 2  # usage 0.5, 0.3, 0.2, 0 → top set to 1
    layer1 = [[0]] * 6 + [[1]] * 2 + [[2], [3]]  # usage 0.6, 0.2, 0.1, 0.1
    run = planted_run(store, "budget", experts={0: layer0, 1: layer1})
    # pooled, descending: 1, 1, .3, .2, .2, .1, .1, 0; threshold at rank 2·L
    assert A.merge_budget(run, 1) == {0: 1, 1: 1}  # threshold .3: only each layer's top
    assert A.merge_budget(run, 2) == {0: 2, 1: 1}  # threshold .2: layer 0 keeps .3 too
    with pytest.raises(InputError, match="average_groups"):
        A.merge_budget(run, 0)


def test_gate_weighted_coactivation_from_the_definition(store: Store) -> None:
    run = domain_run(store, "dom")
    table = A.coactivation(run, 0, weight="gate").set_index(["expert_a", "expert_b"])
    a = run.assignments()
    gates = a[a["layer"] == 0].pivot_table(
        index=["sample", "position"], columns="expert", values="weight", aggfunc="sum", fill_value=0.0
    )
    g = gates.to_numpy()
    decisions = len(g)
    for x, y in [(0, 1), (2, 3), (1, 5)]:
        expected = ((g[:, x] * g[:, y]).sum() / decisions) / (g[:, x].mean() * g[:, y].mean())
        assert table.loc[(x, y), "lift"] == pytest.approx(expected)
    with pytest.raises(InputError, match="pairs two ranks"):
        A.coactivation(run, 0, ranks="top1")
