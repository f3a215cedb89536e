"""Shared fixtures: the bundled tiny Mixtral and the figure tests' recordings (built once per session) and a
fresh store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import routescope
from routescope.hooks import LoadedModel
from routescope.store import Store
from tests.figure_runs import record_figure_runs

torch.set_num_threads(2)
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach a model hub at test time (subprocesses inherit it)


@pytest.fixture(scope="session")
def tiny_lm() -> LoadedModel:
    """bundled:tiny-mixtral: a real MixtralForCausalLM (untrained, seeded) with a byte tokenizer."""
    return routescope.load_model("bundled:tiny-mixtral")


@pytest.fixture(scope="session")
def figure_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Real recordings for the figure tests (tests/figure_runs.py)."""
    return record_figure_runs(tmp_path_factory.mktemp("figures"))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")
