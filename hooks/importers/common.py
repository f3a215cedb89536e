"""What every engine-trace importer shares: parsed requests → checked, vectorised run tables.

An engine writes routing in its own shape; each importer (vllm.py, sglang.py, ...) only parses its files
into `Requests` batches — expert ids `[tokens, layers, k]` with the requests' token ids — and `TraceSource`
does the rest once: shape checks against the first record, id range checks, the dense-layer rule, the
assignments/decisions/tokens/samples rows, labels, and the routers learnt while reading (published as a
late fact). Counts-only formats write `CountRows` instead (one assignment row per step × layer × expert
whose `weight` is the count). Every problem is a `TraceError` naming the file and the record, raised
before anything is published; `import_source` removes the partial run it leaves.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from routescope.store.errors import InputError
from routescope.store.reader import Run, Store
from routescope.store.schema import ASSIGNMENTS

from ..dimensions import samples_table, steps_table
from ..driver import record_source
from ..manifest import ManifestFacts
from ..routers import RouterSpec
from ..source import BaseSource, Plan, Sink
from ..tables import TokenTexts, token_table
from .errors import bad, line_number
from .labels import read_labels
from .scores import decision_rows
from .streams import prefetch

MAX_EXACT = 1 << 24
"""Largest count a float32 `weight` holds exactly: bigger counts are split over several rows."""


@dataclass
class Requests:
    """One parsed batch of requests (or of Megatron step groups): everything an importer read."""

    ids: np.ndarray
    """[tokens, layers, k] expert ids, the requests' routed tokens one after another."""
    rows: np.ndarray
    """Routed tokens of each request (sums to `ids.shape[0]`)."""
    path: Path
    first: int = 0
    """0-based index of the batch's first request in its file (for `place`)."""
    jsonl: bool = False
    """Requests are the file's non-blank lines: `place` names the line."""
    token_ids: list[np.ndarray] | None = None
    """Each request's token ids (prompt then output), None when the format has none."""
    prompt: np.ndarray | None = None
    """Prompt tokens of each request (the rest are generated)."""
    step: np.ndarray | None = None
    """Each request's step (Megatron: the training step)."""
    positions: np.ndarray | None = None
    """Each routed token's position (default: 0, 1, ... within its request); token ids then align with
    the routed rows."""
    where: str | None = None
    """The batch's place when it is one record (`record 3` of a dump), else found by `place`."""
    logits: np.ndarray | None = None
    """[tokens, layers, experts] router logits when the trace has them (Megatron's logits sidecar)."""

    def place(self, request: int) -> str:
        """`line N` (JSONL) or `record N` of the batch's `request`-th request, for error messages."""
        if self.where is not None:
            return self.where
        index = self.first + request
        if self.jsonl:
            line = line_number(self.path, index)
            if line is not None:
                return f"line {line}"
        return f"record {index + 1}"


@dataclass
class CountRows:
    """Counts-only data: `count[step, layer, expert]` for the given `layers` and `steps`."""

    counts: np.ndarray
    steps: np.ndarray
    layers: list[int]


@dataclass
class Layers:
    """The layer columns of `Requests.ids`: their layer numbers and stacks (fixed by the first batch)."""

    numbers: list[int]
    stacks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stacks = self.stacks or ["decoder"] * len(self.numbers)


class TraceSource(BaseSource):
    """A `Source` over an engine's trace files; subclasses implement `read()` (and say what they know)."""

    engine = "trace"
    capabilities: tuple[str, ...] = ("ids", "ranks", "token_ids", "positions")
    verb = "importing"

    def __init__(
        self,
        files: Sequence[Path | str],
        *,
        tokenizer: Any = None,
        labels: Path | str | None = None,
        label_columns: Sequence[str] | None = None,
        n_experts: int | None = None,
        tokenizer_name: str | None = None,
    ) -> None:
        self.files = [Path(f) for f in files]
        if not self.files:
            raise InputError(
                "give at least one trace file",
            )
        for path in self.files:
            if not path.is_file():
                raise InputError(
                    f"{path}: no such file",
                )
        self.texts = TokenTexts(tokenizer)
        self.tokenizer, self.tokenizer_name = tokenizer, tokenizer_name
        self.label_values = read_labels(labels, label_columns)
        self.labels = list(self.label_values)
        self.n_experts = n_experts
        self.layers: Layers | None = None
        self.k = 0
        self.max_id: np.ndarray | None = None
        self.unrouted: np.ndarray | None = None
        self.samples: list[tuple[int, int, int]] = []  # (routed rows, tokens, generated) per sample
        self.token_rows: list[pa.Table] = []
        self.steps_seen: set[int] = set()
        self.count_layers: list[int] | None = None
        self.started = False

    # the parts a subclass gives ----------------------------------------------------------------------

    def read(self) -> Iterator[Requests | CountRows]:
        """Parse the files into batches (with `self.layers` set before the first `Requests`)."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The manifest's options: the files read and whatever the format adds."""
        return {"files": [str(f) for f in self.files], "probs": self.probs, "logits": self.probs}

    # the Source protocol ------------------------------------------------------------------------------

    def prepare(self) -> Plan:
        return Plan(batches=0, units=len(self.files))

    def routers(self) -> list[RouterSpec]:
        return []

    def manifest_facts(self) -> ManifestFacts:
        return ManifestFacts(
            kind="text",
            model={"spec": None, "source": self.engine, "class": None, "family": None},
            tokenizer=self.tokenizer_name,
            labels=self.labels,
            seed=0,
            options=self.options(),
            engine=self.engine,
            capabilities=tuple(self.capabilities),
        )

    def batches(self, sink: Sink) -> Iterator[None]:
        self.started = True
        for batch in prefetch(self.read()):
            if isinstance(batch, CountRows):
                self._write_counts(sink, batch)
            else:
                self._write_requests(sink, batch)
            yield
        sink.advance()

    def dimensions(self) -> Iterator[tuple[str, pa.Table]]:
        if self.count_layers is not None:  # counts only: one sample standing for the whole trace
            self.samples = [(0, 0, 0)]
        n = len(self.samples)
        for name, values in self.label_values.items():
            if len(values) != n:
                raise InputError(
                    f"label {name!r} has {len(values)} values for {n} imported requests", field="labels"
                )
        if n:
            _, tokens, generated = (np.array(c) for c in zip(*self.samples, strict=True))
            yield (
                "samples",
                samples_table(np.arange(n), n_tokens=tokens, n_generated=generated, labels=self.label_values),
            )
        for table in self.token_rows:
            yield "tokens", table
        yield "steps", steps_table(sorted(self.steps_seen or {0}))

    def late_facts(self) -> dict[str, Any]:
        if self.count_layers is not None:
            layers = Layers(self.count_layers)
            used = list(range(len(self.count_layers)))
            experts = [int(self.n_experts or 0)] * len(used)
            return {
                "routers": [self._router(layers, i, experts[i], 1) for i in used],
                "capabilities": sorted(self.capabilities),
            }
        if self.layers is None or self.max_id is None or self.unrouted is None:
            raise InputError(
                "the trace holds no routed tokens",
            )
        dense = [i for i in range(len(self.layers.numbers)) if self.max_id[i] < 0]
        routed = [i for i in range(len(self.layers.numbers)) if self.max_id[i] >= 0]
        routers = [
            self._router(self.layers, i, int(self.n_experts or self.max_id[i] + 1), self.k) for i in routed
        ]
        return {
            "routers": routers,
            "capabilities": sorted(self.capabilities),
            "dense_layers": [self.layers.numbers[i] for i in dense],
            "unrouted_rows": {
                str(self.layers.numbers[i]): int(self.unrouted[i]) for i in range(len(self.unrouted))
            },
            "n_experts_inferred": self.n_experts is None,
        }

    # writing ----------------------------------------------------------------------------------------

    def _router(self, layers: Layers, index: int, n_experts: int, k: int) -> dict[str, Any]:
        return RouterSpec(
            id=index,
            path=f"{self.engine}.{layers.stacks[index]}.layers.{layers.numbers[index]}",
            layer=layers.numbers[index],
            call_count=1,
            kind="ffn",
            stack=layers.stacks[index],
            n_experts=n_experts,
            top_k=k,
        ).to_manifest()

    def _check(self, batch: Requests) -> None:
        ids, layers = batch.ids, self.layers
        assert layers is not None, "an importer sets its layers before its first batch"
        if ids.ndim != 3 or ids.shape[1] != len(layers.numbers) or (self.k and ids.shape[2] != self.k):
            raise bad(
                batch.path,
                batch.place(0),
                f"routing of shape {list(ids.shape[1:])} (layers, top-k); earlier records had "
                f"{[len(layers.numbers), self.k]}",
            )
        self.k = self.k or ids.shape[2]
        if int(batch.rows.sum()) != ids.shape[0]:
            raise bad(batch.path, None, "routing rows do not add up to the requests' tokens")
        if ids.size == 0:
            return
        low = ids.min(axis=(1, 2))
        if (low < 0).any():
            raise bad(batch.path, self._where(batch, int(np.argmax(low < 0))), "negative expert id")
        if self.n_experts is not None:
            high = ids.max(axis=(1, 2))
            if (high >= self.n_experts).any():
                token = int(np.argmax(high >= self.n_experts))
                raise bad(
                    batch.path,
                    self._where(batch, token),
                    f"expert id {int(high[token])} out of range for {self.n_experts} experts",
                )

    @staticmethod
    def _where(batch: Requests, token: int) -> str:
        return batch.place(int(np.searchsorted(np.cumsum(batch.rows), token, side="right")))

    def _write_requests(self, sink: Sink, batch: Requests) -> None:
        self._check(batch)
        ids = batch.ids
        n, n_layers, k = ids.shape
        first = len(self.samples)
        sample = np.repeat(np.arange(first, first + len(batch.rows), dtype=np.int32), batch.rows)
        starts = np.repeat(np.cumsum(batch.rows) - batch.rows, batch.rows)
        position = (np.arange(n) - starts if batch.positions is None else batch.positions).astype(np.int32)
        if batch.step is not None:
            step = np.repeat(batch.step, batch.rows)
        elif batch.prompt is not None:  # RouteScope's convention: prefill is step 0, decode step s is s
            step = np.maximum(position - np.repeat(batch.prompt, batch.rows) + 1, 0)
        else:
            step = np.zeros(n, np.int32)
        self.steps_seen.update(np.unique(step).tolist())
        routed = ~(ids == 0).all(axis=2) if k >= 2 else np.ones((n, n_layers), bool)  # all-zero: dense
        everything = bool(routed.all())
        if everything:  # the usual case: no gather needed
            high = ids.max(axis=(0, 2)) if n else np.full(n_layers, -1)
            token, layer = np.repeat(np.arange(n), n_layers), np.tile(np.arange(n_layers), n)
            experts = ids.reshape(-1)
        else:
            high = np.where(routed[..., None], ids, -1).max(axis=(0, 2)) if n else np.full(n_layers, -1)
            token, layer = np.nonzero(routed)  # decisions, token-major then layer
            experts = ids[token, layer].reshape(-1)
        self.max_id = high if self.max_id is None else np.maximum(self.max_id, high)
        missing = (~routed).sum(axis=0)
        self.unrouted = missing if self.unrouted is None else self.unrouted + missing
        d = len(token)
        numbers = np.asarray(self.layers.numbers, np.int16)  # type: ignore[union-attr]
        keys = {
            "sample": sample[token],
            "position": position[token],
            "step": step.astype(np.int32, copy=False)[token],
            "router": layer.astype(np.int16),
            "layer": numbers[layer],
            "call": np.zeros(d, np.int16),
        }
        sink.write("decisions", decision_rows(keys, batch.logits, token, layer, self.scoring))
        assignments = {name: np.repeat(column, k) for name, column in keys.items()}
        assignments["rank"] = np.tile(np.arange(k, dtype=np.int16), d)
        assignments["expert"] = experts.astype(np.int32, copy=False)
        assignments["weight"] = np.full(d * k, np.nan, np.float32)
        assignments["dropped"] = np.zeros(d * k, bool)
        sink.write("assignments", pa.table(assignments, ASSIGNMENTS))
        self._samples(batch, first)

    scoring = "softmax"
    """How logits become probabilities (`softmax`, or `sigmoid` normalised), when a trace has logits."""

    def _samples(self, batch: Requests, first: int) -> None:
        for i, rows in enumerate(batch.rows.tolist()):
            ids = None if batch.token_ids is None else batch.token_ids[i]
            tokens = rows if ids is None else len(ids)
            prompt = tokens if batch.prompt is None else int(batch.prompt[i])
            self.samples.append((rows, tokens, tokens - prompt))
            if ids is not None and len(ids):
                positions = np.arange(len(ids))
                if batch.positions is not None:
                    end = int(batch.rows[: i + 1].sum())
                    positions = batch.positions[end - rows : end]
                for generated in (False, True):
                    part = positions >= prompt if generated else positions < prompt
                    if part.any():
                        self.token_rows.append(
                            token_table(
                                first + i,
                                positions[part],
                                ids[part],
                                self.texts,
                                generated=generated,
                                stack="decoder",
                            )
                        )

    def _write_counts(self, sink: Sink, batch: CountRows) -> None:
        self.count_layers = self.count_layers or batch.layers
        step, layer, expert = np.nonzero(batch.counts)
        counts = batch.counts[step, layer, expert].astype(np.int64)
        pieces = -(-counts // MAX_EXACT)  # rows per cell: counts above 2^24 split into exact parts
        step, layer, expert = (np.repeat(a, pieces) for a in (step, layer, expert))
        first = np.repeat(np.cumsum(pieces) - pieces, pieces)
        part = np.arange(len(step)) - first
        total = np.repeat(counts, pieces)
        weight = np.minimum(total - part * MAX_EXACT, MAX_EXACT)
        self.n_experts = max(self.n_experts or 0, batch.counts.shape[2])
        steps = np.asarray(batch.steps, np.int32)[step]
        self.steps_seen.update(np.unique(steps).tolist())
        m = len(step)
        sink.write(
            "assignments",
            pa.table(
                {
                    "sample": np.zeros(m, np.int32),
                    "position": np.zeros(m, np.int32),
                    "step": steps,
                    "router": layer.astype(np.int16),
                    "layer": np.asarray(batch.layers, np.int16)[layer],
                    "call": np.zeros(m, np.int16),
                    "rank": np.zeros(m, np.int16),
                    "expert": expert.astype(np.int32),
                    "weight": weight.astype(np.float32),
                    "dropped": np.zeros(m, bool),
                },
                ASSIGNMENTS,
            ),
        )


def import_source(
    source: TraceSource, *, store: Store | str, name: str, overwrite: bool = False, progress: bool = False
) -> Run:
    """Import through the one driver; a bad trace raises its one line and leaves nothing in the store."""
    store = store if isinstance(store, Store) else Store(store)
    try:
        return record_source(source, store=store, name=name, overwrite=overwrite, progress=progress)
    except InputError:
        if source.started:  # the partial run is ours: remove it, so the store shows nothing of it
            shutil.rmtree(store.incomplete_path(name), ignore_errors=True)
        raise
