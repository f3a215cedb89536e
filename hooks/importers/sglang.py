"""SGLang's routing: per-request `meta_info["routed_experts"]` (JSONL) and the expert-distribution
recorder's `torch.save` dumps (python/sglang/srt/eplb/expert_distribution.py).

- JSONL, one response per line: `meta_info.routed_experts` is base64 of an int32 buffer shaped
  `(tokens, num_hidden_layers, top_k)` covering tokens `[start, seqlen − 1)` (`routed_experts_start_len`,
  default 0); the buffer does not say its shape, so `layers` or `top_k` is given. Token ids come from
  `input_ids` + `output_ids` when every line has them (else the run lacks token ids).
- `per_token` dumps: `records` of forward passes (`input_ids`, `positions`, `extend_seq_lens`,
  `topk_ids_of_layer [L, T, 8]` with −1 padding) and `last_physical_to_logical_map [L, P]`; physical ids
  are mapped to logical ones. A sample is one sequence of one forward pass (the dump has no request ids),
  the step its `forward_pass_id`.
- `stat` dumps: `logical_count [steps, L, E]`, counts only.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .common import CountRows, Layers, Requests, TraceSource, bad
from .safe_load import torch_load


def _array(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


class SglangSource(TraceSource):
    """SGLang `.jsonl` responses or recorder dumps (`.pt`), per file by its content."""

    engine = "sglang"

    def __init__(self, files: Any, *, layers: int | None = None, top_k: int | None = None, **kw: Any) -> None:
        super().__init__(files, **kw)
        self.n_layers, self.top_k = layers, top_k
        self.capabilities = ("ids", "ranks", "token_ids", "positions", "steps")

    def read(self) -> Iterator[Requests | CountRows]:
        step = 0
        for path in self.files:
            if path.suffix == ".jsonl":
                yield from self._jsonl(path)
                continue
            dump = torch_load(path)
            if isinstance(dump, dict) and "records" in dump:
                yield from self._per_token(path, dump)
            elif isinstance(dump, dict) and "logical_count" in dump:
                counts = _array(dump["logical_count"]).astype(np.int64)
                if counts.ndim != 3 or (counts < 0).any():
                    raise bad(path, None, "logical_count is not a count array [steps, layers, experts]")
                self.capabilities = ("counts", "steps")
                yield CountRows(counts, np.arange(step, step + len(counts)), list(range(counts.shape[1])))
                step += len(counts)
            else:
                raise bad(path, None, "not an SGLang expert-distribution dump (no records or logical_count)")

    def _shape(self, path: Path, where: str, size: int, rows_guess: int) -> tuple[int, int]:
        if self.n_layers is None and self.top_k is None:
            raise bad(path, where, "give the model's layers or top_k to unflatten routed_experts")
        per_token = size // max(rows_guess, 1)
        layers = self.n_layers or per_token // (self.top_k or 1)
        top_k = self.top_k or per_token // max(layers, 1)
        return layers, top_k

    def _jsonl(self, path: Path) -> Iterator[Requests]:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"line {number}"
                try:
                    record = json.loads(line)
                    meta = record["meta_info"]
                    raw = base64.b64decode(meta["routed_experts"], validate=True)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise bad(path, where, "not valid JSON (a truncated or foreign file?)") from None
                except (KeyError, TypeError):
                    raise bad(path, where, "has no meta_info.routed_experts") from None
                except (binascii.Error, ValueError):
                    raise bad(path, where, "routed_experts is not base64") from None
                if len(raw) % 4:
                    raise bad(path, where, "routed_experts is not an int32 buffer")
                flat = np.frombuffer(raw, np.int32)
                tokens = int(meta.get("prompt_tokens", 0)) + int(meta.get("completion_tokens", 0))
                start = int(meta.get("routed_experts_start_len") or 0)
                layers, top_k = self._shape(path, where, flat.size, max(tokens - 1 - start, 1))
                if layers * top_k == 0 or flat.size % (layers * top_k):
                    raise bad(
                        path, where, f"{flat.size} ids do not fill rows of {layers} layers × top-{top_k}"
                    )
                ids = flat.reshape(-1, layers, top_k)
                if tokens and len(ids) not in (tokens - start, tokens - 1 - start):
                    raise bad(path, where, f"{len(ids)} routing rows for {tokens - start} tokens")
                if self.layers is None:
                    self.layers = Layers(list(range(layers)))
                token_ids = None
                if isinstance(record.get("input_ids"), list) and isinstance(record.get("output_ids"), list):
                    token_ids = np.asarray(record["input_ids"] + record["output_ids"], np.int64)
                else:
                    self.capabilities = ("ids", "ranks", "positions", "steps")
                requests = Requests(ids, np.array([len(ids)]), path, where=where)
                requests.positions = np.arange(start, start + len(ids))
                if "prompt_tokens" in meta:  # decode rows get RouteScope's steps (prefill 0, token s: s)
                    requests.prompt = np.array([max(int(meta["prompt_tokens"]) - start, 0)])
                if token_ids is not None:
                    requests.token_ids = [token_ids[start : start + len(ids)]]
                yield requests

    def _per_token(self, path: Path, dump: dict[str, Any]) -> Iterator[Requests]:
        mapping = dump.get("last_physical_to_logical_map")
        table = None if mapping is None else _array(mapping).astype(np.int64)
        for index, record in enumerate(dump["records"]):
            where = f"record {index + 1}"
            try:
                topk = _array(record["topk_ids_of_layer"]).astype(np.int64)  # [L, T, 8]
                lens = _array(record["extend_seq_lens"]).astype(np.int64).ravel()
                input_ids = _array(record["input_ids"]).astype(np.int64).ravel()
                positions = _array(record["positions"]).astype(np.int64).ravel()
            except (KeyError, TypeError):
                raise bad(
                    path, where, "lacks topk_ids_of_layer, input_ids, positions or extend_seq_lens"
                ) from None
            if topk.ndim != 3 or topk.shape[1] != len(input_ids) or len(positions) != len(input_ids):
                raise bad(path, where, f"topk_ids_of_layer {list(topk.shape)} for {len(input_ids)} tokens")
            if lens.sum() != len(input_ids):
                raise bad(path, where, f"extend_seq_lens add up to {lens.sum()}, not {len(input_ids)} tokens")
            valid = topk >= 0
            k = int(valid.sum(axis=2).max()) if topk.size else 0
            ids = topk[:, :, :k]
            if table is not None:
                if (ids >= table.shape[1]).any():
                    raise bad(
                        path, where, f"physical expert id {int(ids.max())} beyond the map's {table.shape[1]}"
                    )
                ids = np.where(
                    ids >= 0, np.take_along_axis(table[:, None, :], np.maximum(ids, 0), axis=2), -1
                )
            ids = np.where((ids < 0).all(axis=2, keepdims=True), 0, ids).transpose(
                1, 0, 2
            )  # −1 rows: unrouted
            if self.layers is None:
                self.layers = Layers(list(range(ids.shape[1])))
            requests = Requests(np.ascontiguousarray(ids), lens, path, where=where)
            requests.positions = positions
            ends = np.cumsum(lens)
            requests.token_ids = [input_ids[e - n : e] for e, n in zip(ends, lens, strict=True)]
            requests.step = np.full(len(lens), int(record.get("forward_pass_id", index)), np.int64)
            yield requests
