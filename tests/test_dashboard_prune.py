"""The Interventions page's Prune section (AppTest): a study run from the page records the runs
`routescope probe prune` would, and the curve it shows is `prune_curve` of those runs; a share outside
(0, 1) is one red line and leaves the store as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from routescope.analysis.pruning import prune_curve
from routescope.dashboard import state
from routescope.probes import probe_of
from routescope.store import Store
from tests.planted import planted_run
from tests.test_dashboard_interventions import array, charts, open_page, shown


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    planted_run(Store(folder), "planted", experts={0: [[0, 1], [1, 2], [2, 3]]}, n_experts=4)
    return folder


def _start(at: AppTest, ratios: str) -> AppTest:
    at.slider(key=state.PRUNE_MAX_TEXTS).set_value(2).run()
    at.multiselect(key=state.PRUNE_CRITERIA).set_value(["reap", "random"]).run()
    at.text_input(key=state.PRUNE_RATIOS).set_value(ratios).run()
    at.button(key=state.PRUNE_START).click().run()
    assert not at.exception
    return at


def test_a_prune_study_from_the_page_records_its_runs_and_shows_the_curve(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch)
    assert "No prune study in the store yet." in [i.value for i in at.info]
    _start(at, "0.25")
    assert at.success[0].value == "Recorded runs prune.base, prune.reap-0.25, prune.random-0.25."
    store = Store(store_dir)
    assert store.runs() == ["planted", "prune.base", "prune.random-0.25", "prune.reap-0.25"]
    assert probe_of(store.open("prune.reap-0.25"))["params"]["criterion"] == "reap"
    at.run()
    assert at.selectbox(key=state.PRUNE_RESULT_RUN).options == ["prune.base"]
    expected = prune_curve(
        store.open("prune.base"), [store.open("prune.reap-0.25"), store.open("prune.random-0.25")]
    )
    table = shown(at, list(expected.columns))
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expected, check_dtype=False)
    lines = charts(at)[state.scoped(state.PRUNE_CHART, "prune.base")]["data"]
    assert [line["name"] for line in lines] == ["random", "reap"]
    np.testing.assert_allclose(array(lines[1]["y"]), expected.query("criterion == 'reap'")["loss"])


def test_a_share_outside_zero_one_is_one_line_and_writes_nothing(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(store_dir, monkeypatch)
    _start(at, "0.25, 1.5")
    assert len(at.error) == 1
    assert at.error[0].value.startswith("prune ratio 1.5 is outside (0, 1)")
    assert Store(store_dir).runs() == ["planted"]
