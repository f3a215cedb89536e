"""Models that ship with RouteScope, loadable offline as `bundled:NAME`.

Each entry builds a model and its tokenizer without touching the network. This package imports nothing
else of RouteScope's.
"""

from __future__ import annotations

from .datasets import BUNDLED_DATASETS, BundledDataset, bundled_dataset_names, load_bundled_dataset
from .registry import (
    BUNDLED,
    CHECKPOINT_FAMILIES,
    BundledModel,
    CheckpointFamily,
    bundled_names,
    load_bundled,
)

__all__ = [
    "BUNDLED",
    "BUNDLED_DATASETS",
    "CHECKPOINT_FAMILIES",
    "BundledDataset",
    "BundledModel",
    "CheckpointFamily",
    "bundled_dataset_names",
    "bundled_names",
    "load_bundled",
    "load_bundled_dataset",
]
