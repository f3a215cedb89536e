"""`record_source()`: the one recording driver — opening checks, manifest, writer and progress, once.

`record`, `record_diffusion` and `record_pipeline` each checked the run name, refused an existing run with
their own copy of the message, built a manifest, opened a `RunWriter`, drove a progress bar and published;
they now build a `Source` (hooks/source.py) and call this driver, so those steps have one home and a new
source (e.g. an importer of engine traces) gets them for free. Checks run before anything costly: a
taken name fails before a model runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyarrow as pa
from tqdm.auto import tqdm

from routescope.store.errors import RunExistsError
from routescope.store.reader import Run, Store, check_run_name
from routescope.store.schema import (
    STEPS,
    assignments_schema,
    decisions_schema,
    samples_schema,
    tokens_schema,
)
from routescope.store.writer import RunWriter

from .manifest import run_manifest
from .source import Source


def check_new_run(store: Store | str, name: str, overwrite: bool) -> Store:
    """The opening checks of every recording: a usable store folder (not a file), a safe run name, and no
    run of that name unless `overwrite`. Returns the store."""
    store = store if isinstance(store, Store) else Store(store)
    check_run_name(name)
    if store.exists(name) and not overwrite:
        raise RunExistsError(name=name, store=store.path)
    return store


def run_schemas(
    labels: list[str],
    *,
    probs: bool,
    extra: Mapping[str, pa.Schema],
    token_loss: bool = False,
    expert_stats: bool = False,
    modality: bool = False,
) -> dict[str, pa.Schema]:
    """The tables of a run: the five every run has, with its label columns, probs, token loss and expert
    output norms when recorded, then `extra`."""
    return {
        "samples": samples_schema(labels),
        "tokens": tokens_schema(token_loss, with_modality=modality),
        "assignments": assignments_schema(expert_stats),
        "decisions": decisions_schema(probs, with_logits=probs),
        "steps": STEPS,
        **extra,
    }


class _Sink:
    """The open run as a source sees it: writes go to the writer, progress to the callback."""

    def __init__(self, writer: RunWriter, on_progress: Callable[[int, int], None] | None, total: int) -> None:
        self.writer, self.on_progress, self.total, self.done = writer, on_progress, total, 0

    def write(self, table: str, rows: pa.Table) -> None:
        self.writer.write(table, rows)

    def advance(self) -> None:
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


def record_source(
    source: Source,
    *,
    store: Store | str,
    name: str,
    overwrite: bool = False,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> Run:
    """Record `source` into a new run `name` of `store` and return the published run.

    `progress` switches the terminal bar (one tick per batch, shown from two batches on); `on_progress(done,
    total)` is called for every unit of progress the source reports. An exception leaves the run marked
    incomplete and earlier runs untouched (hooks/writer.py).
    """
    store = check_new_run(store, name, overwrite)
    plan = source.prepare()
    store, name = source.destination(store, name)
    manifest = run_manifest(source.manifest_facts(), source.routers())
    schemas = run_schemas(
        source.labels,
        probs=source.probs,
        extra=source.extra_tables,
        token_loss=bool(getattr(source, "token_loss", False)),  # optional: older sources lack them
        expert_stats=bool(getattr(source, "expert_stats", False)),
        modality=bool(getattr(source, "modality", False)),
    )
    with RunWriter(store, name, schemas=schemas, manifest=manifest, overwrite=overwrite) as writer:
        batches = source.batches(_Sink(writer, on_progress, plan.units))
        disable = not progress or plan.batches < 2
        for _ in tqdm(
            batches, total=plan.batches, desc=f"{source.verb} {name}", unit="batch", disable=disable
        ):
            pass
        for table, rows in source.dimensions():
            writer.write(table, rows)
        path = writer.publish(source.late_facts() or None)
    return Run(path)
