"""Megatron-Core's RouterTracer (`--moe-routing-trace-path`): `router_trace_rank{r}.jsonl`, ids only.

One JSONL record per (step, block, layer) on each rank (megatron/core/transformer/moe/router_trace.py):
`{step, stage, block: "decoder"|"mtp", layer, rank, num_tokens, topk, top_indices [num_tokens][topk],
mtp_idx?}`. Records of one rank and step share their tokens (pre-dispatch, in the same order at every
layer), so they become one sample whose rows are those tokens; `step` is the training step. The trace
has no token ids and no positions (the rows are the micro-batch's tokens flattened sequence-major), so
analyses that need either refuse. Several rank files are merged, one sample per rank and step, in the
order given. MTP blocks become routers of stack `mtp`, numbered after the decoder layers. The optional
`logits_rank{r}.bin` sidecar is not read (not yet supported).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .common import Layers, Requests, TraceSource, bad
from .jsonl import nested_ids, request_blocks

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
    ]
)
REQUIRED = ("step", "layer", "num_tokens", "topk", "top_indices")


class MegatronSource(TraceSource):
    """Router traces of Megatron ranks (`router_trace_rank{r}.jsonl`), merged."""

    engine = "megatron"
    capabilities = ("ids", "ranks", "steps")

    def __init__(self, files: Any, **kw: Any) -> None:
        super().__init__(files, **kw)
        self.columns: list[tuple[str, int, int]] | None = None

    def read(self) -> Iterator[Requests]:
        for path in self.files:
            group: list[tuple[int, tuple[str, int, int], np.ndarray]] = []
            key: tuple[int, int] | None = None
            for line, record_key, column, ids in self._records(path):
                if key is not None and record_key != key:
                    yield self._group(path, key[1], group)
                    group = []
                key = record_key
                group.append((line, column, ids))
            if group and key is not None:
                yield self._group(path, key[1], group)

    def _records(self, path: Path) -> Iterator[tuple[int, tuple[int, int], tuple[str, int, int], np.ndarray]]:
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
                yield first + i, (int(data["rank"][i] or 0), int(data["step"][i])), column, ids

    def _group(
        self, path: Path, step: int, group: list[tuple[int, tuple[str, int, int], np.ndarray]]
    ) -> Requests:
        place = Requests(np.zeros((0, 0, 0)), np.zeros(0), path, group[0][0], jsonl=True).place(0)
        columns = sorted({column for _, column, _ in group}, key=lambda c: (c[0] != "decoder", c[1], c[2]))
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
        by_column = {column: ids for _, column, ids in group}
        sizes = {len(ids) for ids in by_column.values()}
        if len(sizes) > 1 or len({ids.shape[1] for ids in by_column.values()}) > 1:
            raise bad(path, place, "layers of one step differ in num_tokens or topk")
        ids = np.stack([by_column[c] for c in columns], axis=1)  # [tokens, layers, k]
        requests = Requests(ids, np.array([len(ids)]), path, where=place)
        requests.step = np.array([step], np.int64)
        return requests
