"""The Interventions page's Reroute section (AppTest): a reroute run recorded here is shown as the share
with a better route by margin and entropy bin, equal to `reroute_share` computed here from the run; a bad
K is one red line and writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import routescope
from routescope.analysis.reroute import reroute_share
from routescope.dashboard import state
from routescope.probes import probe_reroute
from routescope.store import Store
from tests.planted import planted_run
from tests.test_dashboard_interventions import array, charts, open_page


def test_reroute_section_shows_the_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "store"
    planted_run(Store(folder), "planted", experts={0: [[0, 1], [1, 2], [2, 3]]}, n_experts=4)
    lm = routescope.load_model("bundled:tiny-mixtral")
    texts = ["def f(x):\n    return x + 1", "The cat sat on the mat.", "2 + 3 = 5"]
    run = probe_reroute(lm, texts, store=folder, name="rr", alternatives=3, tokens=30, seed=1)
    at = open_page(folder, monkeypatch)
    drawn = charts(at)
    for by in ("margin", "entropy"):
        expected = reroute_share(run, by=by)
        bars = drawn[state.scoped(state.REROUTE_CHART, "rr", by)]["data"][0]
        want = expected[expected["bin"] != "(all)"]["share"].to_numpy(dtype=float)
        assert np.allclose(array(bars["y"]), want)
    at.number_input(key=state.REROUTE_ALTERNATIVES).set_value(0)
    at.text_input(key=state.REROUTE_NAME).set_value("bad")
    at.button(key=state.REROUTE_START).click().run()
    assert not at.exception
    assert any("alternatives must be ≥ 1" in e.value for e in at.error)
    assert not Store(folder).exists("bad")
