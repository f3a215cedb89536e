"""The run store: schema, typed manifest, writer, reader (`Store`, `Run`), shards and errors.

Torch-free: importing `routescope.store` loads pyarrow, pandas and numpy only (no torch, transformers,
nnsight, streamlit or plotly), so analyses and front ends read runs without paying for a model. It
imports nothing else of RouteScope: capture (`routescope.hooks`) writes through it and analysis
(`routescope.analysis`) reads through it (docs/architecture.md).
"""

from __future__ import annotations

from .errors import (
    CorruptRunError,
    ExportError,
    InputError,
    InterventionError,
    InvalidNameError,
    ModelSpecError,
    NoRoutersError,
    RemoteUnavailableError,
    RouterOutputError,
    RouteScopeError,
    RunExistsError,
    RunNotFoundError,
    StoreError,
    first_damage,
)
from .manifest import RouterInfo, RunManifest
from .reader import Run, Store, check_run_name
from .writer import RunWriter

__all__ = [
    "CorruptRunError",
    "ExportError",
    "InputError",
    "InterventionError",
    "InvalidNameError",
    "ModelSpecError",
    "NoRoutersError",
    "RemoteUnavailableError",
    "RouteScopeError",
    "RouterInfo",
    "RouterOutputError",
    "Run",
    "RunExistsError",
    "RunManifest",
    "RunNotFoundError",
    "RunWriter",
    "Store",
    "StoreError",
    "check_run_name",
    "first_damage",
]
