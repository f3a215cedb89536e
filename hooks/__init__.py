"""Capture room: find routers, record their decisions, and read and write the Parquet run store.

The store and the errors import at once; everything that needs torch (recording, router discovery) loads
on first use, so reading runs — the analyses, the dashboard's pages, `routescope report` — never pays
for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from .lazy import lazy_attributes
from .store import Run, Store

if TYPE_CHECKING:
    from .diffusers_loop import record_pipeline
    from .diffusion import record_diffusion
    from .loaded import LoadedModel
    from .normalise import DecodeRule
    from .recorder import record
    from .routers import RouterSpec, describe_routers

_LAZY = {
    "record_pipeline": ".diffusers_loop",
    "record_diffusion": ".diffusion",
    "LoadedModel": ".loaded",
    "DecodeRule": ".normalise",
    "record": ".recorder",
    "RouterSpec": ".routers",
    "describe_routers": ".routers",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


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
