"""Capture room: find routers, normalise their outputs, record their decisions (through
`routescope.store`'s writer) and intervene on them.

Everything here needs torch and loads on first use, so `import routescope.hooks` stays light.

Compatibility: the run store (`Store`, `Run`, the errors) lives in `routescope.store` since the store
moved out of this package; the names below that come from there are re-exported only so that code
written against `from routescope.hooks import Run, Store, InputError` keeps working. New code imports
them from `routescope.store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# re-exported for compatibility only (see the docstring): new code imports these from routescope.store
from routescope.store import (
    CorruptRunError,
    InputError,
    InvalidNameError,
    ModelSpecError,
    NoRoutersError,
    RouterOutputError,
    RouteScopeError,
    Run,
    RunExistsError,
    RunNotFoundError,
    Store,
    StoreError,
)
from routescope.store.lazy import lazy_attributes

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
