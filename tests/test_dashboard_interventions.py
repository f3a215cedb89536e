"""The dashboard's Interventions page (AppTest): probes set up in the page record real runs of the bundled
models, and the tables and figures it shows equal the probe analyses computed here from those runs; bad
input is one red line and leaves the store as it was. Also: the page's Streamlit-free helpers, its figure
builders on hand-built tables, and a DuckDB error from a damaged data page shown as one line that names
the file (the pages' `user_errors`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from streamlit.testing.v1 import AppTest

import routescope
from routescope.analysis.ablation import ablation_accuracy, ablation_denoising, ablation_loss
from routescope.analysis.batching import batch_dependence
from routescope.analysis.forcing import set_share
from routescope.analysis.stability import decision_changes, flip_correlation, flip_rate
from routescope.dashboard import ENTRY_SCRIPT, STORE_ENV, state
from routescope.dashboard.app_pages import PAGES
from routescope.dashboard.probing import (
    Ablate,
    Batch,
    Force,
    Noise,
    StagedProgress,
    domain_subset,
    parse_ints,
    parse_where,
    run_names,
    run_probe,
)
from routescope.dashboard.recording import dataset_inputs
from routescope.dashboard.widgets import user_errors
from routescope.figures import figure_ablation, figure_batch_dependence, figure_flip_rate, figure_set_share
from routescope.inputs import Inputs
from routescope.probes import probe_of
from routescope.store import InputError, Store
from tests.planted import planted_run

S = state.scoped
PAGE = "app_pages/interventions.py"


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A store holding one small planted run (so the app records no default runs on first start)."""
    folder = tmp_path / "store"
    planted_run(Store(folder), "planted", experts={0: [[0, 1], [1, 2], [2, 3]]}, n_experts=4)
    return folder


def open_page(store: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv(STORE_ENV, str(store))
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=300).run()
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def run_probe_in_page(at: AppTest, kind: str, name: str, **widgets: Any) -> AppTest:
    """Choose the probe, set widgets (state key → value), name the run and press Run probe."""
    at.radio(key=state.PROBE_KIND).set_value(kind).run()
    for key, value in widgets.items():
        widget(at, key).set_value(value).run()  # later widgets appear once the choices above them are in
    at.text_input(key=state.PROBE_NAME).set_value(name)
    at.button(key=state.PROBE_START).click().run()
    assert not at.exception
    return at


WIDGET_KINDS = ("text_input", "number_input", "radio", "checkbox", "slider", "selectbox", "text_area")


def widget(at: AppTest, key: str) -> Any:
    """The page's widget with this key, whatever its kind."""
    return next(e for kind in WIDGET_KINDS for e in at.get(kind) if getattr(e, "key", None) == key)


def charts(at: AppTest) -> dict[str, dict[str, Any]]:
    """Every plotly chart on the page as its figure JSON, by the chart's widget key."""
    return {e.proto.id.split("-", 2)[2]: json.loads(e.proto.spec) for e in at.get("plotly_chart")}


def shown(at: AppTest, columns: list[str]) -> pd.DataFrame:
    """The dataframe on the page with exactly these columns."""
    return next(d.value for d in at.dataframe if list(d.value.columns) == columns)


def array(values: Any) -> np.ndarray:
    if isinstance(values, dict) and "bdata" in values:
        import base64

        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"])).astype(float)
    return np.array([np.nan if v is None else v for v in values], dtype=float)


# --- The page ---------------------------------------------------------------------------------------------


def test_the_page_is_in_the_navigation_and_renders(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = next(p for p in PAGES if p.file == "interventions.py")
    assert (page.title, page.url_path) == ("Interventions", "interventions")
    at = open_page(store_dir, monkeypatch)
    assert at.title[0].value == "Interventions"
    assert at.radio(key=state.PROBE_KIND).value == "ablate"
    assert len(at.radio(key=state.PROBE_KIND).options) == 4
    assert at.slider(key=state.PROBE_MAX_TEXTS).value == 10
    assert "No probe run in the store yet" in at.info[0].value
    at.selectbox(key=state.PROBE_BUNDLED).set_value("dit-digits").run()
    assert at.text_input(key=state.PROBE_CLASSES).value == "0-9"  # diffusion inputs instead of texts
    assert not at.exception


def test_ablate_probe_records_its_runs_and_shows_the_ablation_loss(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch)
    at.slider(key=state.PROBE_MAX_TEXTS).set_value(3)
    run_probe_in_page(at, "ablate", "abl", **{state.PROBE_EXPERTS: "0, 3", state.PROBE_SEEDS: 2})
    assert at.success[0].value == "Recorded runs abl.base, abl, abl.random-0, abl.random-1."
    store = Store(store_dir)
    assert store.runs() == ["abl", "abl.base", "abl.random-0", "abl.random-1", "planted"]
    base, ablated = store.open("abl.base"), store.open("abl")
    randoms = [store.open("abl.random-0"), store.open("abl.random-1")]
    entry = probe_of(ablated)
    assert entry is not None
    assert entry["probe"] == "ablate"
    assert entry["base"] == "abl.base"
    assert entry["params"]["experts"] == [0, 3]
    assert [(probe_of(r) or {})["params"]["random_seed"] for r in randoms] == [0, 1]
    assert (probe_of(base) or {})["probe"] == "base"
    # three texts, one per domain in turn; the disabled experts are gone from the recorded routing
    assert base.samples()["domain"].tolist() == ["prose", "code", "arithmetic"]
    assert not ablated.assignments()["expert"].isin([0, 3]).any()
    assert base.assignments()["expert"].isin([0, 3]).any()

    expected = ablation_loss(base, ablated, randoms, by="domain")
    table = shown(at, list(expected.columns))
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expected, check_dtype=False)
    assert table["ablated"].iloc[-1] > table["base"].iloc[-1]  # two of 16 experts off: the loss rises
    bars = charts(at)[S(state.PROBE_CHART, "abl", "loss")]["data"]
    assert [b["name"] for b in bars] == ["base", "ablated", "random (mean ± sd)"]
    np.testing.assert_allclose(array(bars[1]["y"]), expected["ablated"])
    np.testing.assert_allclose(array(bars[2]["y"]), expected["random_mean"])
    np.testing.assert_allclose(array(bars[2]["error_y"]["array"]), expected["random_sd"])
    assert at.selectbox(key=state.PROBE_RESULT_RUN).options == ["abl"]  # the base and random runs are not
    assert any("Compare page lines abl up with abl.base" in m.value for m in at.markdown)


def test_noise_probe_shows_the_flip_rates(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(store_dir, monkeypatch)
    at.slider(key=state.PROBE_MAX_TEXTS).set_value(3)
    run_probe_in_page(at, "noise", "noisy", **{state.PROBE_SIGMA: 0.2, state.PROBE_LAYERS: "1"})
    store = Store(store_dir)
    base, noisy = store.open("noisy.base"), store.open("noisy")
    entry = probe_of(noisy) or {}
    assert entry["probe"] == "noise"
    assert entry["params"]["sigma"] == 0.2
    assert entry["params"]["layers"] == [1]
    rates = flip_rate(base, noisy)
    table = shown(at, list(rates.columns))
    pd.testing.assert_frame_equal(table.reset_index(drop=True), rates, check_dtype=False)
    changes = decision_changes(base, noisy)
    assert int(table["flips"].sum()) == int(changes["flipped"].sum()) > 0
    assert not changes.loc[changes["layer"] == 0, "flipped"].any()  # layer 0 comes before the noise
    correlation = flip_correlation(base, noisy)
    pd.testing.assert_frame_equal(
        shown(at, list(correlation.columns)).reset_index(drop=True), correlation, check_dtype=False
    )
    bars = charts(at)[S(state.PROBE_CHART, "noisy", "flip-rate")]["data"]
    np.testing.assert_allclose(array(bars[0]["y"]), rates["flip_rate"])
    np.testing.assert_allclose(array(bars[1]["y"]), rates["set_change_rate"])


def test_force_probe_puts_the_selected_tokens_inside_the_set(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch)
    at.slider(key=state.PROBE_MAX_TEXTS).set_value(4)
    widgets = {state.PROBE_FORCE_EXPERTS: "5, 9", state.PROBE_WHERE: "domain=code", state.PROBE_LAYERS: "0"}
    run_probe_in_page(at, "force", "forced", **widgets)
    store = Store(store_dir)
    base, forced = store.open("forced.base"), store.open("forced")
    expected = pd.concat(
        [set_share(run, [5, 9], "domain").assign(run=run.name) for run in (base, forced)], ignore_index=True
    )
    expected = expected[["run", *[c for c in expected.columns if c != "run"]]]
    table = shown(at, list(expected.columns))
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expected, check_dtype=False)
    at_layer0 = table[(table["run"] == "forced") & (table["layer"] == 0)].set_index("domain")["in_set_share"]
    assert at_layer0["code"] == 1.0  # every code token went to exactly experts 5 and 9
    assert at_layer0.drop("code").max() < 1.0  # the other domains kept their own routing
    bars = charts(at)[S(state.PROBE_CHART, "forced", "set-share")]["data"]
    assert [b["name"] for b in bars] == ["forced.base", "forced"]


def test_batch_probe_finds_no_change_for_token_choice_routing(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch)
    at.radio(key=state.PROBE_INPUT_SOURCE).set_value("typed").run()
    at.text_area(key=state.PROBE_TEXT).set_value("one two three\nfour five\nsix seven eight nine")
    run_probe_in_page(at, "batch", "batched", **{state.PROBE_BATCH_SIZE: 3})
    store = Store(store_dir)
    expected = batch_dependence(store.open("batched.alone"), store.open("batched"))
    table = shown(at, list(expected.columns))
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expected, check_dtype=False)
    assert table["changed"].sum() == 0
    assert table["decisions"].min() > 0


def test_dit_ablation_shows_denoising_loss_and_class_accuracy(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch)
    at.selectbox(key=state.PROBE_BUNDLED).set_value("dit-digits").run()
    at.text_input(key=state.PROBE_CLASSES).set_value("3,7")
    at.number_input(key=state.PROBE_STEPS).set_value(2)
    widgets = {
        state.PROBE_ABLATE_WHICH: "top",
        state.PROBE_TOP: 2,
        state.PROBE_SEEDS: 1,
        state.PROBE_LAYERS: "0",
    }
    run_probe_in_page(at, "ablate", "dit", **widgets)
    store = Store(store_dir)
    base, ablated, random = (store.open(n) for n in ("dit.base", "dit", "dit.random-0"))
    disabled = (probe_of(ablated) or {})["intervention"]["routers"]
    assert [len(edit["disable"]) for edit in disabled.values()] == [2]  # layer 0 only, its top 2
    denoising = ablation_denoising(base, ablated, [random])
    accuracy = ablation_accuracy(base, ablated, [random])
    for expected in (denoising, accuracy):
        table = shown(at, list(expected.columns))
        pd.testing.assert_frame_equal(table.reset_index(drop=True), expected, check_dtype=False)
    drawn = charts(at)
    bars = drawn[S(state.PROBE_CHART, "dit", "denoising")]["data"]
    assert bars[0]["x"] == ["t 0–199", "t 200–399", "t 400–599", "t 600–799", "t 800–999"]
    np.testing.assert_allclose(array(bars[1]["y"]), denoising["ablated"])
    assert S(state.PROBE_CHART, "dit", "accuracy") in drawn


BAD_INPUTS = [
    ("ablate", {state.PROBE_EXPERTS: "99"}, "probe", "give distinct experts in 0..15"),
    ("ablate", {state.PROBE_EXPERTS: ", ".join(map(str, range(15)))}, "probe", "leaves fewer than top-k = 2"),
    ("ablate", {state.PROBE_EXPERTS: "zero"}, "probe", "give whole numbers"),
    ("ablate", {}, " ", "invalid run name ''"),
    ("force", {state.PROBE_FORCE_EXPERTS: "4"}, "probe", "give at least top-k = 2 experts"),
    ("force", {state.PROBE_WHERE: "domain=poetry"}, "probe", "no input has the labels"),
    ("noise", {state.PROBE_LAYERS: "7"}, "probe", "no router at layer(s) [7]; MoE layers: [0, 1, 2, 3]"),
    ("ablate", {}, "planted", "run 'planted' already exists"),
]


@pytest.mark.parametrize(("kind", "widgets", "name", "message"), BAD_INPUTS)
def test_bad_input_is_one_error_line_and_records_nothing(
    store_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    widgets: dict[str, Any],
    name: str,
    message: str,
) -> None:
    at = open_page(store_dir, monkeypatch)
    at.slider(key=state.PROBE_MAX_TEXTS).set_value(2)
    before = Store(store_dir).runs()
    run_probe_in_page(at, kind, name, **widgets)
    assert len(at.error) == 1
    shown_message = at.error[0].value.replace("\\", "")  # the page escapes Markdown with backslashes
    assert message in shown_message
    assert "\n" not in shown_message
    assert Store(store_dir).runs() == before
    assert not Store(store_dir).incomplete()


# --- A damaged data page ----------------------------------------------------------------------------------


def damage_a_data_page(run_dir: Path, table: str = "assignments", column: str = "expert") -> Path:
    """Invert the bytes of a column's data pages, past their first header: the footer still reads (the
    run opens), DuckDB fails to decode the pages (it does not check page checksums)."""
    path = run_dir / f"{table}.parquet"
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    chunk = meta.row_group(0).column(names.index(column))
    data = bytearray(path.read_bytes())
    start, end = chunk.data_page_offset + 40, chunk.data_page_offset + chunk.total_compressed_size - 8
    data[start:end] = bytes(b ^ 0xFF for b in data[start:end])
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def damaged_store(tmp_path: Path) -> Path:
    folder = tmp_path / "damaged"
    rng = np.random.default_rng(0)
    experts = {layer: [list(rng.choice(8, 2, replace=False)) for _ in range(2000)] for layer in range(2)}
    planted_run(Store(folder), "r", experts=experts, n_experts=8)
    damage_a_data_page(folder / "r")
    return folder


def test_a_damaged_data_page_is_one_error_line_naming_the_file(
    damaged_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Store(damaged_store).open("r")  # opens: only the footers are read
    with pytest.raises(duckdb.Error):
        duckdb.sql(f"SELECT sum(expert) FROM read_parquet('{run.table_path('assignments')}')").fetchall()
    monkeypatch.setenv(STORE_ENV, str(damaged_store))
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=300).run()
    at.switch_page("app_pages/balance.py").run()
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert str(damaged_store / "r" / "assignments.parquet") in message.replace("\\", "")
    assert "damaged data" in message
    assert "\n" not in message


def test_a_damaged_base_run_of_a_probe_is_named_on_the_page(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(store_dir)
    lm = routescope.load_model("bundled:moe-lm")
    inputs = domain_subset(dataset_inputs("bundled:domains"), 10)
    run_probe(lm, inputs, Noise(sigma=0.1), store=store, name="noisy")
    damaged = damage_a_data_page(store_dir / "noisy.base")
    at = open_page(store_dir, monkeypatch)  # the noisy run itself reads cleanly: its base is verified too
    assert len(at.error) == 1
    message = at.error[0].value.replace("\\", "")
    assert message.startswith(f"{damaged}: damaged data")
    assert at.selectbox(key=state.PROBE_RESULT_RUN).value == "noisy"


def test_user_errors_raises_a_duckdb_error_when_every_run_reads_cleanly(store_dir: Path) -> None:
    run = Store(store_dir).open("planted")
    with pytest.raises(duckdb.CatalogException), user_errors(runs=[run]):
        duckdb.sql("SELECT * FROM no_such_table").fetchall()  # a bug, not damage: raised as it is


# --- Helpers and figures ----------------------------------------------------------------------------------


def test_domain_subset_takes_turns_over_the_domains_in_input_order() -> None:
    inputs = Inputs(texts=[f"t{i}" for i in range(7)], labels={"domain": list("aaabbcc")})
    five = domain_subset(inputs, 5)
    assert five.texts == ["t0", "t1", "t3", "t4", "t5"]  # a, b, c, then a, b again, in input order
    assert five.labels["domain"] == ["a", "a", "b", "b", "c"]
    assert domain_subset(inputs, 10, ["c"]).texts == ["t5", "t6"]
    with pytest.raises(InputError, match="no input has domain = 'z'"):
        domain_subset(inputs, 3, ["z"])


def test_parsers_and_run_names() -> None:
    assert parse_ints(" 0, 3,5 ", "experts") == (0, 3, 5)
    assert parse_ints("", "layers") == ()
    assert parse_where("domain = code, kind=x") == {"domain": "code", "kind": "x"}
    with pytest.raises(InputError, match="LABEL=VALUE"):
        parse_where("domain")
    assert run_names("p", Ablate(top=2, seeds=2)) == ["p.base", "p", "p.random-0", "p.random-1"]
    assert run_names("p", Ablate(shared=True, seeds=3)) == ["p.base", "p"]  # nothing random to match
    assert run_names("p", Batch()) == ["p.alone", "p"]
    assert run_names("p", Force(experts=(0, 1))) == run_names("p", Noise()) == ["p.base", "p"]


def test_staged_progress_runs_once_over_all_recordings() -> None:
    seen: list[tuple[float, str]] = []
    progress = StagedProgress(["a.base", "a"], lambda fraction, text: seen.append((fraction, text)))
    for done, total in [(1, 2), (2, 2), (1, 1)]:
        progress(done, total)
    assert [f for f, _ in seen] == [0.25, 0.5, 1.0]
    assert seen[2][1] == "recording a (2 of 2): 1 of 1"


def test_figure_ablation_draws_base_ablated_and_random_spread() -> None:
    table = pd.DataFrame(
        {
            "domain": ["<b>code</b>", "prose", "(all)"],
            "base": [2.0, 3.0, 2.5],
            "ablated": [2.5, 3.1, 2.8],
            "random_mean": [2.1, 3.3, 2.7],
            "random_sd": [0.1, 0.2, 0.15],
            "random_min": [2.0, 3.1, 2.55],
            "random_max": [2.2, 3.5, 2.85],
        }
    )
    fig = figure_ablation(table, group="domain")
    assert [t.name for t in fig.data] == ["base", "ablated", "random (mean ± sd)"]
    assert list(fig.data[0].x) == ["&lt;b&gt;code&lt;/b&gt;", "prose", "(all)"]
    np.testing.assert_allclose(fig.data[1].y, [2.5, 3.1, 2.8])
    np.testing.assert_allclose(fig.data[2].error_y.array, [0.1, 0.2, 0.15])
    no_random = table.assign(random_mean=np.nan, random_sd=np.nan)
    assert len(figure_ablation(no_random, group="domain").data) == 2  # shared expert only: no random bars


def test_figure_flip_rate_set_share_and_batch_dependence_draw_their_tables() -> None:
    rates = pd.DataFrame(
        {
            "margin_low": [0.0, 0.02],
            "margin_high": [0.02, 1.0],
            "decisions": [10, 90],
            "flips": [4, 1],
            "flip_rate": [0.4, 1 / 90],
            "set_change_rate": [0.1, 0.0],
        }
    )
    fig = figure_flip_rate(rates)
    assert list(fig.data[0].x) == ["0–0.02", "0.02–1"]
    np.testing.assert_allclose(fig.data[0].y, [0.4, 1 / 90])
    np.testing.assert_allclose(fig.data[1].y, [0.1, 0.0])
    by_layer = pd.concat([rates.assign(layer=0), rates.assign(layer=1, flip_rate=[0.5, 0.0])])
    assert [t.name for t in figure_flip_rate(by_layer).data] == ["layer 0", "layer 1"]

    share = pd.DataFrame(
        {
            "run": ["b", "b", "f", "f"],
            "layer": [0, 0, 0, 0],
            "domain": ["code", "prose", "code", "prose"],
            "decisions": [5, 5, 5, 5],
            "in_set_share": [0.2, 0.0, 1.0, 0.0],
        }
    )
    fig = figure_set_share(share, label="domain")
    assert [t.name for t in fig.data] == ["b", "f"]
    assert list(fig.data[1].x) == ["layer 0 · code", "layer 0 · prose"]
    np.testing.assert_allclose(fig.data[1].y, [1.0, 0.0])

    batch = pd.DataFrame(
        {"router": [0, 1], "layer": [0, 1], "stack": ["decoder"] * 2, "decisions": [8, 8], "changed": [0, 2]}
    )
    batch["changed_share"] = batch["changed"] / batch["decisions"]
    fig = figure_batch_dependence(batch)
    assert list(fig.data[0].x) == ["layer 0", "layer 1"]
    np.testing.assert_allclose(fig.data[0].y, [0.0, 0.25])
