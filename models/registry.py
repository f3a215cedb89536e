"""The table of bundled models: name → how to build it offline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .tiny_mixtral import build_tiny_mixtral


@dataclass(frozen=True)
class BundledModel:
    """A bundled model: a builder returning (model, tokenizer) and one line saying what it is."""

    build: Callable[[], tuple[torch.nn.Module, Any]]
    description: str


BUNDLED: dict[str, BundledModel] = {
    "tiny-mixtral": BundledModel(
        build=build_tiny_mixtral,
        description="untrained 4-layer Mixtral (8 experts, top-2, hidden 256), seeded; a smoke-test model",
    ),
}


def bundled_names() -> list[str]:
    return sorted(BUNDLED)


def load_bundled(name: str) -> tuple[torch.nn.Module, Any]:
    """Build a bundled model and its tokenizer; KeyError names the known models."""
    if name not in BUNDLED:
        raise KeyError(name)
    return BUNDLED[name].build()
