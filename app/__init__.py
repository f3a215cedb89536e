"""RouteScope: record, analyse and browse the routing decisions of mixture-of-experts models.

import routescope
lm = routescope.load_model("bundled:tiny-mixtral")
run = routescope.record(lm, ["def f(x):", "The cat sat."], store="runs", name="demo")
run.assignments().head()
"""

from __future__ import annotations

from .datasets import load_dataset
from .hooks import LoadedModel, RouteScopeError, Run, Store, record, record_diffusion, record_pipeline
from .loading import load_model

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
