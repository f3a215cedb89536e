"""The dashboard's analysis pages (Experts, Noise steps, Balance & uncertainty, Embeddings, Compare) driven
by Streamlit's AppTest on runs recorded from the bundled models, their export menu, and one real server
in headless Chromium that records a DiT run from the Run page and opens Noise steps.

Every page test finds its widgets by key and its charts by their keys, and compares what a chart draws
with the analysis table computed here directly from the run.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import routescope
from routescope import analysis as A
from routescope.dashboard import ENTRY_SCRIPT, STORE_ENV, state
from routescope.dashboard.app_pages import PAGES
from routescope.dashboard.exports import figure_bytes
from routescope.figures import figure_load
from routescope.store import Run, Store
from routescope.store.reader import INCOMPLETE_DIR
from tests.dashboard_server import running_dashboard

ARTIFACTS = Path(__file__).parent / "artifacts"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
S = state.scoped


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`text` (moe-lm, 6 domain texts, probs, 2 generated tokens), `text-b` (the same texts one at a time,
    no probs) and `digits` (dit-digits, classes 3 and 7, 3 steps, x̂₀ kept)."""
    folder = tmp_path_factory.mktemp("pages") / "store"
    texts, labels = routescope.load_dataset("bundled:domains")
    domains = np.array(labels["domain"])
    keep = [i for d in ("prose", "code", "arithmetic") for i in np.flatnonzero(domains == d)[:2]]
    chosen, domain = [texts[i][:160] for i in keep], {"domain": [str(domains[i]) for i in keep]}
    lm = routescope.load_model("bundled:moe-lm")
    common = {"store": folder, "labels": domain, "progress": False}
    routescope.record(lm, chosen, name="text", probs=True, max_new_tokens=2, **common)
    routescope.record(lm, chosen, name="text-b", batch_size=1, **common)
    dit = routescope.load_model("bundled:dit-digits")
    routescope.record_diffusion(
        dit, classes=[3, 7], samples_per_class=1, steps=3, store=folder, name="digits", save_x0=True
    )
    return folder


def open_page(store: Path, monkeypatch: pytest.MonkeyPatch, file: str, run_key: str, run: str) -> AppTest:
    monkeypatch.setenv(STORE_ENV, str(store))
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=240).run()
    at.switch_page(f"app_pages/{file}").run()
    at.selectbox(key=run_key).set_value(run).run()
    assert not at.exception
    return at


def array(value: Any) -> np.ndarray:
    """A plotly JSON array: plain lists, or the typed base64 arrays plotly writes for numpy data."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = [int(s) for s in str(value.get("shape", len(data))).split(",")]
        return data.reshape(shape).astype(float)
    return np.array([np.nan if v is None else v for v in np.ravel(value)], dtype=float).reshape(
        np.shape(value)
    )


def charts(at: AppTest) -> dict[str, dict[str, Any]]:
    """Every plotly chart on the page as its figure JSON, by the chart's widget key."""
    return {
        element.proto.id.split("-", 2)[2]: json.loads(element.proto.spec)
        for element in at.get("plotly_chart")
    }


def layer_matrix(table: pd.DataFrame, index: str, columns: str, values: str, size: int) -> np.ndarray:
    wide = table.pivot_table(index=index, columns=columns, values=values, aggfunc="sum")
    return wide.reindex(columns=range(size)).fillna(0.0).to_numpy(dtype=float)


def router_of(run: Run, layer: int) -> int:
    return next(int(r["id"]) for r in run.routers if int(r["layer"]) == layer)


# --- Experts ---------------------------------------------------------------------------------------------


def test_experts_page_overview_and_card_equal_the_analyses(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch, "experts.py", state.EXPERTS_RUN, "text")
    run = Store(store_dir).open("text")
    assert at.selectbox(key=S(state.EXPERTS_LABEL, "text")).value == "domain"
    at.selectbox(key=S(state.EXPERTS_LAYER, "text")).set_value(1).run()
    load = A.expert_load(run)
    busiest = int(load[load["layer"] == 1].sort_values("count", ascending=False)["expert"].iloc[0])
    at.selectbox(key=S(state.EXPERTS_EXPERT, "text", 1)).set_value(busiest).run()
    assert not at.exception
    drawn = charts(at)
    assert sorted(drawn) == sorted(
        [
            S(state.EXPERTS_LOAD_CHART, "text"),
            S(state.EXPERTS_LIFT_CHART, "text", "domain"),
            S(state.EXPERTS_TOKENS_CHART, "text", 1, busiest),
            S(state.EXPERTS_PARTNERS_CHART, "text", 1, busiest),
            S(state.EXPERTS_STEPS_CHART, "text", busiest),
            S(state.EXPERTS_TOKEN_CHART, "text", "vocabulary"),  # the token-routing section's first view
        ]
    )
    np.testing.assert_allclose(
        array(drawn[S(state.EXPERTS_LOAD_CHART, "text")]["data"][0]["z"]),
        layer_matrix(load, "layer", "expert", "load", 16),
    )
    # the specialization overview: log2 of each expert's largest lift over the domains
    spec = A.specialization(run, "domain")
    peak = spec.groupby(["layer", "expert"])["lift"].max().unstack().reindex(columns=range(16))
    with np.errstate(divide="ignore"):
        expected = np.log2(peak.to_numpy(dtype=float))
    z = array(drawn[S(state.EXPERTS_LIFT_CHART, "text", "domain")]["data"][0]["z"])
    np.testing.assert_allclose(z[np.isfinite(expected)], expected[np.isfinite(expected)], rtol=1e-6)

    # the card: its numbers, its labels, its tokens (with lift), its partners, its steps
    row = load[(load["layer"] == 1) & (load["expert"] == busiest)].iloc[0]
    assert at.metric[0].value == f"{int(row['count']):,}"
    assert at.metric[2].value == f"1 of {int((load['layer'] == 1).sum())}"
    labels = at.dataframe[0].value
    own = spec[(spec["layer"] == 1) & (spec["expert"] == busiest)].set_index("domain")
    assert labels["lift"].tolist() == sorted(labels["lift"], reverse=True)
    np.testing.assert_allclose(labels["count"], own.loc[labels["domain"], "count"])
    np.testing.assert_allclose(labels["lift"], own.loc[labels["domain"], "lift"])
    tokens = at.dataframe[1].value
    top = A.top_tokens(run, 1, busiest, n=20)
    assert tokens["token_id"].tolist() == top["token_id"].tolist()
    np.testing.assert_allclose(tokens["share"], top["share"])
    by_token = A.specialization(run, "token_id")
    by_token = by_token[(by_token["layer"] == 1) & (by_token["expert"] == busiest)].set_index("token_id")
    np.testing.assert_allclose(tokens["lift"], by_token.loc[tokens["token_id"], "lift"], rtol=1e-9)
    partners = A.coactivation(run, 1)
    partners = partners[partners["expert_a"] == busiest].sort_values(
        ["p_b_given_a", "expert_b"], ascending=[False, True]
    )
    bars = drawn[S(state.EXPERTS_PARTNERS_CHART, "text", 1, busiest)]["data"][0]
    assert bars["x"] == [str(e) for e in partners["expert_b"].head(10)]
    np.testing.assert_allclose(array(bars["y"]), partners["p_b_given_a"].head(10))
    steps = A.steps(run)
    lines = drawn[S(state.EXPERTS_STEPS_CHART, "text", busiest)]["data"]
    mine = steps[(steps["expert"] == busiest) & (steps["layer"] == 1)].set_index("step")["load"]
    np.testing.assert_allclose(array(lines[1]["y"]), mine.reindex(run.steps()["step"]).fillna(0.0))


def test_experts_page_of_a_diffusion_run_has_no_token_chart(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch, "experts.py", state.EXPERTS_RUN, "digits")
    assert at.selectbox(key=S(state.EXPERTS_LABEL, "digits")).options == [
        "class",
        "branch",
        "row",
        "col",
        "position",
    ]
    at.selectbox(key=S(state.EXPERTS_LABEL, "digits")).set_value("row").run()
    assert not at.exception
    drawn = charts(at)
    assert len(drawn) == 4  # load, lift, partners, steps
    assert not any(key.startswith(state.EXPERTS_TOKENS_CHART) for key in drawn)
    labels = at.dataframe[0].value
    assert sorted(labels["row"].astype(int).tolist()) == [0, 1, 2, 3]


# --- Noise steps -----------------------------------------------------------------------------------------


def test_noise_steps_page_draws_the_diffusion_views(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(store_dir, monkeypatch, "noise_steps.py", state.NOISE_RUN, "digits")
    assert at.selectbox(key=state.NOISE_RUN).options == ["digits"]  # text runs are not offered
    at.selectbox(key=S(state.NOISE_LAYER, "digits")).set_value(2).run()
    assert not at.exception
    run = Store(store_dir).open("digits")
    drawn = charts(at)
    keys = [state.NOISE_STEPS_CHART, state.NOISE_LINES_CHART, state.NOISE_SIMILARITY_CHART]
    keys += [state.NOISE_SPATIAL_CHART, state.NOISE_BRANCHES_CHART]
    assert sorted(drawn) == sorted(
        [S(k, "digits", 2) for k in keys]
        + [S(state.NOISE_SENSITIVITY_CHART, "digits"), S(state.NOISE_PATHS_CHART, "digits")]
    )
    steps = A.steps(run)
    at_layer = steps[steps["layer"] == 2]
    expected = (
        at_layer.pivot_table(index="expert", columns="step", values="load").reindex(range(8)).fillna(0.0)
    )
    np.testing.assert_allclose(
        array(drawn[S(state.NOISE_STEPS_CHART, "digits", 2)]["data"][0]["z"]), expected
    )
    similarity = A.step_similarity(run)
    js = similarity[similarity["layer"] == 2].pivot(index="step_a", columns="step_b", values="js")
    np.testing.assert_allclose(array(drawn[S(state.NOISE_SIMILARITY_CHART, "digits", 2)]["data"][0]["z"]), js)
    spatial = A.spatial_preference(run, layer=2)
    panels = drawn[S(state.NOISE_SPATIAL_CHART, "digits", 2)]["data"]
    assert len(panels) == spatial["expert"].nunique()
    first = spatial[spatial["expert"] == spatial["expert"].min()]
    grid = np.zeros((4, 4))
    grid[first["row"], first["col"]] = first["share"]
    np.testing.assert_allclose(array(panels[0]["z"]), grid)
    branches = A.specialization(run, "branch")
    bars = drawn[S(state.NOISE_BRANCHES_CHART, "digits", 2)]["data"]
    for trace in bars:
        own = branches[(branches["layer"] == 2) & (branches["branch"] == trace["name"])]
        np.testing.assert_allclose(
            array(trace["y"]), own.set_index("expert")["share"].reindex(range(8)).fillna(0)
        )

    # one step: x̂₀ beside the patch grid of that step's routing
    at.selectbox(key=S(state.NOISE_SAMPLE, "digits")).set_value(1).run()
    at.select_slider(key=S(state.NOISE_STEP, "digits")).set_value(1).run()
    assert not at.exception
    assert len(at.get("image")) == 1
    a = run.assignments()
    a = a[(a["sample"] == 1) & (a["router"] == router_of(run, 2)) & (a["rank"] == 0) & (a["step"] == 1)]
    grid_html = next(h.value for h in at.html if 'class="rs-patch"' in h.value)
    cells = re.findall(r'data-position="(\d+)" data-expert="(\d+)"', grid_html)
    shown = {int(p): int(e) for p, e in cells}
    assert shown == dict(zip(a["position"].astype(int), a["expert"].astype(int), strict=True))


def test_noise_steps_page_without_a_diffusion_run_says_so(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    shutil.copytree(store_dir / "text", store / "text")
    monkeypatch.setenv(STORE_ENV, str(store))
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=240).run()
    at.switch_page("app_pages/noise_steps.py").run()
    assert not at.exception
    assert not at.get("plotly_chart")
    assert "No diffusion run to show" in at.info[0].value


# --- Balance & uncertainty -------------------------------------------------------------------------------


def test_balance_page_draws_the_balance_and_uncertainty_tables(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch, "balance.py", state.BALANCE_RUN, "text")
    run = Store(store_dir).open("text")
    drawn = charts(at)
    names = [state.BALANCE_LOAD_CHART, state.BALANCE_METRICS_CHART, state.BALANCE_UNCERTAINTY_CHART]
    names += [state.BALANCE_ENTROPY_CHART, state.BALANCE_MARGIN_CHART]
    assert sorted(drawn) == sorted(S(n, "text") for n in names)
    balance = A.balance(run)
    panels = drawn[S(state.BALANCE_METRICS_CHART, "text")]["data"]
    for trace, metric in zip(panels, ["cv", "norm_entropy", "aux_loss", "max_over_mean"], strict=True):
        np.testing.assert_allclose(array(trace["y"]), balance[metric], rtol=1e-9)
    d = run.decisions()
    d["value"] = np.clip(d["entropy"] / np.log(16), 0, 1)
    for trace, (layer, part) in zip(
        drawn[S(state.BALANCE_ENTROPY_CHART, "text")]["data"], d.groupby("layer"), strict=True
    ):
        counts, _ = np.histogram(part["value"], bins=np.linspace(0, 1, 21))
        assert trace["name"] == f"layer {layer}"
        np.testing.assert_allclose(array(trace["y"]), counts / len(part))
    uncertainty = A.uncertainty(run)
    first = drawn[S(state.BALANCE_UNCERTAINTY_CHART, "text")]["data"][0]
    np.testing.assert_allclose(array(first["y"]), uncertainty["mean_norm_entropy"], rtol=1e-6)
    np.testing.assert_allclose(at.dataframe[0].value["cv"], balance["cv"])

    at.selectbox(key=S(state.BALANCE_LAYER, "text")).set_value(3).run()
    at.number_input(key=state.BALANCE_TOP).set_value(10).run()
    assert not at.exception
    top = at.dataframe[1].value
    layer3 = d[d["layer"] == 3].assign(norm=lambda t: t["entropy"] / np.log(16))
    expected = layer3.sort_values("norm", ascending=False).head(10)
    assert top["sample"].tolist() == expected["sample"].tolist()
    assert top["position"].tolist() == expected["position"].tolist()
    np.testing.assert_allclose(top["norm_entropy"], expected["norm"], rtol=1e-6)
    by_token = A.uncertainty_by_label(run, "token", min_count=5)
    by_token = by_token[by_token["layer"] == 3].head(10)
    assert at.dataframe[2].value["token"].tolist() == by_token["token"].tolist()


# --- Placement -------------------------------------------------------------------------------------------


def test_placement_page_draws_the_placement_kinds(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(store_dir, monkeypatch, "placement.py", state.PLACEMENT_RUN, "text")
    store = Store(store_dir)
    run = store.open("text")
    at.number_input(key=S(state.PLACEMENT_REPLICAS, "text")).set_value(2).run()
    at.number_input(key=S(state.PLACEMENT_DEVICES, "text")).set_value(4).run()
    at.multiselect(key=state.PLACEMENT_THRESHOLDS).set_value([0.5, 0.9]).run()
    assert not at.exception
    drawn = charts(at)
    assert sorted(drawn) == sorted(
        [
            S(state.PLACEMENT_COVERAGE_CHART, "text"),
            S(state.PLACEMENT_HOT_SET_CHART, "text", 0.5, 0.9),
            S(state.PLACEMENT_DEVICES_CHART, "text", 4, 2),
            S(state.PLACEMENT_PREDICTABILITY_CHART, "text"),
        ]
    )
    coverage = A.coverage(run)
    first = drawn[S(state.PLACEMENT_COVERAGE_CHART, "text")]["data"][0]
    np.testing.assert_allclose(array(first["y"]), coverage[coverage["layer"] == 0]["coverage"])
    hot = A.hot_set(run, thresholds=(0.5, 0.9))
    line = drawn[S(state.PLACEMENT_HOT_SET_CHART, "text", 0.5, 0.9)]["data"][0]
    np.testing.assert_allclose(array(line["y"]), hot[hot["threshold"] == 0.5]["hot_set"])
    placement = A.device_load(run, devices=4, replicas=2)
    pd.testing.assert_frame_equal(at.dataframe[0].value.reset_index(drop=True), placement, check_dtype=False)
    panels = drawn[S(state.PLACEMENT_DEVICES_CHART, "text", 4, 2)]["data"]
    balanced = next(t for t in panels if t["name"] == "placement balanced")
    expected = placement[placement["placement"] == "balanced"]["balancedness"]
    np.testing.assert_allclose(array(balanced["y"]), expected)
    predictability = A.layer_predictability(run)
    accuracy = drawn[S(state.PLACEMENT_PREDICTABILITY_CHART, "text")]["data"][0]
    np.testing.assert_allclose(array(accuracy["y"]), predictability["accuracy"])

    at.number_input(key=S(state.PLACEMENT_DEVICES, "text")).set_value(18).run()
    at.number_input(key=S(state.PLACEMENT_REPLICAS, "text")).set_value(0).run()  # 18 devices > 16 experts
    assert not at.exception
    assert at.number_input(key=S(state.PLACEMENT_DEVICES, "text")).value == 16
    assert not at.warning

    at.selectbox(key=S(state.PLACEMENT_OTHER, "text")).set_value("text-b").run()
    assert not at.exception
    drawn = charts(at)
    drift = A.load_drift(run, store.open("text-b"))
    tv = drawn[S(state.PLACEMENT_DRIFT_CHART, "text", "text-b")]["data"][0]
    np.testing.assert_allclose(array(tv["y"]), drift["tv_distance"])
    assert S(state.PLACEMENT_DRIFT_EXPERTS_CHART, "text", "text-b") in drawn


# --- Embeddings ------------------------------------------------------------------------------------------


def test_embeddings_page_draws_the_pca_map(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(store_dir, monkeypatch, "embeddings.py", state.EMBED_RUN, "text")
    run = Store(store_dir).open("text")
    at.selectbox(key=S(state.EMBED_COLOUR, "text", "tokens")).set_value("domain").run()
    assert not at.exception
    (figure,) = charts(at).values()
    table = A.embeddings(run, 0, method="pca", max_points=3000)
    assert len(table) == min(3000, int((run.decisions()["layer"] == 0).sum()))
    assert sorted(t["name"] for t in figure["data"]) == sorted(table["domain"].unique())
    for trace in figure["data"]:
        own = table[table["domain"] == trace["name"]]
        np.testing.assert_allclose(np.sort(array(trace["x"])), np.sort(own["x"].to_numpy()), rtol=1e-9)
    at.radio(key=state.EMBED_OF).set_value("experts").run()
    assert not at.exception
    (figure,) = charts(at).values()
    assert len(array(figure["data"][0]["x"])) == 16  # one point per expert


@pytest.mark.slow
def test_embeddings_page_runs_umap_only_when_asked(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(store_dir, monkeypatch, "embeddings.py", state.EMBED_RUN, "text")
    at.radio(key=state.EMBED_METHOD).set_value("umap").run()
    at.number_input(key=state.EMBED_POINTS).set_value(300).run()
    assert not at.exception
    assert not at.get("plotly_chart")
    assert "press the button" in at.info[0].value
    at.button(key=S(state.EMBED_COMPUTE, "text")).click().run()
    assert not at.exception
    (figure,) = charts(at).values()
    assert sum(len(array(t["x"])) for t in figure["data"]) == 300
    assert figure["layout"]["xaxis"]["title"]["text"] == "UMAP 1"
    start = time.perf_counter()
    at.run()  # cached: no second UMAP
    assert time.perf_counter() - start < 5
    assert len(at.get("plotly_chart")) == 1


# --- Compare ---------------------------------------------------------------------------------------------


def test_compare_page_puts_two_runs_side_by_side_with_their_agreement(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch, "compare.py", state.COMPARE_RUN, "text")
    at.selectbox(key=S(state.COMPARE_OTHER, "text")).set_value("text-b").run()
    at.selectbox(key=S(state.COMPARE_METRIC, "balance")).set_value("cv").run()
    assert not at.exception
    assert not at.warning  # the same inputs
    store = Store(store_dir)
    a, b = store.open("text"), store.open("text-b")
    drawn = charts(at)
    lines = drawn[S(state.COMPARE_CHART, "text", "text-b", "balance", "cv")]["data"]
    np.testing.assert_allclose(array(lines[0]["y"]), A.balance(a)["cv"])
    np.testing.assert_allclose(array(lines[1]["y"]), A.balance(b)["cv"])
    agreement = A.agreement(a, b)
    bars = drawn[S(state.COMPARE_AGREEMENT_CHART, "text", "text-b")]["data"]
    np.testing.assert_allclose(array(bars[0]["y"]), agreement["top1_agreement"])
    assert agreement["decisions"].sum() > 0
    at.selectbox(key=state.COMPARE_KIND).set_value("load").run()
    assert not at.exception
    dots = charts(at)[S(state.COMPARE_CHART, "text", "text-b", "load", "count")]["data"][1]
    table = A.side_by_side([a, b], "load")
    np.testing.assert_allclose(array(dots["x"]), table["count@text"])


def test_compare_page_draws_a_checkpoint_series_against_the_picked_run(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch, "compare.py", state.COMPARE_RUN, "text")
    at.selectbox(key=S(state.COMPARE_OTHER, "text")).set_value("text-b").run()
    at.multiselect(key=S(state.COMPARE_SERIES, "text")).set_value(["text-b"]).run()
    assert not at.exception
    store = Store(store_dir)
    expected = A.saturation_series(store.open("text"), [store.open("text-b")])
    lines = charts(at)[S(state.COMPARE_SERIES_CHART, "text", "text-b")]["data"]
    assert len(lines) == expected["layer"].nunique()
    for line, (_, part) in zip(lines, expected.groupby("layer"), strict=True):
        np.testing.assert_allclose(array(line["y"]), part["saturation"])
    assert 0 < expected["saturation"].min() <= expected["saturation"].max() <= 1


def test_compare_page_reports_a_label_the_other_run_lacks(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch, "compare.py", state.COMPARE_RUN, "text")
    at.selectbox(key=S(state.COMPARE_OTHER, "text")).set_value("digits").run()
    at.selectbox(key=state.COMPARE_KIND).set_value("specialization").run()
    at.selectbox(key=S(state.COMPARE_LABEL, "text", "specialization")).set_value("domain").run()
    assert not at.exception
    assert len(at.error) == 1
    assert "has no label 'domain'" in at.error[0].value.replace("\\", "")
    assert "not recorded on the same inputs" in at.warning[0].value  # and the page went on


# --- Export, bad input -----------------------------------------------------------------------------------


def test_export_menu_prepares_svg_and_png_at_paper_widths(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch, "balance.py", state.BALANCE_RUN, "text")
    chart = S(state.BALANCE_LOAD_CHART, "text")
    assert at.radio(key=S(state.EXPORT_FORMAT, chart)).options == ["svg", "pdf", "png"]
    assert not at.get("download_button") or all(
        S(state.EXPORT_DOWNLOAD, chart) != b.proto.id.split("-", 2)[2] for b in at.get("download_button")
    )
    at.button(key=S(state.EXPORT_PREPARE, chart)).click().run()
    assert not at.exception
    fmt, width, data = at.session_state[S(state.EXPORT_FILE, chart)]
    assert (fmt, width) == ("svg", "single")
    svg = ET.fromstring(data)
    assert svg.tag.endswith("svg")
    assert float(svg.attrib["width"]) == 317
    labels = {b.proto.id.split("-", 2)[2]: b.proto.label for b in at.get("download_button")}
    assert labels[S(state.EXPORT_DOWNLOAD, chart)] == "Download text-load.svg"  # offered once prepared
    at.radio(key=S(state.EXPORT_FORMAT, chart)).set_value("png").run()
    at.radio(key=S(state.EXPORT_WIDTH, chart)).set_value("double").run()
    at.button(key=S(state.EXPORT_PREPARE, chart)).click().run()
    fmt, width, data = at.session_state[S(state.EXPORT_FILE, chart)]
    assert (fmt, width) == ("png", "double")
    assert data[:8] == PNG_SIGNATURE
    assert struct.unpack(">I", data[16:20])[0] == 662 * 300 // 96  # IHDR width: 6.9 in at 300 dpi


def test_figure_bytes_renders_pdf(store_dir: Path) -> None:
    fig = figure_load(A.expert_load(Store(store_dir).open("text")), width="single")
    data = figure_bytes(fig, "pdf")
    assert data.startswith(b"%PDF")


@pytest.mark.parametrize("page", ["experts", "noise_steps", "balance", "embeddings", "compare"])
def test_pages_list_damaged_runs_and_open_the_good_ones(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    store = tmp_path / "store"
    shutil.copytree(store_dir / "digits", store / "digits")
    (store / "broken").mkdir(parents=True)
    (store / "broken" / "manifest.json").write_text("{not json")
    shutil.copytree(store_dir / "text", store / "future")
    manifest = json.loads((store / "future" / "manifest.json").read_text())
    (store / "future" / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    (store / INCOMPLETE_DIR / "halfway").mkdir(parents=True)  # an interrupted recording
    monkeypatch.setenv(STORE_ENV, str(store))
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=240).run()
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception
    assert any("halfway, broken, future" in c.value for c in at.caption)
    if page == "compare":
        assert "Record a second run" in at.info[0].value
    else:
        assert at.get("plotly_chart")


# --- A real server in Chromium ---------------------------------------------------------------------------


@pytest.mark.slow
def test_browser_records_a_dit_run_and_opens_noise_steps(store_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    store = tmp_path / "store"
    shutil.copytree(store_dir / "text", store / "text")  # not empty: no first-start recording
    ARTIFACTS.mkdir(exist_ok=True)
    with running_dashboard(store) as port, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/run")
        model = page.get_by_role("combobox", name="Bundled model")
        model.fill("dit-digits")
        page.get_by_role("option").first.click()
        page.locator(".st-key-run-classes input").fill("3,7")
        page.locator(".st-key-run-classes input").press("Enter")
        page.locator(".st-key-run-steps input").fill("3")
        page.locator(".st-key-run-steps input").press("Enter")
        page.locator(".st-key-run-name input").fill("browser-digits")
        page.locator(".st-key-run-name input").press("Enter")
        page.locator(".st-key-run-record button").click()
        page.get_by_text("Recorded run browser").wait_for(timeout=90_000)
        page.screenshot(path=str(ARTIFACTS / "run-page.png"), full_page=True)
        noise = next(p for p in PAGES if p.file == "noise_steps.py")
        page.locator("[data-testid=stSidebarNav]").get_by_text(noise.title, exact=True).click()
        page.wait_for_selector(".rs-patch", timeout=90_000)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 7")
        assert page.locator(".st-key-noise-run input").input_value() == "browser-digits"
        assert page.locator(".js-plotly-plot").count() == 7  # six views + the denoising paths
        assert page.locator(".rs-patch").count() == 16
        assert page.locator("[data-testid=stException]").count() == 0
        page.screenshot(path=str(ARTIFACTS / "noise-steps.png"), full_page=True)
        nav = page.locator("[data-testid=stSidebarNav]").inner_text()
        assert [nav.index(p.title) for p in PAGES] == sorted(nav.index(p.title) for p in PAGES)
        browser.close()
    run = Store(store).open("browser-digits")
    assert (run.manifest["options"]["classes"], run.manifest["options"]["steps"]) == ([3, 7], 3)
    assert (ARTIFACTS / "noise-steps.png").stat().st_size > 0
