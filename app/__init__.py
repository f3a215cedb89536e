"""RouteScope: record, analyse and browse the routing decisions of mixture-of-experts models.

import routescope
lm = routescope.load_model("bundled:tiny-mixtral")
run = routescope.record(lm, ["def f(x):", "The cat sat."], store="runs", name="demo")
run.assignments().head()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from routescope.store import RouteScopeError, Run, Store
from routescope.store.lazy import lazy_attributes

if TYPE_CHECKING:
    from routescope.hooks import LoadedModel, record, record_diffusion, record_pipeline

    from .datasets import load_dataset
    from .loading import load_model

_LAZY = {  # these need torch: loaded on first use so reading runs stays light
    "load_dataset": ".datasets",
    "load_model": ".loading",
    "LoadedModel": "routescope.hooks",
    "record": "routescope.hooks",
    "record_diffusion": "routescope.hooks",
    "record_pipeline": "routescope.hooks",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


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
