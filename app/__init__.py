"""RouteScope: record, analyse and browse the routing decisions of mixture-of-experts models.

import routescope
lm = routescope.load_model("bundled:tiny-mixtral")
run = routescope.record(lm, ["def f(x):", "The cat sat."], store="runs", name="demo")
run.assignments().head()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hooks import RouteScopeError, Run, Store
from .hooks.lazy import lazy_attributes

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
