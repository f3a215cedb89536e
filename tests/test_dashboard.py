"""The dashboard: pages driven by Streamlit's AppTest on a store recorded from the bundled models, the
`routescope app` command, the progress callbacks it relies on, and one real server in headless Chromium.

Every page test reads back what the page drew (the `data-expert` of each token or patch, a weight matrix)
and compares it with the run's own tables.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import socket
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import routescope
from routescope.cli import _parser, main
from routescope.cli_app import LOOPBACK, bind_warning, server_environment, streamlit_command
from routescope.dashboard import ENTRY_SCRIPT, STORE_ENV, state
from routescope.dashboard.app_pages import PAGES
from routescope.dashboard.markup import literal, tokens_html
from routescope.dashboard.recording import DEFAULT_RUNS, check_new_run, typed_inputs, uploaded_inputs
from routescope.dashboard.views import uncertain, weight_matrix
from routescope.store import InputError, InvalidNameError, RunExistsError, Store
from tests.dashboard_server import running_dashboard

HOSTILE = "The cat <script>alert('x')</script> sat & <b>ran</b>."
TEXTS = [HOSTILE, "def f(x):\n    return x + 1", "x = [1, 2, 3]"]
DOMAINS = ["prose", "code", "code"]
CLI = [sys.executable, "-m", "routescope"]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a text run (moe-lm, 3 labelled texts, 2 generated tokens, probs) and a small DiT run."""
    folder = tmp_path_factory.mktemp("dashboard") / "store"
    lm = routescope.load_model("bundled:moe-lm")
    routescope.record(
        lm, TEXTS, store=folder, name="text", labels={"domain": DOMAINS}, max_new_tokens=2, probs=True
    )
    dit = routescope.load_model("bundled:dit-digits")
    routescope.record_diffusion(
        dit, classes=[3, 7], samples_per_class=1, steps=3, store=folder, name="digits", save_x0=True
    )
    return folder


def app_on(store: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv(STORE_ENV, str(store))
    return AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=180)


def tokens_page(store: Path, monkeypatch: pytest.MonkeyPatch, run: str) -> AppTest:
    at = app_on(store, monkeypatch).run()
    at.selectbox(key=state.TOKENS_RUN).set_value(run).run()
    assert not at.exception
    return at


class _Cells(HTMLParser):
    """Reads back the tokens or patches a page drew: (position, expert, uncertain, text) per element."""

    def __init__(self, css_class: str) -> None:
        super().__init__()
        self.css_class, self.cells, self._open = css_class, [], None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("class") == self.css_class:
            expert = values["data-expert"]
            self._open = [int(str(values["data-position"])), int(expert) if expert else None, values, ""]

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[3] += data

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None:
            self.cells.append(tuple(self._open))
            self._open = None


def drawn(at: AppTest, css_class: str) -> tuple[str, list[tuple]]:
    """The `st.html` body holding elements of `css_class`, and those elements read back."""
    body = next(h.value for h in at.html if f'class="{css_class}"' in h.value)
    parser = _Cells(css_class)
    parser.feed(body)
    return body, parser.cells


def top1(run: routescope.Run, sample: int, router: int, step: int | None = None) -> dict[int, int]:
    a = run.assignments()
    a = a[(a["sample"] == sample) & (a["router"] == router) & (a["rank"] == 0) & (a["call"] == 0)]
    if step is not None:
        a = a[a["step"] == step]
    return dict(zip(a["position"].astype(int), a["expert"].astype(int), strict=True))


# --- Tokens page --------------------------------------------------------------------------------------


def test_tokens_page_colours_each_token_by_the_runs_top1_expert(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = tokens_page(store_dir, monkeypatch, "text")
    at.selectbox(key=state.scoped(state.TOKENS_SAMPLE, "text")).set_value(1).run()
    at.selectbox(key=state.scoped(state.TOKENS_LAYER, "text")).set_value(2).run()
    assert not at.exception
    run = Store(store_dir).open("text")
    _, cells = drawn(at, "rs-token")
    tokens = run.tokens()
    tokens = tokens[tokens["sample"] == 1].sort_values("position")
    assert [c[0] for c in cells] == tokens["position"].tolist()
    expected = top1(run, sample=1, router=2)
    assert {c[0]: c[1] for c in cells if c[1] is not None} == expected
    unrouted = [c[0] for c in cells if c[1] is None]
    assert unrouted == [int(tokens["position"].max())]  # the last generated token is never fed back
    assert len(set(expected.values())) > 1  # a real check: the colours are not all one expert


def test_tokens_page_escapes_hostile_input_text(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = tokens_page(store_dir, monkeypatch, "text")
    at.selectbox(key=state.scoped(state.TOKENS_SAMPLE, "text")).set_value(0).run()
    body, cells = drawn(at, "rs-token")
    assert "<script" not in body
    assert "<b>" not in body
    ours = re.sub(r'</?(div|span)( [a-z-]+="[^"<>]*")*>', "", body)  # remove the page's own tags
    assert "<" not in ours
    assert ">" not in ours
    prompt = "".join(text for _, _, values, text in cells if "font-style: italic" not in str(values["style"]))
    assert html.unescape(prompt).replace("↵", "").startswith(HOSTILE)


def test_tokens_html_escapes_every_token() -> None:
    routing = pd.DataFrame(
        {
            "position": [0, 1],
            "token": ["<script>alert(1)</script>", '" onmouseover="x'],
            "generated": [False, False],
            "expert": [1, 2],
            "weight": [0.5, 0.5],
            "dropped": [False, False],
            "norm_entropy": [0.1, 0.2],
            "margin": [0.3, 0.4],
        }
    )
    body = tokens_html(routing, pd.Series([False, True]), n_experts=4)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&quot; onmouseover=&quot;x" in body
    assert '" onmouseover="' not in body
    assert body.count('data-uncertain="true"') == 1


def test_tokens_page_outlines_the_uncertain_tokens(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = tokens_page(store_dir, monkeypatch, "text")
    at.selectbox(key=state.scoped(state.TOKENS_SAMPLE, "text")).set_value(0).run()
    at.slider(key=state.TOKENS_ENTROPY).set_value(0.6).run()
    at.slider(key=state.TOKENS_MARGIN).set_value(0.1).run()
    _, cells = drawn(at, "rs-token")
    run = Store(store_dir).open("text")
    d = run.decisions()
    d = d[(d["sample"] == 0) & (d["router"] == 0)]
    expected = sorted(
        d.loc[(d["entropy"] / math.log(16) >= 0.6) | (d["margin"] <= 0.1), "position"].astype(int).tolist()
    )
    assert sorted(c[0] for c in cells if c[2]["data-uncertain"] == "true") == expected
    assert 0 < len(expected) < len(d)


def test_uncertain_flags_entropy_or_margin_and_never_unrouted_tokens() -> None:
    routing = pd.DataFrame({"norm_entropy": [0.95, 0.5, 0.5, np.nan], "margin": [0.5, 0.01, 0.5, np.nan]})
    flags = uncertain(routing, entropy_at_least=0.9, margin_at_most=0.05)
    assert flags.tolist() == [True, True, False, False]


def test_tokens_page_shows_a_tokens_weights_at_every_layer(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = tokens_page(store_dir, monkeypatch, "text")
    at.selectbox(key=state.scoped(state.TOKENS_SAMPLE, "text")).set_value(2).run()
    at.selectbox(key=state.scoped(state.TOKENS_POSITION, "text", 2)).set_value(3).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    matrix = at.dataframe[0].value
    run = Store(store_dir).open("text")
    a = run.assignments()
    a = a[(a["sample"] == 2) & (a["position"] == 3)]
    expected = np.zeros((4, 16))
    expected[a["router"].to_numpy(), a["expert"].to_numpy()] = a["weight"].to_numpy()
    assert matrix.index.tolist() == [f"layer {i}" for i in range(4)]
    np.testing.assert_allclose(matrix.to_numpy(dtype=float), expected, rtol=1e-6)
    at.radio(key=state.scoped(state.TOKENS_VALUES, "text")).set_value("prob").run()
    d = run.decisions()
    d = d[(d["sample"] == 2) & (d["position"] == 3)].sort_values("router")
    probs = at.dataframe[0].value.to_numpy(dtype=float)
    np.testing.assert_allclose(probs, np.stack(d["probs"].to_numpy()), rtol=1e-6)


def test_weight_matrix_names_rows_and_fills_unchosen_experts_with_zero() -> None:
    weights = pd.DataFrame(
        {
            "router": [0, 0, 0, 1, 1, 1],
            "layer": [0, 0, 0, 2, 2, 2],
            "call": [0] * 6,
            "expert": [0, 1, 2, 0, 1, 2],
            "weight": [0.7, 0.0, 0.3, 0.0, 1.0, 0.0],
            "prob": [np.nan] * 6,
        }
    )
    matrix = weight_matrix(weights, {0: "layer 0", 1: "layer 2"})
    assert matrix.index.tolist() == ["layer 0", "layer 2"]
    assert matrix.to_numpy().tolist() == [[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]]


def test_tokens_page_filters_samples_by_label(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = tokens_page(store_dir, monkeypatch, "text")
    assert len(at.selectbox(key=state.scoped(state.TOKENS_SAMPLE, "text")).options) == 3
    at.selectbox(key=state.scoped(state.TOKENS_LABEL, "text")).set_value("domain").run()
    at.selectbox(key=state.scoped(state.TOKENS_LABEL_VALUE, "text", "domain")).set_value("code").run()
    options = at.selectbox(key=state.scoped(state.TOKENS_SAMPLE, "text")).options
    assert [o.split(" ")[0] for o in options] == ["#1", "#2"]
    assert at.selectbox(key=state.scoped(state.TOKENS_SAMPLE, "text")).value == 1


def test_tokens_page_draws_the_patch_grid_of_a_diffusion_run(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = tokens_page(store_dir, monkeypatch, "digits")
    at.selectbox(key=state.scoped(state.TOKENS_SAMPLE, "digits")).set_value(1).run()  # the class-7 sample
    at.radio(key=state.scoped(state.TOKENS_BRANCH, "digits")).set_value("uncond").run()
    at.select_slider(key=state.scoped(state.TOKENS_STEP, "digits")).set_value(1).run()
    at.selectbox(key=state.scoped(state.TOKENS_LAYER, "digits")).set_value(3).run()
    assert not at.exception
    run = Store(store_dir).open("digits")
    samples = run.samples()
    uncond = int(samples[(samples["branch"] == "uncond") & (samples["pair"] == "1")]["sample"].iloc[0])
    _, cells = drawn(at, "rs-patch")
    assert len(cells) == 16  # the 4 × 4 patch grid
    assert {c[0]: c[1] for c in cells} == top1(run, sample=uncond, router=3, step=1)
    assert [c[3] for c in cells] == [str(c[1]) for c in cells]  # each cell is labelled with its expert
    assert len(at.get("image")) == 1  # x̂₀ at that step beside the grid


# --- Run page -----------------------------------------------------------------------------------------


def run_page(store: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    at = app_on(store, monkeypatch).run()
    at.switch_page("app_pages/run.py").run()
    assert not at.exception
    return at


@pytest.mark.parametrize(
    ("name", "message"),
    [("../up", "invalid run name"), ("a/b", "invalid run name"), ("text", "already exists")],
)
def test_run_page_refuses_a_bad_run_name_in_one_line(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str, message: str
) -> None:
    before = Store(store_dir).runs()
    at = run_page(store_dir, monkeypatch)
    at.text_input(key=state.RUN_NAME).set_value(name).run()
    at.button(key=state.RUN_RECORD).click().run()
    assert not at.exception
    assert len(at.error) == 1
    assert message in at.error[0].value.replace("\\", "")
    assert Store(store_dir).runs() == before


def test_run_page_reports_a_model_that_does_not_load(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page(store_dir, monkeypatch)
    at.radio(key=state.RUN_MODEL_SOURCE).set_value("other").run()
    at.text_input(key=state.RUN_MODEL_SPEC).set_value("no-such-org/no-such-model").run()
    at.text_input(key=state.RUN_NAME).set_value("hub").run()
    at.button(key=state.RUN_RECORD).click().run()
    assert not at.exception
    assert "cannot load model config" in at.error[0].value.replace("\\", "")
    assert not Store(store_dir).exists("hub")


def test_run_page_records_typed_text_and_shows_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    routescope.record_diffusion(
        routescope.load_model("bundled:dit-digits"), classes=[0], steps=1, store=store, name="seed"
    )
    at = run_page(store, monkeypatch)
    at.selectbox(key=state.RUN_BUNDLED).set_value("tiny-mixtral").run()
    at.text_area(key=state.RUN_TEXT).set_value("hello <i>world</i>\n\nsecond line\n").run()
    at.number_input(key=state.RUN_MAX_NEW_TOKENS).set_value(3).run()
    at.text_input(key=state.RUN_NAME).set_value("typed").run()
    at.button(key=state.RUN_RECORD).click().run()
    assert not at.exception
    assert not at.error
    assert "Recorded run typed" in at.success[0].value
    run = Store(store).open("typed")
    assert run.samples()["text"].tolist() == ["hello <i>world</i>", "second line"]
    assert run.manifest["options"]["max_new_tokens"] == 3
    assert at.selectbox(key=state.RUN_RESULT_RUN).value == "typed"  # the new run is the one shown
    shown = at.dataframe[0].value
    assert shown["text"].tolist() == ["hello <i>world</i>", "second line"]
    assert shown["generated"].tolist() == run.samples()["generated"].tolist()
    at.switch_page("app_pages/tokens.py").run()
    assert at.selectbox(key=state.TOKENS_RUN).value == "typed"  # and the Tokens page opens on it


def test_run_page_samples_digits_and_shows_the_trajectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    routescope.record_diffusion(
        routescope.load_model("bundled:dit-digits"), classes=[0], steps=1, store=store, name="seed"
    )
    at = run_page(store, monkeypatch)
    at.selectbox(key=state.RUN_BUNDLED).set_value("dit-digits").run()
    assert at.text_input(key=state.RUN_CLASSES).value == "0-9"
    at.text_input(key=state.RUN_CLASSES).set_value("1,4").run()
    at.number_input(key=state.RUN_STEPS).set_value(3).run()
    at.text_input(key=state.RUN_NAME).set_value("two-digits").run()
    at.button(key=state.RUN_RECORD).click().run()
    assert not at.exception
    assert not at.error
    run = Store(store).open("two-digits")
    assert (run.manifest["options"]["classes"], run.manifest["options"]["steps"]) == ([1, 4], 3)
    assert at.multiselect(key=state.scoped(state.RUN_TRAJECTORY_STEPS, "two-digits")).value == [0, 1, 2]
    assert len(at.get("image")) == 2 + 3  # the two digits, then x̂₀ of the first at steps 0, 1, 2
    at.text_input(key=state.RUN_CLASSES).set_value("9-1").run()
    at.text_input(key=state.RUN_NAME).set_value("backwards").run()
    at.button(key=state.RUN_RECORD).click().run()
    assert not at.exception
    assert "classes" in at.error[0].value


def test_uploaded_inputs_read_jsonl_labels_and_name_the_upload_in_errors() -> None:
    data = b'{"text": "a b", "domain": "x"}\n{"text": "c", "domain": "y"}\n'
    inputs = uploaded_inputs("mine.jsonl", data, "text", ["domain"])
    assert (inputs.texts, inputs.labels) == (["a b", "c"], {"domain": ["x", "y"]})
    with pytest.raises(InputError, match=r"^mine\.jsonl:2: not valid JSON$"):
        uploaded_inputs("mine.jsonl", b'{"text": "a"}\n{oops\n', "text", [])
    with pytest.raises(InputError, match="no column 'domain'"):
        uploaded_inputs("mine.jsonl", b'{"text": "a"}\n', "text", ["domain"])
    with pytest.raises(InputError, match=r"upload a \.txt or \.jsonl"):
        uploaded_inputs("mine.csv", b"a,b\n", "text", [])
    assert uploaded_inputs("lines.txt", b"one\n\ntwo\n", "text", []).texts == ["one", "two"]
    assert typed_inputs("first\n  \nsecond").texts == ["first", "second"]


def test_check_new_run_validates_before_any_model_loads(store_dir: Path) -> None:
    store = Store(store_dir)
    assert check_new_run(store, " fresh ", overwrite=False) == "fresh"
    with pytest.raises(InvalidNameError):
        check_new_run(store, "..", overwrite=False)
    with pytest.raises(RunExistsError):
        check_new_run(store, "text", overwrite=False)
    assert check_new_run(store, "text", overwrite=True) == "text"


def test_markdown_literal_escapes_what_streamlit_would_format() -> None:
    assert literal("a_b *c* :red[x] <b>") == r"a\_b \*c\* \:red\[x\] \<b\>"


# --- First start and `routescope app` -------------------------------------------------------------------


def test_first_start_records_the_default_runs_into_an_empty_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "empty"
    at = app_on(store, monkeypatch).run()
    assert not at.exception
    assert Store(store).runs() == sorted(d.name for d in DEFAULT_RUNS) == ["digits", "domains"]
    assert at.status[0].label == "Recorded the default runs"
    digits = Store(store).open("digits")
    assert (digits.images().shape, digits.x0()[1].shape) == ((10, 8, 8), (25, 10, 8, 8))
    assert Store(store).open("domains").samples().shape[0] == 100
    at.selectbox(key=state.TOKENS_RUN).set_value("domains").run()
    assert drawn(at, "rs-token")[1]  # something to browse at once


def test_record_calls_on_progress_after_every_batch(tiny_lm: routescope.LoadedModel, store: Store) -> None:
    calls: list[tuple[int, int]] = []
    routescope.record(
        tiny_lm,
        ["a", "bb", "ccc"],
        store=store,
        name="p",
        batch_size=1,
        on_progress=lambda *c: calls.append(c),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_record_diffusion_calls_on_progress_after_every_step(store: Store) -> None:
    calls: list[tuple[int, int]] = []
    dit = routescope.load_model("bundled:dit-digits")
    routescope.record_diffusion(
        dit,
        classes=[1, 2],
        steps=3,
        batch_size=1,
        store=store,
        name="p",
        on_progress=lambda *c: calls.append(c),
    )
    assert calls == [(i, 6) for i in range(1, 7)]  # 3 steps × 2 chunks


def test_app_binds_loopback_headless_without_usage_stats_by_default() -> None:
    args = _parser().parse_args(["app"])
    assert (args.store, args.host, args.port) == ("runs", LOOPBACK, 8501)
    command = streamlit_command(host=args.host, port=args.port)
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert command[1:5] == ["-m", "streamlit", "run", str(ENTRY_SCRIPT)]
    assert options["--server.address"] == "127.0.0.1"
    assert options["--server.port"] == "8501"
    assert options["--server.headless"] == "true"
    assert options["--browser.gatherUsageStats"] == "false"
    assert [bind_warning(host) for host in (LOOPBACK, "localhost", "::1")] == [None, None, None]
    assert bind_warning("0.0.0.0") == (
        "routescope: warning: binding 0.0.0.0, not 127.0.0.1: anyone who can reach this machine can open "
        "the dashboard, run models and write runs"
    )
    assert server_environment(Store("some/where"))[STORE_ENV] == str(Path("some/where").resolve())


def test_app_refuses_bad_options_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("not a folder")
    for args, message in [
        (["--port", "70000"], "--port 70000"),
        (["--host", " "], "--host is empty"),
        (["--store", str(tmp_path / "file")], "is a file"),
    ]:
        assert main(["app", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("routescope: error: ")
        assert message in err
        assert err.count("\n") == 1


def test_pages_list_damaged_runs_and_still_open_the_good_ones(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    shutil.copytree(store_dir / "text", store / "text")
    (store / "broken").mkdir()
    (store / "broken" / "manifest.json").write_text("{not json")
    shutil.copytree(store_dir / "text", store / "future")
    manifest = json.loads((store / "future" / "manifest.json").read_text())
    (store / "future" / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    at = app_on(store, monkeypatch).run()
    assert not at.exception
    assert at.selectbox(key=state.TOKENS_RUN).options == ["text"]
    assert any("broken, future" in c.value for c in at.caption)
    assert drawn(at, "rs-token")[1]
    at.switch_page("app_pages/run.py").run()
    assert not at.exception
    assert at.selectbox(key=state.RUN_RESULT_RUN).options == ["text"]


def _listening(port: int) -> set[str]:
    """Local addresses listening on `port`, from /proc/net/tcp (IPv4, as Streamlit binds here)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state_code = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state_code == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.slow
def test_browser_opens_the_tokens_page_of_a_real_server(store_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    store = tmp_path / "store"
    shutil.copytree(store_dir / "text", store / "text")
    with running_dashboard(store) as port:
        if Path("/proc/net/tcp").exists():
            assert _listening(port) == {"127.0.0.1"}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(".rs-token", timeout=90_000)
            tokens = page.locator(".rs-token")
            assert tokens.first.is_visible()
            run = Store(store).open("text")
            shown = tokens.all_inner_texts()
            assert len(shown) == int((run.tokens()["sample"] == 0).sum())
            assert "".join(shown).replace("↵", "").startswith(HOSTILE)  # escaped, so shown as typed
            assert page.locator("script:has-text('alert')").count() == 0
            assert page.get_by_text("Page not found").count() == 0
            menu = page.locator("[data-testid=stSidebarNav]").inner_text()  # icon, title, icon, ...
            assert [menu.index(p.title) for p in PAGES] == sorted(menu.index(p.title) for p in PAGES)
            page.screenshot(path=str(tmp_path / "tokens.png"), full_page=True)
            placement = next(p for p in PAGES if p.file == "placement.py")
            page.locator("[data-testid=stSidebarNav]").get_by_text(placement.title, exact=True).click()
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=90_000)
            assert page.locator(".js-plotly-plot").count() == 4  # coverage, hot set, devices, predictability
            assert page.locator("[data-testid=stException]").count() == 0
            assert page.locator(".st-key-placement-run input").input_value() == "text"
            browser.close()
    assert (tmp_path / "tokens.png").stat().st_size > 0
