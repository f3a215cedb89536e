"""Models that ship with RouteScope, loadable offline as `bundled:NAME`.

Each entry builds a model and its tokenizer without touching the network. This package imports nothing
else of RouteScope's.
"""

from __future__ import annotations

from .registry import BUNDLED, BundledModel, bundled_names, load_bundled

__all__ = ["BUNDLED", "BundledModel", "bundled_names", "load_bundled"]
