"""Dashboard pages on an imported trace: what the run carries is drawn, what it lacks is one error line.

A vLLM import (expert ids only) opened on the Balance & uncertainty page: the load and balance charts
are drawn from the ids, and the uncertainty part refuses with the registry's one line (issue 16, item 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from routescope.dashboard import ENTRY_SCRIPT, STORE_ENV, state
from routescope.importers import import_trace


def test_balance_page_draws_load_and_refuses_uncertainty_on_an_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(4):
        ids = np.stack([rng.permutation(8)[:2] for _token in range(12 * 3)]).reshape(12, 3, 2)
        record = {"prompt_token_ids": list(range(12)), "output_token_ids": [], "routed_experts": ids.tolist()}
        lines.append(json.dumps(record) + "\n")
    trace = tmp_path / "v.jsonl"
    trace.write_text("".join(lines))
    import_trace("vllm", [trace], tmp_path / "store", "served", n_experts=8)
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "store"))
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=240).run()
    at.switch_page("app_pages/balance.py").run()
    at.selectbox(key=state.BALANCE_RUN).set_value("served").run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("this vLLM import has expert ids only; uncertainty needs router" in e for e in errors), errors
    drawn = {element.proto.id.split("-", 2)[2] for element in at.get("plotly_chart")}
    assert state.scoped(state.BALANCE_LOAD_CHART, "served") in drawn, drawn
