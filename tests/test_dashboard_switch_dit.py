"""The Noise steps page on a run of timestep-gated routers (Switch-DiT): it draws the denoising paths from
the run's own table and leaves out the per-patch views, which such routers do not have."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from routescope import analysis as A
from routescope.dashboard import ENTRY_SCRIPT, STORE_ENV, state
from routescope.hooks import LoadedModel, record_diffusion
from routescope.models.switch_dit import SwitchDiT, SwitchDiTConfig, sample
from routescope.store import Store

S = state.scoped


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gated") / "store"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = SwitchDiTConfig(
        hidden_size=32, depth=2, num_heads=2, n_routed_experts=4, expert_hidden=16, shared_expert_hidden=16,
        frequency_embedding_size=32,
    )  # fmt: skip
    model = SwitchDiT(config).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.moe.gate.proj.weight.normal_(0, 1.0)
    loaded = LoadedModel(model=model, sampler=sample, spec="tiny-switch-dit")
    record_diffusion(
        loaded, classes=[1, 2], steps=4, store=folder, name="gated", engine="hooks", progress=False
    )
    torch.set_num_threads(previous)
    return folder


def z_of(figure: dict[str, Any]) -> np.ndarray:
    value = figure["data"][0]["z"]
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return data.reshape([int(s) for s in str(value["shape"]).split(",")]).astype(float)
    return np.array(value, dtype=float)


def test_noise_steps_page_shows_denoising_paths_and_no_patch_views(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STORE_ENV, str(store_dir))
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=240).run()
    at.switch_page("app_pages/noise_steps.py").run()
    at.selectbox(key=state.NOISE_RUN).set_value("gated").run()
    assert not at.exception
    drawn = {e.proto.id.split("-", 2)[2]: json.loads(e.proto.spec) for e in at.get("plotly_chart")}
    assert S(state.NOISE_PATHS_CHART, "gated") in drawn
    assert S(state.NOISE_SPATIAL_CHART, "gated", 0) not in drawn
    assert not [h for h in at.html if 'class="rs-patch"' in h.value]
    assert any("once per image and step" in c.value for c in at.caption)
    paths = A.denoising_paths(Store(store_dir).open("gated"))
    expected = paths.pivot_table(index=["layer", "expert"], columns="step", values="usage").to_numpy()
    np.testing.assert_allclose(z_of(drawn[S(state.NOISE_PATHS_CHART, "gated")]), expected)
