"""Importers of engine routing traces: each engine's files become an ordinary run through the one driver.

One module per engine (vllm, sglang, megatron, olmoe, llamacpp) parses its files into the batches
`common.TraceSource` checks and writes; `SOURCES` maps an import kind to its source class. The public
entry points (`routescope.importers`, `routescope import`) live in the app room (app/importers.py).
"""

from __future__ import annotations

from .common import TraceError, TraceSource, import_source
from .vllm import VllmSource

SOURCES: dict[str, type[TraceSource]] = {
    "vllm": VllmSource,
}
"""Import kind → its source class."""

__all__ = ["SOURCES", "TraceError", "TraceSource", "VllmSource", "import_source"]
