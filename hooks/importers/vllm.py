"""vLLM's routed experts (`--enable-return-routed-experts`): JSONL of serialised `RequestOutput`s or .npz.

vLLM returns expert ids only, `[tokens, num_hidden_layers, top_k]` per request (vllm/outputs.py, the
capturer in vllm/model_executor/layers/fused_moe/routed_experts_capturer.py). A JSONL line holds one
request: `prompt_token_ids`, `output_token_ids` (may be empty) and `routed_experts`, or the split form of
newer versions, `prompt_routed_experts` + `routed_experts` (prompt rows, then generated rows). An `.npz`
holds the same arrays for one request. The capturer fills tokens − 1 rows (the last generated token is
never fed back), so both tokens and tokens − 1 rows are accepted; dense layers stay all-zero rows, which
`TraceSource` never counts as expert 0 (docs/import.md).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from .common import Layers, Requests, TraceSource, bad
from .jsonl import nested_ids, request_blocks, routing_block

IDS = pa.list_(pa.list_(pa.list_(pa.int32())))
SCHEMA = pa.schema(
    [
        ("prompt_token_ids", pa.list_(pa.int64())),
        ("output_token_ids", pa.list_(pa.int64())),
        ("routed_experts", IDS),
        ("prompt_routed_experts", IDS),
    ]
)
NESTING = {"prompt_token_ids": 1, "output_token_ids": 1, "routed_experts": 3, "prompt_routed_experts": 3}


class VllmSource(TraceSource):
    """Requests from vLLM `.jsonl` or `.npz` files, in the order given (one sample per request)."""

    engine = "vllm"
    capabilities = ("ids", "ranks", "token_ids", "positions", "steps")

    def read(self) -> Iterator[Requests]:
        for path in self.files:
            if path.suffix == ".npz":
                yield self._npz(path)
            else:
                yield from self._jsonl(path)

    def _jsonl(self, path: Path) -> Iterator[Requests]:
        for batch, requests in request_blocks(path, SCHEMA, ("prompt_token_ids", "routed_experts"), NESTING):
            prompt, (prompt_len,) = nested_ids(batch.column("prompt_token_ids"), 1)
            output, (output_len,) = nested_ids(batch.column("output_token_ids"), 1)
            parts = [batch.column("routed_experts")]
            if batch.column("prompt_routed_experts").null_count < batch.num_rows:
                parts.insert(0, batch.column("prompt_routed_experts"))
            ids, rows = self._routing(requests, parts)
            tokens = prompt_len + output_len
            wrong = (rows != tokens) & (rows != tokens - 1)
            if wrong.any():
                i = int(np.argmax(wrong))
                raise bad(
                    path,
                    requests.place(i),
                    f"{rows[i]} routing rows for {tokens[i]} tokens "
                    f"(expected {tokens[i]} or {tokens[i] - 1})",
                )
            requests.ids, requests.rows, requests.prompt = ids, rows, prompt_len
            p_ends, o_ends = np.cumsum(prompt_len), np.cumsum(output_len)
            requests.token_ids = [
                np.concatenate([prompt[pe - pn : pe], output[oe - on : oe]])
                for pe, pn, oe, on in zip(p_ends, prompt_len, o_ends, output_len, strict=True)
            ]
            yield requests

    def _routing(self, requests: Requests, parts: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
        """Each part's ids as [rows, L, k] and, for the split form, prompt rows then generated rows of
        every request interleaved back together; with the routed rows per request."""
        arrays, row_counts = [], []
        for column in parts:
            known = (len(self.layers.numbers), self.k) if self.layers else None
            ids, rows = routing_block(column, requests, known)
            if self.layers is None and ids.shape[1]:
                self.layers, self.k = Layers(list(range(ids.shape[1]))), ids.shape[2]
            arrays.append(ids)
            row_counts.append(rows)
        if len(arrays) == 1:
            return arrays[0], row_counts[0]
        owner = [np.repeat(np.arange(len(r)) * 2 + part, r) for part, r in enumerate(row_counts)]
        order = np.argsort(np.concatenate(owner), kind="stable")  # request by request: prompt, then output
        return np.concatenate(arrays)[order], row_counts[0] + row_counts[1]

    def _npz(self, path: Path) -> Requests:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise bad(path, None, f"not an .npz of integer arrays ({type(exc).__name__})") from None
        if "routed_experts" not in arrays or "prompt_token_ids" not in arrays:
            raise bad(path, None, "has no 'routed_experts' and 'prompt_token_ids' arrays")
        parts = [arrays[k] for k in ("prompt_routed_experts", "routed_experts") if k in arrays]
        if any(p.ndim != 3 or not np.issubdtype(p.dtype, np.integer) for p in parts):
            raise bad(path, None, "routed experts are not an integer array [tokens, layers, top_k]")
        if len({p.shape[1:] for p in parts}) > 1:
            raise bad(path, None, "prompt and generated routing differ in layers or top-k")
        ids = np.concatenate(parts)
        prompt = arrays["prompt_token_ids"].astype(np.int64).ravel()
        output = arrays.get("output_token_ids", np.zeros(0, np.int64)).astype(np.int64).ravel()
        tokens = len(prompt) + len(output)
        if len(ids) not in (tokens, tokens - 1):
            raise bad(path, None, f"{len(ids)} routing rows for {tokens} tokens")
        if self.layers is None:
            self.layers = Layers(list(range(ids.shape[1])))
        requests = Requests(ids, np.array([len(ids)]), path, prompt=np.array([len(prompt)]))
        requests.token_ids = [np.concatenate([prompt, output])]
        return requests
