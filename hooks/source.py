"""The `Source` protocol: what one recording reads from, so that one driver (hooks/driver.py) can record it.

A text model run over inputs, a diffusion model's sampler and a diffusers pipeline differ in how their
router calls come about, and an importer of engine traces would differ again; what a run needs from each
is the same: the routers, the batches of router rows, the dimension tables (samples, tokens, steps,
images) and the facts of the manifest. Before this protocol each entry point also repeated the opening
checks, the manifest, the writer and the progress bar; now a source gives the parts that differ and
`record_source` does the rest once.

Life of a source under the driver: `prepare()` (after the store and name are checked: validate inputs,
describe routers; returns a `Plan`), `destination()`, `routers()` and `manifest_facts()` (the opening
manifest), `batches(sink)` (writes router rows through the sink, yields once per batch), `dimensions()`
and `late_facts()` (manifest entries known only after the batches, e.g. routers seen by listening).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

    from routescope.store.reader import Store

    from .manifest import ManifestFacts
    from .routers import RouterSpec


@dataclass(frozen=True)
class Plan:
    """What a prepared source will do: `batches` it yields (the terminal bar) and `units` of progress it
    reports through `Sink.advance` (the `on_progress(done, total)` callback; a batch or a sampler step)."""

    batches: int
    units: int


class Sink(Protocol):
    """Where a source writes while its batches run (the driver's open run)."""

    def write(self, table: str, rows: pa.Table) -> None:
        """Append rows to a table of the run (cast to, so checked against, the table's schema)."""

    def advance(self) -> None:
        """One unit of progress is done (see `Plan.units`)."""


@runtime_checkable
class Source(Protocol):
    """One recording's source of routing decisions; `BaseSource` gives the optional parts' defaults."""

    labels: list[str]
    """Label columns of the samples table."""
    probs: bool
    """Whether decisions carry the full `probs` and `logits` columns."""
    verb: str
    """The progress bar's word: `recording NAME`, `sampling NAME`."""
    extra_tables: Mapping[str, pa.Schema]
    """Tables beyond samples, tokens, assignments, decisions and steps (e.g. `images`, `x0`)."""

    def prepare(self) -> Plan:
        """Check the inputs and describe the routers; runs after the store and run name are checked."""

    def destination(self, store: Store, name: str) -> tuple[Store, str]:
        """Where the run is written (a shard writes a part run into a parts store)."""

    def routers(self) -> list[RouterSpec]:
        """Routers known before writing (empty when the source learns them while running)."""

    def manifest_facts(self) -> ManifestFacts:
        """Kind, model, tokenizer, labels, seed, options: the source's part of the manifest."""

    def batches(self, sink: Sink) -> Iterator[None]:
        """Run and write every batch through `sink`, yielding after each one."""

    def dimensions(self) -> Iterator[tuple[str, pa.Table]]:
        """The dimension tables' rows (samples, tokens, steps, images), after the batches."""

    def late_facts(self) -> dict[str, Any]:
        """Manifest entries known only after the batches (added when the run is published)."""


class BaseSource:
    """Defaults for a `Source`: written where asked, no extra tables, nothing learnt late."""

    labels: list[str]
    probs: bool = False
    token_loss: bool = False
    """Whether tokens carry `nll` and `predicted` (optional for a source: the driver reads it by getattr)."""
    expert_stats: bool = False
    """Whether assignments carry `output_norm` (optional, like `token_loss`)."""
    verb: str = "recording"
    extra_tables: Mapping[str, pa.Schema] = {}

    def destination(self, store: Store, name: str) -> tuple[Store, str]:
        return store, name

    def late_facts(self) -> dict[str, Any]:
        return {}
