"""Shared fixtures: the bundled tiny Mixtral (built once per session) and a fresh store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import routescope
from routescope.hooks import LoadedModel
from routescope.store import Store

torch.set_num_threads(2)
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach a model hub at test time (subprocesses inherit it)


@pytest.fixture(scope="session")
def tiny_lm() -> LoadedModel:
    """bundled:tiny-mixtral: a real MixtralForCausalLM (untrained, seeded) with a byte tokenizer."""
    return routescope.load_model("bundled:tiny-mixtral")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")
