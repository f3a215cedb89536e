"""Capture room: find routers, record their decisions, and read and write the Parquet run store."""

from __future__ import annotations

from .diffusers_loop import record_pipeline
from .diffusion import record_diffusion
from .errors import (
    CorruptRunError,
    InputError,
    InvalidNameError,
    ModelSpecError,
    NoRoutersError,
    RouterOutputError,
    RouteScopeError,
    RunExistsError,
    RunNotFoundError,
    StoreError,
)
from .loaded import LoadedModel
from .normalise import DecodeRule
from .recorder import record
from .routers import RouterSpec, describe_routers
from .store import Run, Store

__all__ = [
    "CorruptRunError",
    "DecodeRule",
    "InputError",
    "InvalidNameError",
    "LoadedModel",
    "ModelSpecError",
    "NoRoutersError",
    "RouteScopeError",
    "RouterOutputError",
    "RouterSpec",
    "Run",
    "RunExistsError",
    "RunNotFoundError",
    "Store",
    "StoreError",
    "describe_routers",
    "record",
    "record_diffusion",
    "record_pipeline",
]
