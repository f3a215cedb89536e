"""Paper figures: every builder draws exactly its table's numbers and the paper template has the promised
sizes and font (export and the command line: tests/test_figure_export.py).

Runs: planted runs with known routing, and small real recordings of the bundled models (moe-lm on six
`bundled:domains` texts, dit-digits with 2 classes × 1 sample × 4 steps), made once per session
(tests/figure_runs.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from routescope import analysis as A
from routescope.figures import (
    TEMPLATE,
    figure_agreement,
    figure_balance,
    figure_batch_dependence,
    figure_changes,
    figure_coactivation,
    figure_embedding,
    figure_expert_similarity,
    figure_flip_rate,
    figure_load,
    figure_nmi,
    figure_paths,
    figure_repeat,
    figure_sensitivity,
    figure_spatial,
    figure_specialization,
    figure_step_similarity,
    figure_steps,
    figure_top_tokens,
    figure_transitions,
    figure_uncertain_labels,
    figure_uncertainty,
    figure_uncertainty_histogram,
    figure_vocabulary,
    make_figure,
    template,
    width_px,
)
from routescope.figures.axes import nice_stride
from routescope.figures.theme import CATEGORICAL, FONT_PT
from routescope.store import InputError, Store
from tests.planted import planted_run

SKEWED = {0: [[0]] * 6 + [[1]] * 2, 1: [[0], [1], [2], [3]] * 2}


@pytest.fixture
def runs(figure_runs: dict[str, Any]) -> dict[str, Any]:
    """The session's figure recordings (tests/figure_runs.py)."""
    return figure_runs


def z_of(fig: go.Figure, trace: int = 0) -> np.ndarray:
    return np.asarray(fig.data[trace].z, dtype=float)


# --- the paper template ---------------------------------------------------------------------------------


def test_template_sizes_font_and_palette() -> None:
    assert template() is template()  # registered once
    assert TEMPLATE in pio.templates
    assert width_px("single") == 317  # 3.3 in × 96 CSS px
    assert width_px("double") == 662  # 6.9 in
    assert width_px(2.0) == 192
    layout = pio.templates[TEMPLATE].layout
    assert layout.font.size == pytest.approx(FONT_PT * 96 / 72)  # 8 pt
    assert 8 <= layout.font.size * 72 / 96 <= 9
    assert "Helvetica" in layout.font.family
    assert list(layout.colorway) == CATEGORICAL
    assert CATEGORICAL[:3] == ["#0072B2", "#D55E00", "#009E73"]  # Okabe–Ito
    fig = figure_load(
        pd.DataFrame({"layer": [0, 0], "expert": [0, 1], "count": [1, 3], "load": [0.25, 0.75]})
    )
    assert (fig.layout.width, fig.layout.title.text) == (317, None)  # no in-figure title by default
    assert fig.layout.xaxis.title.text == "expert"
    assert fig.layout.yaxis.title.text == "layer"
    with pytest.raises(InputError, match="width"):
        width_px("triple")  # type: ignore[arg-type]


def test_large_axes_are_thinned_and_bucketed() -> None:
    assert [nice_stride(n) for n in (4, 12, 13, 30, 300, 1000)] == [1, 1, 2, 5, 50, 100]
    many = pd.DataFrame({"layer": 0, "expert": np.arange(300), "count": 1, "load": 1 / 300})
    fig = figure_load(many)
    assert (fig.layout.xaxis.dtick, fig.layout.xaxis.tick0) == (50, 0)
    # a sorted expert axis keeps every label up to 32 rows, then thins (300 experts: every 10th row)
    lift = pd.DataFrame(
        {"layer": 0, "expert": np.repeat(np.arange(300), 2), "domain": ["a", "b"] * 300, "count": 1}
    ).assign(share=0.5, lift=1.0, uniform_lift=1.0)
    assert len(figure_specialization(lift).layout.yaxis.tickvals) == 30
    assert len(figure_specialization(lift[lift.expert < 16]).layout.yaxis.tickvals) == 16
    # 1,000 steps pool into 200 bins of 5: expert 0 takes `step` tokens, expert 1 takes 1,000 − step
    steps = np.arange(1000)
    table = pd.DataFrame(
        {
            "layer": 0,
            "step": np.repeat(steps, 2),
            "expert": np.tile([0, 1], 1000),
            "count": np.column_stack([steps, 1000 - steps]).ravel(),
        }
    )
    fig = figure_steps(table)
    z = z_of(fig)
    assert z.shape == (2, 200)
    assert list(fig.data[0].x[:3]) == [0, 5, 10]
    assert z[0, 1] == pytest.approx(sum(range(5, 10)) / 5000)  # steps 5–9: Σ step / Σ 1,000
    assert "bins of 5" in fig.layout.xaxis.title.text


# --- builders draw their tables ---------------------------------------------------------------------------


def test_load_heatmap_is_the_load_table(store: Store) -> None:
    load = A.expert_load(planted_run(store, "skew", experts=SKEWED))
    fig = figure_load(load)
    assert z_of(fig).tolist() == [[0.75, 0.25, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]
    assert (list(fig.data[0].x), list(fig.data[0].y)) == ([0, 1, 2, 3], [0, 1])
    assert z_of(figure_load(load, value="count")).tolist()[0] == [6, 2, 0, 0]
    ranked = figure_load(pd.concat([load[load.layer == 0].iloc[::-1]]), sort=True)
    assert z_of(ranked).tolist() == [[0.75, 0.25, 0.0, 0.0]]
    assert ranked.layout.xaxis.title.text == "expert rank by load"


def test_balance_and_uncertainty_panels_are_their_tables(runs: dict[str, Any]) -> None:
    table = A.balance(runs["lm"])
    fig = figure_balance(table)
    assert len(fig.data) == 4
    for trace, metric in zip(fig.data, ("max_over_mean", "cv", "norm_entropy", "gini"), strict=True):
        assert list(trace.x) == table["layer"].tolist()
        assert list(trace.y) == pytest.approx(table[metric].tolist())
    by_step = A.balance(runs["dit"], by=("layer", "step"))
    fig = figure_balance(by_step, x="step")
    assert len(fig.data) == 4 * 4  # four panels × one line per layer
    layer2 = by_step[by_step.layer == 2].sort_values("step")
    assert list(fig.data[2].y) == pytest.approx(layer2["max_over_mean"].tolist())
    u = A.uncertainty(runs["lm"])
    fig = figure_uncertainty(u)
    assert list(fig.data[2].y) == pytest.approx(u["uncertain_share"].tolist())
    assert fig.layout.yaxis.title.text == "router entropy (norm.)"


def test_specialization_lift_on_a_log_scale_centred_at_one(store: Store) -> None:
    domains = ["a"] * 4 + ["b"] * 4
    run = planted_run(store, "dom", experts={0: [[0]] * 4 + [[1]] * 4}, labels={"domain": domains})
    fig = figure_specialization(A.specialization(run, "domain"))
    heat = fig.data[0]
    assert list(heat.x) == ["a", "b"]
    assert list(heat.y) == ["0", "1"]
    assert heat.customdata.tolist() == [[2.0, 0.0], [0.0, 2.0]]  # share 1 / load 1/2; never = 0
    assert z_of(fig)[0, 0] == pytest.approx(1.0)  # log₂ 2
    assert z_of(fig)[0, 1] == heat.zmin == -1.0  # lift 0 takes the bottom colour
    assert (heat.zmid, heat.colorbar.ticktext) == (0.0, ("1/2", "1", "2"))
    assert fig.layout.xaxis.title.text == "domain"


def test_specialization_of_a_real_run_and_one_layer(runs: dict[str, Any]) -> None:
    table = A.specialization(runs["lm"], "domain")
    fig = figure_specialization(table, layer=2)
    heat = fig.data[0]
    part = table[table.layer == 2].set_index(["expert", "domain"])["lift"]
    for i, expert in enumerate(heat.y):
        for j, domain in enumerate(heat.x):
            expected = part.get((int(expert), domain), 0.0)
            assert heat.customdata[i][j] == pytest.approx(expected)
    # sorted: the experts' preferred domains (argmax lift) never go back to an earlier column
    preferred = np.argmax(np.asarray(heat.customdata), axis=1)
    assert (np.diff(preferred) >= 0).all()
    with pytest.raises(InputError, match="pass a layer"):
        figure_specialization(table)
    with pytest.raises(InputError, match="no layer 9"):
        figure_specialization(table, layer=9)


def test_nmi_and_sensitivity_lines(runs: dict[str, Any]) -> None:
    nmi = A.label_nmi(runs["lm"], "domain")
    fig = figure_nmi(nmi, label="domain")
    assert list(fig.data[0].y) == pytest.approx(nmi["nmi"].tolist())
    assert fig.layout.yaxis.title.text == "NMI(expert; domain)"
    table = A.sensitivity(runs["dit"])
    fig = figure_sensitivity(table)
    assert {trace.name for trace in fig.data} >= {"class", "patch row", "patch column", "step"}
    for trace in fig.data:
        label = {"patch row": "row", "patch column": "col"}.get(trace.name, trace.name)
        expected = table[table.label == label].sort_values("layer")["nmi"].tolist()
        assert list(trace.y) == pytest.approx(expected)


def test_uncertainty_histogram_is_numpys(runs: dict[str, Any]) -> None:
    run = runs["lm"]
    decisions = run.decisions()
    decisions["norm_entropy"] = decisions["entropy"] / np.log(16)  # moe-lm: 16 experts per layer
    fig = figure_uncertainty_histogram(decisions, bins=10)
    assert len(fig.data) == 4
    for layer, trace in enumerate(fig.data):
        values = decisions.loc[decisions.layer == layer, "norm_entropy"]
        counts, edges = np.histogram(values, bins=np.linspace(0, 1, 11))
        assert list(trace.y) == pytest.approx((counts / len(values)).tolist())
        assert list(trace.x) == pytest.approx(((edges[:-1] + edges[1:]) / 2).tolist())
    fig, _ = make_figure("uncertainty-histogram", run, by="domain", layer=0)
    assert sorted(trace.name for trace in fig.data) == ["arithmetic", "code", "prose"]
    assert sum(fig.data[0].y) == pytest.approx(1.0)


def test_coactivation_lift_and_undefined_diagonal(store: Store) -> None:
    # 3 of 4 decisions choose {0, 1}, one {2, 3}: lift(0, 1) = (3/4) / (3/4 · 3/4) = 4/3, lift(0, 2) = 0
    run = planted_run(store, "co", experts={0: [[0, 1]] * 3 + [[2, 3]]})
    fig = figure_coactivation(A.coactivation(run, 0))
    heat = fig.data[0]
    assert heat.customdata[0][1] == pytest.approx(4 / 3)
    assert z_of(fig)[0, 1] == pytest.approx(math.log2(4 / 3))
    assert heat.customdata[2][3] == pytest.approx(4.0)
    assert heat.customdata[0][2] == 0.0
    assert z_of(fig)[0, 2] == heat.zmin
    assert np.isnan(np.diag(z_of(fig))).all()
    assert fig.layout.plot_bgcolor == "#D9D9D9"  # undefined cells are grey, not neutral white


def test_transitions_and_expert_similarity(runs: dict[str, Any]) -> None:
    run = runs["lm"]
    table = A.transitions(run)
    fig = figure_transitions(table, layer=1)
    z = z_of(fig)
    part = table[table.layer == 1]
    for row in part.itertuples():
        assert z[row.expert, row.next_expert] == pytest.approx(row.share)
    assert z.sum() == pytest.approx(part["expert"].nunique())  # each seen expert's row sums to 1
    assert fig.layout.yaxis.title.text == "expert at layer 1"
    assert fig.layout.xaxis.title.text == "expert at layer 2"
    similarity = A.expert_similarity(run, 0)
    fig = figure_expert_similarity(similarity)
    expected = similarity.pivot(index="expert_a", columns="expert_b", values="similarity").to_numpy()
    assert z_of(fig) == pytest.approx(expected)
    groups = A.merge_groups(run, 0, n_groups=4)
    grouped = figure_expert_similarity(similarity, groups=groups)
    order = [int(e) for e in grouped.data[0].y]
    assert z_of(grouped) == pytest.approx(expected[np.ix_(order, order)])
    assert groups.set_index("expert").loc[order, "group"].is_monotonic_increasing
    assert len(grouped.layout.shapes) == 4


def test_repeat_agreement_and_top_tokens(runs: dict[str, Any]) -> None:
    run = runs["lm"]
    repeat = A.repeat_rate(run)
    fig = figure_repeat(repeat)
    by_name = {trace.name: list(trace.y) for trace in fig.data}
    assert by_name["same top-1"] == pytest.approx(repeat["top1_repeat"].tolist())
    assert by_name["same top-1, chance (observed loads)"] == pytest.approx(repeat["baseline_top1"].tolist())
    assert by_name["top-1 in next top-k, chance (observed loads)"] == pytest.approx(
        repeat["baseline_topk"].tolist()
    )
    assert "same top-1, uniform router" not in by_name
    by_name = {trace.name: list(trace.y) for trace in figure_repeat(repeat, uniform=True).data}
    assert by_name["same top-1, uniform router"] == pytest.approx([1 / 16] * 4)
    assert by_name["top-1 in next top-k, uniform router"] == pytest.approx([2 / 16] * 4)
    fig = figure_agreement(A.agreement(run, run))
    assert [list(trace.y) for trace in fig.data] == [[1.0] * 4, [1.0] * 4]  # a run agrees with itself
    top = A.top_tokens(run, 0, 3)
    fig = figure_top_tokens(top)
    assert list(fig.data[0].x) == top["count"].tolist()[:20]
    tricky = pd.DataFrame({"token_id": [7, 8], "token": ["<b>&", " the"], "count": [2, 1]})
    labels = figure_top_tokens(tricky).layout.yaxis.ticktext
    assert labels == ("&lt;b&gt;&amp;", "␣the")  # escaped for plotly's HTML, whitespace visible


def test_steps_and_step_similarity_with_phases(runs: dict[str, Any]) -> None:
    run = runs["dit"]
    table = A.steps(run)
    fig = figure_steps(table, layer=0, noise=run.steps())
    expected = table[table.layer == 0].pivot(index="expert", columns="step", values="load").to_numpy()
    assert z_of(fig) == pytest.approx(expected)
    assert fig.layout.xaxis.title.text == "timestep (noise level)"
    assert list(fig.layout.xaxis.ticktext) == [f"{t:g}" for t in run.steps()["timestep"]]
    similarity = A.step_similarity(run)
    phases = A.denoising_phases(run)
    fig = figure_step_similarity(similarity, layer=3, phases=phases)
    expected = similarity[similarity.layer == 3].pivot(index="step_a", columns="step_b", values="js")
    assert z_of(fig) == pytest.approx(expected.to_numpy())
    own = phases[phases.layer == 3].sort_values("step")["phase"].to_numpy()
    boundaries = [s for s in range(1, 4) if own[s] != own[s - 1]]
    assert sorted({shape.x0 for shape in fig.layout.shapes if shape.x0 == shape.x1}) == [
        b - 0.5 for b in boundaries
    ]


def test_spatial_maps_are_groupby_of_the_run(runs: dict[str, Any]) -> None:
    run = runs["dit"]
    tokens = run.tokens()[["sample", "position", "row", "col"]]
    routed = run.assignments().query("not dropped").merge(tokens, on=["sample", "position"])
    counts = routed.groupby(["layer", "expert", "row", "col"], as_index=False).size()
    counts = counts.rename(columns={"size": "count"})
    counts["share"] = counts["count"] / counts.groupby(["layer", "row", "col"])["count"].transform("sum")
    fig = figure_spatial(counts, layer=1)
    experts = sorted(counts.loc[counts.layer == 1, "expert"].unique())
    assert len(fig.data) == len(experts)
    for trace, expert in zip(fig.data, experts, strict=True):
        grid = np.zeros((4, 4))
        part = counts[(counts.layer == 1) & (counts.expert == expert)]
        grid[part["row"], part["col"]] = part["share"]
        assert z_of(fig, list(fig.data).index(trace)) == pytest.approx(grid)
    assert fig.layout.coloraxis.cmax == pytest.approx(counts.loc[counts.layer == 1, "share"].max())
    assert fig.layout.annotations[0].text == f"expert {experts[0]}"
    analysis = A.spatial_preference(run, layer=1)  # the analysis agrees with the groupby
    assert figure_spatial(analysis).data[0].z == pytest.approx(fig.data[0].z)


def test_embedding_colours_by_label() -> None:
    table = pd.DataFrame(
        {"x": [0.0, 1.0, 2.0, 3.0], "y": [1.0, 0.0, 1.0, 0.0], "domain": ["code", "prose", "code", "<i>"]}
    )
    fig = figure_embedding(table, color="domain")
    assert [trace.name for trace in fig.data] == ["&lt;i&gt;", "code", "prose"]
    assert list(fig.data[1].x) == [0.0, 2.0]
    assert [trace.marker.color for trace in fig.data] == CATEGORICAL[:3]
    crowded = table.assign(token=["a", "b", "c", "d"])
    fig = figure_embedding(crowded, color="token", max_categories=2)
    assert [trace.name for trace in fig.data] == ["a", "b", "other"]
    continuous = figure_embedding(table.assign(norm=[0.1, 0.2, 0.3, 0.4]), color="norm")
    assert list(continuous.data[0].marker.color) == [0.1, 0.2, 0.3, 0.4]
    with pytest.raises(InputError, match="no column"):
        figure_embedding(table, color="nope")


def test_paths_bars_are_the_paths_table(store: Store) -> None:
    # layer 0 takes expert 0 six times of eight, layer 1 each expert twice: path 0>0 has share 2/8 and,
    # with independent layers, 3/4 · 1/4 = 0.1875
    table = A.expert_paths(planted_run(store, "paths", experts=SKEWED))
    fig = figure_paths(table)
    observed, independent = fig.data
    assert (observed.name, independent.name) == ("observed", "layers independent")
    assert list(observed.x) == pytest.approx(table["share"].tolist())
    assert list(independent.x) == pytest.approx(table["baseline_share"].tolist())
    assert fig.layout.yaxis.ticktext[:2] == ("0&gt;0", "0&gt;1")  # escaped for plotly's HTML: 0>0
    assert (observed.x[0], independent.x[0]) == pytest.approx((0.25, 0.1875))
    assert [row[1] for row in observed.customdata] == pytest.approx(table["lift"].tolist())
    assert fig.layout.yaxis.autorange == "reversed"  # most frequent on top
    two = figure_paths(pd.concat([table, table.assign(stack="encoder")]), top=2)
    assert two.layout.yaxis.ticktext == (
        "decoder: 0&gt;0",
        "decoder: 0&gt;1",
        "encoder: 0&gt;0",
        "encoder: 0&gt;1",
    )
    with pytest.raises(InputError, match="top must be"):
        figure_paths(table, top=0)


def test_vocabulary_cdf_is_the_count_weighted_share(store: Store, runs: dict[str, Any]) -> None:
    # token ids 0, 1, 2, 0, 1, 2 (planted: id = sample % 3): id 0 → experts 0, 0 (share 1), id 1 → 0, 1
    # (share 1/2), id 2 → 1, 1 (share 1); each id twice, so a third of the tokens sit at 1/2
    run = planted_run(store, "vocab", experts={0: [[0], [0], [1], [0], [1], [1]]})
    fig = figure_vocabulary(A.vocabulary_specialization(run), n_experts=4)
    assert (list(fig.data[0].x), list(fig.data[0].y)) == ([0.0, 0.5, 1.0], pytest.approx([0, 1 / 3, 1]))
    assert [shape.x0 for shape in fig.layout.shapes] == [0.25]  # the uniform router, 1/E
    table = A.vocabulary_specialization(runs["lm"])
    fig = figure_vocabulary(table, n_experts={layer: 16 for layer in range(4)})
    observed, chance = fig.data[:4], fig.data[4:]
    assert [trace.name for trace in observed] == [f"layer {layer}" for layer in range(4)]
    assert [trace.name for trace in chance] == ["chance (observed loads)"] * 4
    for layer, (trace, level) in enumerate(zip(observed, chance, strict=True)):
        part = table[table.layer == layer]
        for x, y in zip(trace.x[1:], trace.y[1:], strict=True):
            assert y == pytest.approx(part.loc[part.share <= x, "count"].sum() / part["count"].sum())
        assert sorted(trace.x[1:]) == sorted(part["share"].unique())
        for x, y in zip(level.x[1:], level.y[1:], strict=True):
            assert y == pytest.approx(part.loc[part.baseline_share <= x, "count"].sum() / part["count"].sum())
    assert len(figure_vocabulary(table, chance=False).data) == 4
    assert [shape.x0 for shape in fig.layout.shapes] == [1 / 16]
    frequent = figure_vocabulary(table, min_count=3)
    assert frequent.data[0].y[1] == pytest.approx(
        (lambda p: p.loc[p.share <= frequent.data[0].x[1], "count"].sum() / p["count"].sum())(
            table[(table.layer == 0) & (table["count"] >= 3)]
        )
    )
    with pytest.raises(InputError, match="no token id is seen"):
        figure_vocabulary(table, min_count=10**9)


def test_uncertain_labels_bars_are_the_most_uncertain_values(store: Store, runs: dict[str, Any]) -> None:
    # domain a: two uniform routers (entropy / ln 4 = 1, uncertain); b and <b>: sure, <b> less so (0.68)
    probs = np.array([[0.25] * 4, [0.97, 0.01, 0.01, 0.01], [0.25] * 4, [0.7, 0.1, 0.1, 0.1]])
    run = planted_run(
        store, "unc", experts={0: [[0]] * 4}, probs={0: probs}, labels={"domain": ["a", "b", "a", "<b>"]}
    )
    fig = figure_uncertain_labels(A.uncertainty_by_label(run, "domain", min_count=1), label="domain")
    assert fig.layout.yaxis.ticktext == ("a", "&lt;b&gt;", "b")
    assert list(fig.data[0].x) == [1.0, 0.0, 0.0]
    assert list(fig.data[0].text) == ["2", "1", "1"]  # decisions per value
    table = A.uncertainty_by_label(runs["lm"], "token")
    fig, drawn = make_figure("uncertain-labels", runs["lm"], layer=1, by="token")
    pd.testing.assert_frame_equal(drawn, table)
    part = table[table.layer == 1].head(15)
    assert list(fig.data[0].x) == pytest.approx(part["uncertain_share"].tolist())
    assert list(fig.data[0].text) == [f"{n:,}" for n in part["decisions"]]
    assert fig.layout.yaxis.title.text == "token"
    with pytest.raises(InputError, match="needs a label"):
        make_figure("uncertain-labels", runs["lm"], layer=1)


def test_merge_groups_kind_outlines_half_as_many_groups(runs: dict[str, Any]) -> None:
    run = runs["lm"]  # recorded with probabilities: router-score similarity, 16 experts → 8 groups
    fig, groups = make_figure("merge-groups", run, layer=2)
    pd.testing.assert_frame_equal(groups, A.merge_groups(run, 2, n_groups=8))
    similarity = A.expert_similarity(run, 2)
    expected = similarity.pivot(index="expert_a", columns="expert_b", values="similarity").to_numpy()
    order = [int(e) for e in fig.data[0].y]
    assert z_of(fig) == pytest.approx(expected[np.ix_(order, order)])
    assert len(fig.layout.shapes) == groups["group"].nunique() == 8


def test_probe_kinds_draw_two_runs(store: Store) -> None:
    # top-1 (first listed, equal weights) changes for samples 0, 2, 3; the expert set only for sample 3
    base = planted_run(store, "base", experts={0: [[0, 1], [2, 3], [1, 0], [0, 2]]})
    probed = planted_run(store, "probed", experts={0: [[1, 0], [2, 3], [0, 1], [2, 3]]})
    fig, table = make_figure("changes", base, other=probed)
    assert table["flipped"].tolist() == [True, False, True, True]
    assert [list(trace.y) for trace in fig.data] == [[0.75], [0.25]]
    assert list(fig.data[0].x) == ["layer 0"]
    assert figure_changes(table).data[1].y == fig.data[1].y
    fig, table = make_figure("flips", base, other=probed)
    pd.testing.assert_frame_equal(table, A.flip_rate(base, probed))
    assert (list(fig.data[0].y), list(fig.data[1].y)) == ([0.75], [0.25])  # all margins 0: one bucket
    assert figure_flip_rate(table).data[0].y == fig.data[0].y
    fig, table = make_figure("batch-dependence", base, other=probed)
    assert table["changed_share"].tolist() == [0.25]
    assert list(fig.data[0].y) == [0.25] == list(figure_batch_dependence(table).data[0].y)
    for kind in ("changes", "flips", "batch-dependence"):
        with pytest.raises(InputError, match="needs a second run"):
            make_figure(kind, base)
