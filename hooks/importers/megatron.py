"""Megatron-Core's RouterTracer (`--moe-routing-trace-path`): `router_trace_rank{r}.jsonl` (+ logits).

One JSONL record per (step, block, layer) on each rank (megatron/core/transformer/moe/router_trace.py):
`{step, stage, block: "decoder"|"mtp", layer, rank, num_tokens, topk, top_indices [num_tokens][topk],
mtp_idx?}`. Records of one rank and step share their tokens (pre-dispatch, in the same order at every
layer), so they become one sample whose rows are those tokens; `step` is the training step. The trace
has no token ids and no positions (the rows are the micro-batch's tokens flattened sequence-major), so
analyses that need either refuse. Several rank files are merged, one sample per rank and step, in the
order given. MTP blocks become routers of stack `mtp`, numbered after the decoder layers. When the
tracer captures logits (`capture_logits`), each record also points into the bfloat16 sidecar
`logits_rank{r}.bin` (`logit_offset`, `logit_bytes`, `logit_shape [num_tokens, experts]`): the run then
keeps the pre-top-k logits and their probabilities (entropy, margin: the `scores`, `probs` and `logits`
capabilities). `router_state_rank{r}.pt` is read only for the score function.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..source import Plan
from .common import Layers, Requests, TraceSource, bad
from .jsonl import nested_ids, request_blocks
from .safe_load import torch_load

SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("block", pa.string()),
        ("layer", pa.int64()),
        ("rank", pa.int64()),
        ("num_tokens", pa.int64()),
        ("topk", pa.int64()),
        ("top_indices", pa.list_(pa.list_(pa.int32()))),
        ("mtp_idx", pa.int64()),
        ("logit_offset", pa.int64()),
        ("logit_bytes", pa.int64()),
        ("logit_shape", pa.list_(pa.int64())),
    ]
)
Record = tuple[int, tuple[str, int, int], np.ndarray, "np.ndarray | None"]
"""(0-based record, layer column, ids [tokens, k], logits [tokens, experts] or None)."""
REQUIRED = ("step", "layer", "num_tokens", "topk", "top_indices")


class MegatronSource(TraceSource):
    """Router traces of Megatron ranks (`router_trace_rank{r}.jsonl`), merged."""

    engine = "megatron"
    capabilities = ("ids", "ranks", "steps")

    def __init__(self, files: Any, *, scoring: str | None = None, **kw: Any) -> None:
        super().__init__(files, **kw)
        self.columns: list[tuple[str, int, int]] | None = None
        self.scoring_given = scoring

    def prepare(self) -> Plan:
        """A trace whose first record points into a logits sidecar has router logits throughout: the run
        then keeps probabilities (softmax unless `scoring` or `router_state_rank{r}.pt` says sigmoid)."""
        with self.files[0].open("rb") as handle:
            first = next((line for line in handle if line.strip()), b"")
        if b'"logit_offset"' in first:
            self.probs = True
            self.capabilities = (*type(self).capabilities, "scores", "probs", "logits")
            self.scoring = self.scoring_given or sidecar_scoring(self.files[0].parent)
        return super().prepare()

    def read(self) -> Iterator[Requests]:
        for path in self.files:
            group: list[Record] = []
            key: tuple[int, int] | None = None
            for record_key, record in self._records(path):
                if key is not None and record_key != key:
                    yield self._group(path, key[1], group)
                    group = []
                key = record_key
                group.append(record)
            if group and key is not None:
                yield self._group(path, key[1], group)

    def _records(self, path: Path) -> Iterator[tuple[tuple[int, int], Record]]:
        for batch, requests in request_blocks(path, SCHEMA, REQUIRED, {"top_indices": 2}):
            place, first = requests.place, requests.first
            values, (rows, widths) = nested_ids(batch.column("top_indices"), 2)
            data = batch.to_pydict()
            ends = np.cumsum(rows)
            for i in range(batch.num_rows):
                n, k = data["num_tokens"][i], data["topk"][i]
                mine = widths[ends[i] - rows[i] : ends[i]]
                if rows[i] != n:
                    raise bad(path, place(i), f"{rows[i]} rows of top_indices for num_tokens {n}")
                if (mine != k).any():
                    raise bad(
                        path,
                        place(i),
                        f"a row of top_indices has {int(mine[mine != k][0])} ids, not topk {k}",
                    )
                start = int(widths[: ends[i] - rows[i]].sum())
                ids = values[start : start + n * k].reshape(n, k)
                block = data["block"][i] or "decoder"
                column = (block, int(data["mtp_idx"][i] or 0), int(data["layer"][i]))
                rank = int(data["rank"][i] or 0)
                logits = self._logits(path, place(i), data, i, rank, n) if self.probs else None
                yield (rank, int(data["step"][i])), (first + i, column, ids, logits)

    def _logits(
        self, path: Path, where: str, data: dict[str, list[Any]], i: int, rank: int, n: int
    ) -> np.ndarray:
        """One record's router logits from `logits_rank{rank}.bin` (bfloat16 at `logit_offset`)."""
        offset, size, shape = data["logit_offset"][i], data["logit_bytes"][i], data["logit_shape"][i]
        if offset is None or size is None or not shape:
            raise bad(
                path, where, "has no logit_offset, logit_bytes and logit_shape (the first record had them)"
            )
        sidecar = path.parent / f"logits_rank{rank}.bin"
        try:
            raw = np.fromfile(sidecar, dtype=np.uint16, count=size // 2, offset=offset)
        except (OSError, ValueError):
            raise bad(sidecar, None, f"cannot read the logits that {path.name}, {where} points to") from None
        if len(raw) * 2 != size or len(shape) != 2 or shape[0] != n or shape[0] * shape[1] != len(raw):
            raise bad(
                sidecar, None, f"holds no {shape} bfloat16 logits at byte {offset} ({path.name}, {where})"
            )
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)

    def _group(self, path: Path, step: int, group: list[Record]) -> Requests:
        place = Requests(np.zeros((0, 0, 0)), np.zeros(0), path, group[0][0], jsonl=True).place(0)
        columns = sorted({record[1] for record in group}, key=lambda c: (c[0] != "decoder", c[1], c[2]))
        if len(columns) != len(group):
            raise bad(path, place, "a layer appears twice in one step")
        if self.columns is None:
            self.columns = columns
            decoder = [c[2] for c in columns if c[0] == "decoder"]
            top = max(decoder, default=-1)
            numbers = [c[2] for c in columns if c[0] == "decoder"]
            numbers += [top + 1 + i for i in range(len(columns) - len(numbers))]
            self.layers = Layers(numbers, ["decoder" if c[0] == "decoder" else "mtp" for c in columns])
        if columns != self.columns:
            raise bad(
                path, place, f"this step traces {len(columns)} layers, the first traced {len(self.columns)}"
            )
        by_column = {column: ids for _, column, ids, _ in group}
        sizes = {len(ids) for ids in by_column.values()}
        if len(sizes) > 1 or len({ids.shape[1] for ids in by_column.values()}) > 1:
            raise bad(path, place, "layers of one step differ in num_tokens or topk")
        ids = np.stack([by_column[c] for c in columns], axis=1)  # [tokens, layers, k]
        requests = Requests(ids, np.array([len(ids)]), path, where=place)
        requests.step = np.array([step], np.int64)
        if self.probs:
            logits = {column: values for _, column, _, values in group}
            if len({values.shape for values in logits.values()}) > 1:
                raise bad(path, place, "layers of one step differ in their logits' shape")
            requests.logits = np.stack([logits[c] for c in columns], axis=1)  # [tokens, layers, experts]
        return requests


def sidecar_scoring(folder: Path) -> str:
    """The router's score function from `router_state_rank0.pt` when Megatron dumped it (else softmax,
    Megatron's default `--moe-router-score-function`)."""
    state = folder / "router_state_rank0.pt"
    if not state.is_file():
        return "softmax"
    layers = torch_load(state)
    first = next(iter(layers.values()), {}) if isinstance(layers, dict) and layers else {}
    return "sigmoid" if isinstance(first, dict) and first.get("score_function") == "sigmoid" else "softmax"
