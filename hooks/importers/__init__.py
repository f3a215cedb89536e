"""Importers of engine routing traces: each engine's files become an ordinary run through the one driver.

One module per engine (vllm, sglang, megatron, olmoe, llamacpp) parses its files into the batches
`common.TraceSource` checks and writes; `SOURCES` maps an import kind to its source class. The public
entry points (`routescope.importers`, `routescope import`) live in the app room (app/importers.py).
"""

from __future__ import annotations

from .common import TraceSource, import_source
from .errors import TraceError
from .llamacpp import LlamacppSource
from .megatron import MegatronSource
from .olmoe import OlmoeSource
from .sglang import SglangSource
from .vllm import VllmSource

SOURCES: dict[str, type[TraceSource]] = {
    "vllm": VllmSource,
    "sglang": SglangSource,
    "megatron": MegatronSource,
    "olmoe": OlmoeSource,
    "llamacpp": LlamacppSource,
}
"""Import kind → its source class."""

__all__ = [
    "SOURCES",
    "LlamacppSource",
    "MegatronSource",
    "OlmoeSource",
    "SglangSource",
    "TraceError",
    "TraceSource",
    "VllmSource",
    "import_source",
]
