"""RouteScope: record, analyse and browse the routing decisions of mixture-of-experts models.

import routescope
lm = routescope.load_model("bundled:tiny-mixtral")
run = routescope.record(lm, ["def f(x):", "The cat sat."], store="runs", name="demo")
run.assignments().head()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .hooks import RouteScopeError, Run, Store

if TYPE_CHECKING:
    from .datasets import load_dataset
    from .hooks import LoadedModel, record, record_diffusion, record_pipeline
    from .loading import load_model

_LAZY = {  # these need torch: loaded on first use so reading runs stays light
    "load_dataset": ".datasets",
    "load_model": ".loading",
    "LoadedModel": ".hooks",
    "record": ".hooks",
    "record_diffusion": ".hooks",
    "record_pipeline": ".hooks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "LoadedModel",
    "RouteScopeError",
    "Run",
    "Store",
    "__version__",
    "load_dataset",
    "load_model",
    "record",
    "record_diffusion",
    "record_pipeline",
]
