"""All of the dashboard's caching, in one place.

- Models: `st.cache_resource` (one shared copy per process, never pickled), keyed by the model spec; loaded
  by jobs in their worker thread (so without a spinner, which needs a page).
- Jobs: `jobs()`, the one `jobs.Jobs` registry of this server process (`st.cache_resource`).
- Runs and tables: keyed by the run folder *and* the modification time of its `manifest.json`, which a
  recording writes last (and `--overwrite` replaces), so a re-recorded run is never served stale.
  `table(run, kind, **options)` caches any entry of `views.TABLES` — every registered analysis and view
  of `routescope.analysis` (raw tables, aggregates, per-sample views), computed by `analysis.compute` —
  with `st.cache_data`; a new page registers its view in `analysis`, not a cache.
  `pair_table(run, other, kind, **options)` does the same for `views.PAIR_TABLES` (two runs compared),
  keyed by both runs.
- Images (`run.images()`, `run.x0()`) likewise with `st.cache_data`.
Nothing else in the dashboard calls `st.cache_*`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from routescope.hooks import LoadedModel
from routescope.store import InputError, Run, Store
from routescope.store.schema import MANIFEST_FILE

from ..loading import load_model
from .jobs import Jobs
from .views import PAIR_TABLES, TABLES

MAX_TABLES = 256
"""Cached tables kept per process (least recently used ones go first)."""


def stamp(run_path: Path) -> int:
    """The run's cache key part: its manifest's modification time in nanoseconds."""
    return (run_path / MANIFEST_FILE).stat().st_mtime_ns


@st.cache_resource(show_spinner=False, max_entries=4)
def model(spec: str) -> LoadedModel:
    """A loaded model, shared by every session and job of this process (failures are not cached)."""
    return load_model(spec)


@st.cache_resource(show_spinner=False)
def jobs() -> Jobs:
    """The server's job registry: one per process, shared by every session, page and tab."""
    return Jobs()


@st.cache_resource(show_spinner=False, max_entries=64)
def _run(path: str, stamp: int) -> Run:
    return Run(Path(path))


def run(store: Store, name: str) -> Run:
    """Open a complete run of `store` (RouteScopeError with a one-line message if it cannot be)."""
    path = store.run_path(name)
    if not (path / MANIFEST_FILE).is_file():
        return store.open(name)  # raises the store's own message (not found, incomplete, damaged)
    return _run(str(path), stamp(path))


@st.cache_data(show_spinner=False, max_entries=MAX_TABLES)
def _table(path: str, stamp: int, kind: str, options: tuple[tuple[str, Any], ...]) -> pd.DataFrame:
    return TABLES[kind](_run(path, stamp), **dict(options))


def table(run: Run, kind: str, **options: Any) -> pd.DataFrame:
    """`views.TABLES[kind](run, **options)`, cached per run folder, manifest time, kind and options."""
    if kind not in TABLES:
        raise InputError(f"unknown table {kind!r}; known: {', '.join(sorted(TABLES))}")
    return _table(str(run.path), stamp(run.path), kind, tuple(sorted(options.items())))


@st.cache_data(show_spinner=False, max_entries=MAX_TABLES // 4)
def _pair_table(
    path: str, stamp: int, other: str, other_stamp: int, kind: str, options: tuple[tuple[str, Any], ...]
) -> pd.DataFrame:
    return PAIR_TABLES[kind](_run(path, stamp), _run(other, other_stamp), **dict(options))


def pair_table(run: Run, other: Run, kind: str, **options: Any) -> pd.DataFrame:
    """`views.PAIR_TABLES[kind](run, other, **options)`, cached per both runs' folders and manifest times."""
    if kind not in PAIR_TABLES:
        raise InputError(f"unknown table of two runs {kind!r}; known: {', '.join(sorted(PAIR_TABLES))}")
    key = tuple(sorted(options.items()))
    return _pair_table(str(run.path), stamp(run.path), str(other.path), stamp(other.path), kind, key)


@st.cache_data(show_spinner=False, max_entries=16)
def _images(path: str, stamp: int) -> np.ndarray:
    return _run(path, stamp).images()


@st.cache_data(show_spinner=False, max_entries=16)
def _x0(path: str, stamp: int) -> tuple[np.ndarray, np.ndarray]:
    return _run(path, stamp).x0()


def images(run: Run) -> np.ndarray:
    """A diffusion run's final images `[n, H, W]` (cached)."""
    return _images(str(run.path), stamp(run.path))


def x0(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """A diffusion run's `(steps, x̂₀ [S, n, H, W])` (cached; the run must have an `x0` table)."""
    return _x0(str(run.path), stamp(run.path))
