"""OLMoE's routing analysis JSONL (allenai/OLMoE `scripts/run_moe_analysis.py`): expert ids per token.

One line per sequence: `input_ids [T]`, optionally `predicted_token_ids [T]` (the model's next-token
guesses: not part of the sequence, not kept) and `exp_ids [T][k][L]` — token × rank × layer, transposed
here to RouteScope's token × layer × rank. Ids only; every token of the sequence is routed, so the
routing rows must equal the input ids. `run_routing_analysis.py` pickles Counters instead: those files
are refused (common.refuse_pickle), never unpickled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from .common import Layers, Requests, TraceSource, bad
from .jsonl import nested_ids, request_blocks, routing_block
from .safe_load import refuse_pickle

SCHEMA = pa.schema(
    [("input_ids", pa.list_(pa.int64())), ("exp_ids", pa.list_(pa.list_(pa.list_(pa.int32()))))]
)
NESTING = {"input_ids": 1, "exp_ids": 3}


class OlmoeSource(TraceSource):
    """Sequences from OLMoE analysis `.jsonl` files, one sample per line."""

    engine = "olmoe"
    capabilities = ("ids", "ranks", "token_ids", "positions")

    def read(self) -> Iterator[Requests]:
        for path in self.files:
            refuse_pickle(path)
            yield from self._jsonl(path)

    def _jsonl(self, path: Path) -> Iterator[Requests]:
        for batch, requests in request_blocks(path, SCHEMA, ("input_ids", "exp_ids"), NESTING):
            known = (self.k, len(self.layers.numbers)) if self.layers else None
            ids, rows = routing_block(batch.column("exp_ids"), requests, known)  # [T, k, L]
            tokens, (lengths,) = nested_ids(batch.column("input_ids"), 1)
            wrong = rows != lengths
            if wrong.any():
                i = int(np.argmax(wrong))
                raise bad(path, requests.place(i), f"{rows[i]} exp_ids rows for {lengths[i]} input ids")
            if self.layers is None and ids.shape[2]:
                self.layers = Layers(list(range(ids.shape[2])))
            requests.ids, requests.rows = np.ascontiguousarray(ids.transpose(0, 2, 1)), rows
            ends = np.cumsum(lengths)
            requests.token_ids = [tokens[e - n : e] for e, n in zip(ends, lengths, strict=True)]
            yield requests
