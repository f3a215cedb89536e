"""The figure kinds of the on-request statistics (saliency, loss by uncertainty / expert / label, vocabulary
on the predicted token) and of the two-run consistency kinds (rank consistency, boundary flips, replay per
sample), each made through the registry on a real recording of bundled:moe-lm (expert stats, token loss
and probabilities kept; its noisy twin recorded by the noise probe) and compared with the analysis table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import routescope
from routescope import analysis as A
from routescope.figures import (
    FIGURES,
    figure_loss_by_expert,
    figure_loss_by_uncertainty,
    figure_saliency,
    make_figure,
    standard_set,
)
from routescope.probes import RecordOptions, probe_noise
from routescope.store import InputError, Store


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`full` (moe-lm, 6 domain texts, probs + token loss + expert stats), `noisy` (the same texts with
    logit noise, probs) and `plain` (the same texts, nothing on request)."""
    store = Store(tmp_path_factory.mktemp("statistics") / "store")
    texts, labels = routescope.load_dataset("bundled:domains")
    keep = [
        i
        for d in ("prose", "code", "arithmetic")
        for i in np.flatnonzero(np.array(labels["domain"]) == d)[:2]
    ]
    chosen = [texts[i][:160] for i in keep]
    domain = {"domain": [labels["domain"][i] for i in keep]}
    lm = routescope.load_model("bundled:moe-lm")
    common = {"store": store, "labels": domain, "progress": False}
    full = routescope.record(
        lm, chosen, name="full", probs=True, token_loss=True, expert_stats=True, **common
    )
    plain = routescope.record(lm, chosen, name="plain", **common)
    noisy = probe_noise(
        lm,
        chosen,
        store=store,
        name="noisy",
        sigma=1.0,
        on="logits",
        options=RecordOptions(labels=domain, probs=True),
    )
    return {"full": full, "plain": plain, "noisy": noisy, "store": store}


def values(trace_values: Any) -> np.ndarray:
    return np.asarray(trace_values, dtype=float)


def test_saliency_heatmap_is_the_chosen_criterion(runs: dict[str, Any]) -> None:
    run = runs["full"]
    fig, table = make_figure("saliency", run)
    pd.testing.assert_frame_equal(table, A.compute("saliency", run))
    for criterion in ("reap", "ean", "max_activation", "frequency"):
        drawn = fig if criterion == "reap" else figure_saliency(table, criterion=criterion)
        expected = table.pivot(index="layer", columns="expert", values=criterion).to_numpy(dtype=float)
        np.testing.assert_allclose(values(drawn.data[0].z), expected, equal_nan=True)
        assert drawn.data[0].colorbar.title.text
    np.testing.assert_array_equal(
        values(fig.data[0].customdata), table.pivot(index="layer", columns="expert", values="routed")
    )
    assert table["routed"].sum() > 0
    with pytest.raises(InputError, match="criterion must be one of"):
        figure_saliency(table, criterion="norm")  # type: ignore[arg-type]


def test_saliency_criterion_from_make_figure_and_the_cli(
    runs: dict[str, Any], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from routescope.cli import main

    run = runs["full"]
    fig, table = make_figure("saliency", run, criterion="ean")
    expected = table.pivot(index="layer", columns="expert", values="ean").to_numpy(dtype=float)
    np.testing.assert_allclose(values(fig.data[0].z), expected, equal_nan=True)
    base = ["figure", "--store", str(runs["store"].path), "--run", "full"]
    out = tmp_path / "ean.svg"
    assert main([*base, "--kind", "saliency", "--criterion", "ean", "--out", str(out)]) == 0
    assert "mean output norm (EAN)" in out.read_text()
    capsys.readouterr()
    for bad, message in (
        (["--kind", "load", "--criterion", "ean"], "figure load takes no criterion"),
        (["--kind", "saliency", "--criterion", "norm"], "unknown saliency criterion 'norm'"),
        (["--all", "--criterion", "ean"], "--criterion goes with --kind"),
    ):
        assert main([*base, *bad, "--out", str(tmp_path / "bad.svg")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        assert message in lines[0]
    assert not (tmp_path / "bad.svg").exists()


def test_loss_by_uncertainty_lines_are_the_binned_means(runs: dict[str, Any]) -> None:
    run = runs["full"]
    fig, table = make_figure("loss-by-uncertainty", run)
    pd.testing.assert_frame_equal(table, A.compute("loss-by-uncertainty", run))
    layers = sorted(table["layer"].unique())
    assert [trace.name for trace in fig.data] == [f"layer {layer}" for layer in layers]
    for trace, layer in zip(fig.data, layers, strict=True):
        part = table[table["layer"] == layer].sort_values("bin")
        np.testing.assert_allclose(values(trace.y), part["mean_nll"])
        np.testing.assert_allclose(values(trace.x), (part["bin_low"] + part["bin_high"]) / 2)
        np.testing.assert_array_equal(values(trace.customdata), part[["tokens", "ci_low", "ci_high"]])
        # a bin only one sequence holds has no interval (NaN) and is drawn without an error bar
        np.testing.assert_allclose(
            values(trace.error_y.array), np.nan_to_num(part["ci_high"] - part["mean_nll"])
        )
        np.testing.assert_allclose(
            values(trace.error_y.arrayminus), np.nan_to_num(part["mean_nll"] - part["ci_low"])
        )
    held = table.dropna(subset=["ci_low"])
    assert len(held) > len(table) / 2
    assert (held["ci_low"] <= held["mean_nll"]).all()
    assert (held["mean_nll"] <= held["ci_high"]).all()
    assert fig.layout.yaxis.title.text == "loss (nats) ± 95% CI"
    assert "over sample" in fig.data[0].hovertemplate  # the unit the interval resamples
    scored = int(run.tokens()["nll"].notna().sum())
    assert table.groupby("layer")["tokens"].sum().tolist() == [scored] * len(layers)


def test_loss_by_uncertainty_draws_an_interval_only_where_the_table_has_one() -> None:
    table = pd.DataFrame(
        {"layer": [0, 0], "bin": [0, 1], "bin_low": [0.0, 0.5], "bin_high": [0.5, 1.0], "tokens": [4, 6],
         "mean_nll": [2.0, 3.0]}
    )  # fmt: skip
    assert figure_loss_by_uncertainty(table).data[0].error_y.array is None
    with_ci = table.assign(ci_low=[1.5, 2.0], ci_high=[2.25, 4.0], level=0.95, unit="sample")
    bars = figure_loss_by_uncertainty(with_ci).data[0].error_y
    np.testing.assert_allclose(bars.array, [0.25, 1.0])
    np.testing.assert_allclose(bars.arrayminus, [0.5, 1.0])


def test_loss_by_expert_bars_are_one_layers_means(runs: dict[str, Any]) -> None:
    run = runs["full"]
    fig, table = make_figure("loss-by-expert", run, layer=1)
    pd.testing.assert_frame_equal(table, A.compute("loss-by-expert", run))
    part = table[table["layer"] == 1].sort_values("expert")
    bars = fig.data[0]
    assert [int(x) for x in bars.x] == part["expert"].tolist()
    np.testing.assert_allclose(values(bars.y), part["mean_nll"])
    np.testing.assert_allclose(values(bars.customdata)[:, 1], part["excess_nll"])
    np.testing.assert_allclose(values(bars.error_y.array), part["ci_high"] - part["mean_nll"])
    mean = float(np.average(part["mean_nll"], weights=part["tokens"]))
    assert fig.layout.shapes[0].y0 == pytest.approx(mean)  # the layer's mean, dashed
    assert f"p = {float(part['p_value'].iloc[0]):.3g}" in fig.layout.annotations[0].text
    with pytest.raises(InputError, match="needs a layer"):
        make_figure("loss-by-expert", run)
    with pytest.raises(InputError, match="pass a layer"):
        figure_loss_by_expert(table)


def test_loss_by_label_bars_are_the_label_means(runs: dict[str, Any]) -> None:
    run = runs["full"]
    fig, table = make_figure("loss-by-label", run, by="domain")
    pd.testing.assert_frame_equal(table, A.compute("loss-by-label", run, label="domain"))
    expected = table.sort_values("mean_nll", ascending=False)
    assert list(fig.data[0].y) == expected["domain"].tolist()
    np.testing.assert_allclose(values(fig.data[0].x), expected["mean_nll"])
    tokens_fig, tokens = make_figure("loss-by-label", run, by="token")
    assert len(tokens_fig.data[0].y) == min(15, len(tokens))
    assert values(tokens_fig.data[0].x)[0] == pytest.approx(tokens["mean_nll"].max())


def test_vocabulary_of_the_predicted_token(runs: dict[str, Any]) -> None:
    run = runs["full"]
    fig, table = make_figure("vocabulary-predicted", run)
    pd.testing.assert_frame_equal(table, A.vocabulary_specialization(run, target="predicted"))
    predicted = run.tokens()["predicted"]
    assert set(table["token_id"]) <= set(predicted)
    assert "predicted token" in fig.layout.xaxis.title.text
    first = table[table["layer"] == table["layer"].min()]
    assert values(fig.data[0].y)[-1] == pytest.approx(1.0)  # a CDF over that layer's tokens
    assert len(fig.data[0].x) == first["share"].nunique() + 1


def test_runs_without_the_statistics_are_refused_and_left_out(runs: dict[str, Any]) -> None:
    plain = runs["plain"]
    for kind, words in (
        ("saliency", "record it with expert stats"),
        ("loss-by-uncertainty", "record it with token loss"),
        ("vocabulary-predicted", "record it with token loss"),
    ):
        with pytest.raises(InputError, match=words):
            make_figure(kind, plain)
    on_request = {"saliency", "loss-by-uncertainty", "loss-by-label-domain", "vocabulary-predicted"}
    assert not on_request & {f.stem for f in standard_set(plain)}
    full = {f.stem for f in standard_set(runs["full"])}
    assert on_request | {"loss-by-expert-layer0", "loss-by-expert-layer3"} <= full
    assert not {"rank-consistency", "boundary-flips", "replay-samples"} & full  # need a second run


def test_rank_consistency_lines_are_the_table(runs: dict[str, Any]) -> None:
    full, noisy = runs["full"], runs["noisy"]
    fig, table = make_figure("rank-consistency", full, other=noisy)
    pd.testing.assert_frame_equal(table, A.rank_consistency(full, noisy))
    assert table["mean_tau"].lt(1).all()  # the noise reorders experts
    by_name = {trace.name: trace for trace in fig.data}
    np.testing.assert_allclose(values(by_name["Kendall τ (mean)"].y), table["mean_tau"])
    np.testing.assert_allclose(values(by_name["same top-k set"].y), table["share_same_set"])
    np.testing.assert_allclose(values(by_name["Kendall τ (lowest)"].y), table["min_tau"])
    with pytest.raises(InputError, match="needs a second run"):
        make_figure("rank-consistency", full)


def test_boundary_flips_bars_are_the_flip_shares(runs: dict[str, Any]) -> None:
    full, noisy = runs["full"], runs["noisy"]
    fig, table = make_figure("boundary-flips", full, other=noisy)
    pd.testing.assert_frame_equal(table, A.boundary_flips(full, noisy))
    bars = fig.data[0]
    np.testing.assert_allclose(values(bars.y), table["flip_share"])
    np.testing.assert_array_equal(values(bars.customdata), table[["flips", "decisions"]])
    assert table["flips"].sum() > 0
    assert f"{table['spearman'].iloc[0]:.2f}" in fig.layout.annotations[0].text


def test_replay_samples_bars_are_the_per_sample_shares(runs: dict[str, Any]) -> None:
    full, noisy = runs["full"], runs["noisy"]
    fig, table = make_figure("replay-samples", full, other=noisy)
    pd.testing.assert_frame_equal(table, A.replay_by_sample(full, noisy))
    assert list(fig.data[0].x) == table["sample"].tolist()
    np.testing.assert_allclose(values(fig.data[0].y), table["share_differing"])
    np.testing.assert_allclose(values(fig.data[1].y), table["share_decisions"])
    assert table["share_differing"].gt(0).any()


def test_new_kinds_are_registered_with_their_analyses() -> None:
    expected = {
        "saliency": "saliency",
        "loss-by-uncertainty": "loss-by-uncertainty",
        "loss-by-expert": "loss-by-expert",
        "loss-by-label": "loss-by-label",
        "vocabulary-predicted": "vocabulary",
        "rank-consistency": "rank-consistency",
        "boundary-flips": "boundary-flips",
        "replay-samples": "replay-samples",
    }
    assert {name: FIGURES[name].analysis for name in expected} == expected
