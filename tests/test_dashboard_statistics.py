"""What the dashboard shows of the on-request statistics and the two-run consistency kinds, driven by
Streamlit's AppTest on real bundled:moe-lm recordings: the expert card's saliency numbers and loss chart,
the saliency heatmap, the Tokens page coloured by loss, the Balance page's loss charts and the Compare
page's consistency charts — each compared with the analysis table computed here from the run, and the
hints a run without the statistics gets instead."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import routescope
from routescope import analysis as A
from routescope.dashboard import ENTRY_SCRIPT, STORE_ENV, state
from routescope.dashboard.markup import loss_top
from routescope.figures.theme import loss_colour
from routescope.probes import RecordOptions, probe_noise
from routescope.store import Store
from tests.test_dashboard_pages import array, charts, open_page

S = state.scoped


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`stats` (moe-lm, 4 domain texts, probs + token loss + expert stats), `noisy` (the same texts with
    logit noise, probs) and `plain` (the same texts, nothing on request)."""
    folder = tmp_path_factory.mktemp("statistics-pages") / "store"
    texts, labels = routescope.load_dataset("bundled:domains")
    domains = np.array(labels["domain"])
    keep = [i for d in ("prose", "code") for i in np.flatnonzero(domains == d)[:2]]
    chosen, domain = [texts[i][:120] for i in keep], {"domain": [str(domains[i]) for i in keep]}
    lm = routescope.load_model("bundled:moe-lm")
    common = {"store": folder, "labels": domain, "progress": False}
    routescope.record(lm, chosen, name="stats", probs=True, token_loss=True, expert_stats=True, **common)
    routescope.record(lm, chosen, name="plain", **common)
    options = RecordOptions(labels=domain, probs=True)
    probe_noise(lm, chosen, store=folder, name="noisy", sigma=1.0, on="logits", options=options)
    return folder


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def grid(table: pd.DataFrame, column: str) -> np.ndarray:
    return table.pivot(index="layer", columns="expert", values=column).to_numpy(dtype=float)


# --- Experts ---------------------------------------------------------------------------------------------


def test_expert_card_shows_saliency_and_loss_beside_load_and_lift(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch, "experts.py", state.EXPERTS_RUN, "stats")
    run = Store(store_dir).open("stats")
    at.selectbox(key=S(state.EXPERTS_LAYER, "stats")).set_value(1).run()
    load = A.expert_load(run)
    busiest = int(load[load["layer"] == 1].sort_values("count", ascending=False)["expert"].iloc[0])
    at.selectbox(key=S(state.EXPERTS_EXPERT, "stats", 1)).set_value(busiest).run()
    assert not at.exception
    saliency = A.compute("saliency", run)
    row = saliency[(saliency["layer"] == 1) & (saliency["expert"] == busiest)].iloc[0]
    shown = metrics(at)
    assert (
        shown["Load share"]
        == f"{float(load[(load['layer'] == 1) & (load['expert'] == busiest)]['load'].iloc[0]):.2%}"
    )
    peak = A.peak_lift(A.specialization(run, "domain"), "domain")
    assert (
        shown["Largest lift (domain)"]
        == f"{float(peak[(peak['layer'] == 1) & (peak['expert'] == busiest)]['lift'].iloc[0]):.2f}"
    )
    assert shown["REAP (gate × norm)"] == f"{float(row['reap']):.4g}"
    assert shown["Mean output norm (EAN)"] == f"{float(row['ean']):.4g}"
    assert shown["Max activation"] == f"{float(row['max_activation']):.4g}"
    at_layer = saliency[saliency["layer"] == 1].sort_values("reap", ascending=False, kind="stable")
    rank = at_layer["expert"].tolist().index(busiest) + 1
    assert shown["Rank by REAP"] == f"{rank} of {int((at_layer['routed'] > 0).sum())}"

    drawn = charts(at)
    np.testing.assert_allclose(
        array(drawn[S(state.EXPERTS_SALIENCY_CHART, "stats", "reap")]["data"][0]["z"]),
        grid(saliency, "reap"),
        equal_nan=True,
    )
    loss = A.compute("loss-by-expert", run)
    part = loss[loss["layer"] == 1].sort_values("expert")
    bars = drawn[S(state.EXPERTS_LOSS_CHART, "stats", 1)]["data"][0]
    np.testing.assert_allclose(array(bars["y"]), part["mean_nll"])
    own = part[part["expert"] == busiest].iloc[0]
    assert f"{float(own['mean_nll']):.3f} nats over {int(own['tokens']):,} tokens" in "\n".join(
        m.value for m in at.markdown
    )

    at.selectbox(key=S(state.EXPERTS_CRITERION, "stats")).set_value("ean").run()
    assert not at.exception
    ean = charts(at)[S(state.EXPERTS_SALIENCY_CHART, "stats", "ean")]["data"][0]["z"]
    np.testing.assert_allclose(array(ean), grid(saliency, "ean"), equal_nan=True)


def test_experts_page_token_routing_views_draw_the_cli_figures(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from routescope.figures import make_figure

    at = open_page(store_dir, monkeypatch, "experts.py", state.EXPERTS_RUN, "stats")
    run = Store(store_dir).open("stats")
    view = at.radio(key=S(state.EXPERTS_TOKEN_VIEW, "stats"))
    assert list(view.options) == [
        "Vocabulary (input token)",
        "Vocabulary (predicted next token)",
        "Paths through depth",
        "Consecutive tokens",
    ]
    for kind in ("vocabulary", "vocabulary-predicted", "paths", "repeat"):
        at.radio(key=S(state.EXPERTS_TOKEN_VIEW, "stats")).set_value(kind).run()
        assert not at.exception
        drawn = charts(at)[S(state.EXPERTS_TOKEN_CHART, "stats", kind)]["data"]
        expected, _table = make_figure(kind, run)
        assert len(drawn) == len(expected.data)
        for shown, trace in zip(drawn, expected.data, strict=True):
            np.testing.assert_allclose(array(shown["x"]), np.asarray(trace.x, dtype=float), equal_nan=True)

    at.selectbox(key=state.EXPERTS_RUN).set_value("plain").run()  # no token loss: no predicted-token view
    assert not at.exception
    assert (
        "Vocabulary (predicted next token)" not in at.radio(key=S(state.EXPERTS_TOKEN_VIEW, "plain")).options
    )


def test_expert_card_of_a_run_without_statistics_says_how_to_record_them(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch, "experts.py", state.EXPERTS_RUN, "plain")
    assert not at.exception
    assert "REAP (gate × norm)" not in metrics(at)
    assert not [
        key for key in charts(at) if key.startswith((state.EXPERTS_SALIENCY_CHART, state.EXPERTS_LOSS_CHART))
    ]
    hints = captions(at)
    assert "record the run with expert stats (`routescope record MODEL ... --expert-stats`" in hints
    assert "record the run with token loss (`routescope record MODEL ... --token-loss`" in hints


# --- Tokens ----------------------------------------------------------------------------------------------


class _Spans(HTMLParser):
    """The token spans a page drew: their attributes by position."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[int, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("class") == "rs-token":
            self.spans[int(str(values["data-position"]))] = values


def token_spans(at: AppTest) -> dict[int, dict[str, str | None]]:
    parser = _Spans()
    parser.feed(next(h.value for h in at.html if 'class="rs-token"' in h.value))
    return parser.spans


def tokens_page(store: Path, monkeypatch: pytest.MonkeyPatch, run: str) -> AppTest:
    monkeypatch.setenv(STORE_ENV, str(store))
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=240).run()
    at.selectbox(key=state.TOKENS_RUN).set_value(run).run()
    assert not at.exception
    return at


def test_tokens_page_colours_by_the_tokens_loss(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = tokens_page(store_dir, monkeypatch, "stats")
    at.selectbox(key=S(state.TOKENS_SAMPLE, "stats")).set_value(1).run()
    radio = at.radio(key=S(state.TOKENS_COLOUR, "stats"))
    assert radio.value == "expert"
    radio.set_value("loss").run()
    assert not at.exception
    tokens = Store(store_dir).open("stats").tokens()
    nll = tokens[tokens["sample"] == 1].set_index("position")["nll"]
    spans = token_spans(at)
    assert sorted(spans) == nll.index.tolist()
    scored = nll.dropna()
    assert len(scored) == len(nll) - 1  # the last token has no next token
    top = float(scored.max())
    assert loss_top(pd.DataFrame({"nll": nll})) == top
    for position, value in nll.items():
        span = spans[int(position)]
        if pd.isna(value):
            assert "data-nll" not in span
            continue
        assert float(str(span["data-nll"])) == pytest.approx(float(value))
        assert f"background: {loss_colour(float(value), top)};" in str(span["style"])
        assert f"loss {float(value):.3f} nats" in str(span["title"])
    assert len({spans[int(p)]["style"] for p in scored.index}) > 1  # a real scale, not one colour
    assert any('class="rs-loss-legend"' in h.value for h in at.html)


def test_tokens_page_offers_loss_only_for_runs_with_token_loss(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = tokens_page(store_dir, monkeypatch, "plain")
    assert S(state.TOKENS_COLOUR, "plain") not in [r.key for r in at.radio]
    spans = token_spans(at)
    assert spans
    assert all("data-nll" not in span for span in spans.values())


# --- Balance & uncertainty -------------------------------------------------------------------------------


def test_balance_page_draws_loss_by_uncertainty_and_by_label(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch, "balance.py", state.BALANCE_RUN, "stats")
    assert not at.exception
    run = Store(store_dir).open("stats")
    drawn = charts(at)
    table = A.compute("loss-by-uncertainty", run)
    lines = drawn[S(state.BALANCE_LOSS_CHART, "stats")]["data"]
    for line, (_, part) in zip(lines, table.groupby("layer", sort=True), strict=True):
        np.testing.assert_allclose(array(line["y"]), part.sort_values("bin")["mean_nll"])
    by_domain = A.compute("loss-by-label", run, label="domain").sort_values("mean_nll", ascending=False)
    bars = drawn[S(state.BALANCE_LOSS_LABEL_CHART, "stats", "domain")]["data"][0]
    np.testing.assert_allclose(array(bars["x"]), by_domain["mean_nll"])
    assert list(bars["y"]) == by_domain["domain"].tolist()
    plain = open_page(store_dir, monkeypatch, "balance.py", state.BALANCE_RUN, "plain")
    assert "Loss against uncertainty needs per-token loss" in captions(plain)


# --- Compare ---------------------------------------------------------------------------------------------


def test_compare_page_draws_the_consistency_kinds(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(store_dir, monkeypatch, "compare.py", state.COMPARE_RUN, "stats")
    at.selectbox(key=S(state.COMPARE_OTHER, "stats")).set_value("noisy").run()
    assert not at.exception
    store = Store(store_dir)
    run, noisy = store.open("stats"), store.open("noisy")
    drawn = charts(at)
    replay = A.replay_by_sample(run, noisy)
    replay_bars = drawn[S(state.COMPARE_REPLAY_CHART, "stats", "noisy")]["data"]
    np.testing.assert_allclose(array(replay_bars[0]["y"]), replay["share_differing"])
    np.testing.assert_allclose(array(replay_bars[1]["y"]), replay["share_decisions"])
    ranks = A.rank_consistency(run, noisy)
    rank_lines = {t["name"]: t for t in drawn[S(state.COMPARE_RANK_CHART, "stats", "noisy")]["data"]}
    np.testing.assert_allclose(array(rank_lines["Kendall τ (mean)"]["y"]), ranks["mean_tau"])
    np.testing.assert_allclose(array(rank_lines["same top-k set"]["y"]), ranks["share_same_set"])
    flips = A.boundary_flips(run, noisy)
    flip_bars = drawn[S(state.COMPARE_FLIPS_CHART, "stats", "noisy")]["data"][0]
    np.testing.assert_allclose(array(flip_bars["y"]), flips["flip_share"])
    assert flips["flips"].sum() > 0

    at.selectbox(key=S(state.COMPARE_OTHER, "stats")).set_value("plain").run()
    assert not at.exception
    drawn = charts(at)
    assert S(state.COMPARE_REPLAY_CHART, "stats", "plain") in drawn
    assert S(state.COMPARE_RANK_CHART, "stats", "plain") not in drawn
    assert "record plain with probs" in captions(at)


# --- Run -------------------------------------------------------------------------------------------------


def test_run_page_records_token_loss_and_expert_stats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    routescope.record_diffusion(
        routescope.load_model("bundled:dit-digits"), classes=[0], steps=1, store=store, name="seed"
    )
    monkeypatch.setenv(STORE_ENV, str(store))
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=240).run()
    at.switch_page("app_pages/run.py").run()
    at.selectbox(key=state.RUN_BUNDLED).set_value("tiny-mixtral").run()
    at.text_area(key=state.RUN_TEXT).set_value("hello world\nsecond line\n").run()
    at.checkbox(key=state.RUN_TOKEN_LOSS).check().run()
    at.checkbox(key=state.RUN_EXPERT_STATS).check().run()
    at.text_input(key=state.RUN_NAME).set_value("stats").run()
    at.button(key=state.RUN_RECORD).click().run()
    assert not at.exception
    assert not at.error
    run = Store(store).open("stats")
    assert (run.info.token_loss, run.info.expert_stats) == (True, True)
    assert run.tokens()["nll"].notna().any()
    assert run.assignments()["output_norm"].notna().all()
