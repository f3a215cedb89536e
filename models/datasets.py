"""Datasets that ship with RouteScope, loadable offline as `bundled:NAME` (e.g. `--dataset bundled:domains`).

Each entry returns the texts and their label columns (column name → one value per text), which is exactly
what `record(..., labels=...)` takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _domains() -> tuple[list[str], dict[str, list[str]]]:
    from .moe_lm.load import load_domains

    return load_domains()


@dataclass(frozen=True)
class BundledDataset:
    """A bundled dataset: a loader returning (texts, label columns) and one line saying what it is."""

    load: Callable[[], tuple[list[str], dict[str, list[str]]]]
    description: str


BUNDLED_DATASETS: dict[str, BundledDataset] = {
    "domains": BundledDataset(
        load=_domains,
        description="held-out evaluation set of moe-lm: 5 domains (prose, code, arithmetic, json, "
        "chemistry), labelled `domain`",
    ),
}


def bundled_dataset_names() -> list[str]:
    return sorted(BUNDLED_DATASETS)


def load_bundled_dataset(name: str) -> tuple[list[str], dict[str, list[str]]]:
    """Texts and label columns of a bundled dataset; KeyError names the known datasets."""
    if name not in BUNDLED_DATASETS:
        raise KeyError(name)
    return BUNDLED_DATASETS[name].load()
