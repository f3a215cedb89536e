"""Loss and saliency report kinds on planted runs with known answers (tests/planted.py), a permutation null
for `loss-by-expert`, and the one-line refusals of runs that lack the columns."""

from __future__ import annotations

import numpy as np
import pytest

from routescope.analysis.registry import compute
from routescope.analysis.vocabulary import vocabulary_specialization
from routescope.store import InputError, Store
from tests.planted import planted_run

N = 400


def _top1(rng: np.random.Generator, n_experts: int = 4) -> list[list[int]]:
    first = rng.integers(0, n_experts, N)
    return [[int(e), int((e + 1) % n_experts)] for e in first]


def test_loss_by_expert_finds_a_planted_effect_and_not_a_null(tmp_path: object) -> None:
    rng = np.random.default_rng(0)
    experts = _top1(rng)
    first = np.array([e[0] for e in experts])
    store = Store(tmp_path)
    null_run = planted_run(store, "null", experts={0: experts}, nll=rng.gamma(2.0, 1.0, N))
    planted = np.where(first == 2, 2.0, 1.0) + rng.normal(0, 0.3, N)  # expert 2's tokens cost 1 nat more
    effect_run = planted_run(store, "effect", experts={0: experts}, nll=planted)
    null_table = compute("loss-by-expert", null_run, n_permutations=199)
    effect_table = compute("loss-by-expert", effect_run, n_permutations=199)
    assert null_table["p_value"].iloc[0] > 0.05
    assert effect_table["p_value"].iloc[0] <= 1 / 200 + 1e-12
    by_expert = effect_table.set_index("expert")
    for expert in range(4):
        mine = planted[first == expert]
        assert by_expert.loc[expert, "tokens"] == len(mine)
        assert by_expert.loc[expert, "mean_nll"] == pytest.approx(mine.mean(), rel=1e-5)
    assert by_expert["excess_nll"].idxmax() == 2
    assert "between units (sample)" in effect_table["method"].iloc[0]
    assert set(effect_table["unit"]) == {"sample"}


def test_loss_by_uncertainty_bins_known_entropies(tmp_path: object) -> None:
    n = 6
    sure = np.array([0.97, 0.01, 0.01, 0.01])
    even = np.full(4, 0.25)
    probs = np.stack([sure, sure, sure, even, even, even])
    nll = np.array([1.0, 2.0, 3.0, 5.0, 6.0, 7.0])
    run = planted_run(Store(tmp_path), "bins", experts={0: [[0, 1]] * n}, probs={0: probs}, nll=nll)
    table = compute("loss-by-uncertainty", run, bins=4)
    assert table["bin"].tolist() == [0, 3]  # H/ln4 ≈ 0.12 and exactly 1 (the last bin is closed)
    assert table["tokens"].tolist() == [3, 3]
    assert table["mean_nll"].tolist() == pytest.approx([2.0, 6.0])
    assert table[["bin_low", "bin_high"]].iloc[1].tolist() == [0.75, 1.0]


def test_loss_by_label_and_null_losses(tmp_path: object) -> None:
    nll = np.array([1.0, 3.0, np.nan, 4.0])
    run = planted_run(
        Store(tmp_path),
        "labels",
        experts={0: [[0, 1]] * 4},
        nll=nll,
        labels={"domain": ["a", "a", "b", "b"]},
    )
    table = compute("loss-by-label", run, label="domain")
    assert table["domain"].tolist() == ["b", "a"]
    assert table["tokens"].tolist() == [1, 2]
    assert table["mean_nll"].tolist() == pytest.approx([4.0, 2.0])
    assert table["total_nll"].tolist() == pytest.approx([4.0, 4.0])
    assert set(table["unit"]) == {"sample"}
    by_domain = table.set_index("domain")
    assert (by_domain.loc["a", "ci_low"], by_domain.loc["a", "ci_high"]) == pytest.approx((1.0, 3.0))
    assert np.isnan(by_domain.loc["b", "ci_low"])  # one scored token (one sequence): no interval


def test_loss_by_label_interval_resamples_units_not_tokens(tmp_path: object) -> None:
    """Domain `a` holds document 0 (three tokens, nll 1) and document 1 (one token, nll 3): resampling the
    two documents gives means 1, 1.5 and 3 (a quarter of resamples at each end), so the 95 % interval is
    [1, 3]; resampling the four tokens alone would rarely reach either end."""
    nll = np.array([1.0, 1.0, 1.0, 3.0, 2.0, 2.0])
    run = planted_run(
        Store(tmp_path),
        "units",
        experts={0: [[0, 1]] * 6},
        nll=nll,
        labels={"domain": ["a", "a", "a", "a", "b", "b"], "doc": ["0", "0", "0", "1", "2", "3"]},
    )
    table = compute("loss-by-label", run, label="domain", unit="doc", n_boot=2000).set_index("domain")
    assert table.loc["a", "mean_nll"] == pytest.approx(1.5)
    assert (table.loc["a", "ci_low"], table.loc["a", "ci_high"]) == pytest.approx((1.0, 3.0))
    assert (table.loc["b", "ci_low"], table.loc["b", "ci_high"]) == pytest.approx((2.0, 2.0))
    assert set(table["unit"]) == {"doc"}
    assert table["level"].tolist() == [0.95, 0.95]


def test_saliency_matches_the_reap_formula(tmp_path: object) -> None:
    experts = [[0, 1], [0, 2], [1, 0]]
    norms = np.array([[2.0, 4.0], [6.0, 1.0], [3.0, 10.0]])
    weights = np.array([[0.75, 0.25], [0.5, 0.5], [0.9, 0.1]])
    run = planted_run(
        Store(tmp_path), "saliency", experts={3: experts}, output_norm={3: norms}, weights={3: weights}
    )
    table = compute("saliency", run).set_index("expert")
    # expert 0: tokens 0 (rank 0), 1 (rank 0), 2 (rank 1)
    assert table.loc[0, "routed"] == 3
    assert table.loc[0, "frequency"] == pytest.approx(1.0)
    assert table.loc[0, "ean"] == pytest.approx((2.0 + 6.0 + 10.0) / 3)
    assert table.loc[0, "reap"] == pytest.approx((0.75 * 2 + 0.5 * 6 + 0.1 * 10) / 3)
    assert table.loc[0, "max_activation"] == pytest.approx(10.0)
    assert table.loc[2, "reap"] == pytest.approx(0.5 * 1.0)
    assert table.loc[3, "routed"] == 0  # never routed: listed, frequency 0, norms null
    assert np.isnan(table.loc[3, "ean"])
    assert (table["layer"] == 3).all()


@pytest.mark.parametrize(
    ("kind", "field", "label"),
    [
        ("loss-by-expert", "token_loss", None),
        ("loss-by-uncertainty", "token_loss", None),
        ("loss-by-label", "token_loss", "domain"),
        ("saliency", "expert_stats", None),
    ],
)
def test_runs_without_the_columns_are_refused(
    tmp_path: object, kind: str, field: str, label: str | None
) -> None:
    run = planted_run(Store(tmp_path), "bare", experts={0: [[0, 1]] * 3}, labels={"domain": ["a", "b", "c"]})
    with pytest.raises(InputError) as caught:
        compute(kind, run, label=label)
    assert caught.value.field == field
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("this run has no")


def test_the_kinds_run_on_a_recorded_run(tiny_lm: object, store: Store) -> None:
    import routescope

    texts = ["short text", "a somewhat longer sentence to force padding", "def f(x): return x * 2"]
    run = routescope.record(
        tiny_lm, texts, store=store, name="both", progress=False, token_loss=True, expert_stats=True
    )
    scored = int(run.tokens()["nll"].notna().sum())
    n_layers = len(run.info.routers)
    by_expert = compute("loss-by-expert", run, n_permutations=49)
    assert by_expert.groupby("layer")["tokens"].sum().tolist() == [scored] * n_layers
    assert "within units (sample)" in by_expert["method"].iloc[0]
    by_bin = compute("loss-by-uncertainty", run)
    assert by_bin.groupby("layer")["tokens"].sum().tolist() == [scored] * n_layers
    assert compute("loss-by-label", run, label="token")["tokens"].sum() == scored
    table = compute("saliency", run)
    assert len(table) == 8 * n_layers
    assert table["frequency"].groupby(table["layer"]).sum().round(6).tolist() == [2.0] * n_layers
    routed = table[table["routed"] > 0]
    assert (routed["reap"] <= routed["ean"]).all()  # Mixtral's gate weights sum to 1
    assert table.loc[table["routed"] == 0, "ean"].isna().all()


def test_report_cli_runs_the_kinds_and_renders_the_refusal(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from routescope.cli import main

    store = Store(tmp_path)
    rng = np.random.default_rng(1)
    planted_run(store, "loss", experts={0: _top1(rng)}, nll=rng.gamma(2.0, 1.0, N))
    planted_run(store, "bare", experts={0: [[0, 1]] * 3})
    base = ["report", "--store", str(store.path), "--format", "csv"]
    assert main([*base, "--run", "loss", "--kind", "loss-by-expert", "--param", "n_permutations=19"]) == 0
    assert capsys.readouterr().out.startswith("layer,expert,tokens,mean_nll")
    assert main([*base, "--run", "bare", "--kind", "loss-by-uncertainty"]) == 2
    error = capsys.readouterr().err
    assert error == (
        "routescope: error: this run has no token loss; record it with token loss (pass --token-loss)\n"
    )
    assert main([*base, "--run", "bare", "--kind", "saliency"]) == 2
    assert capsys.readouterr().err.endswith("(pass --expert-stats)\n")


def test_predicted_vocabulary_specialization_keys_on_the_prediction(tmp_path: object) -> None:
    """OLMoE's predicted-next-token view: each predicted token is routed to one expert (share 1), while
    the input token ids (sample % 3) are unrelated to the experts (sample % 4)."""
    store = Store(tmp_path)
    n = 48
    expert = np.arange(n) % 4
    routed = {0: [[int(e)] for e in expert]}
    run = planted_run(store, "vocab", experts=routed, nll=np.ones(n), predicted=expert + 10)
    predicted = vocabulary_specialization(run, target="predicted")
    assert predicted["token_id"].tolist() == [10, 11, 12, 13]
    assert predicted["top_expert"].tolist() == [0, 1, 2, 3]
    assert (predicted["share"] == 1.0).all()
    assert (vocabulary_specialization(run, target="input")["share"] < 0.5).all()
    bare = planted_run(store, "bare-vocab", experts=routed)
    with pytest.raises(InputError, match="token loss"):
        vocabulary_specialization(bare, target="predicted")
