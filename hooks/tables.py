"""Build the Arrow record batches of a run from normalised router calls (vectorised, no Python loops)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import torch

from routescope.store.errors import InputError, RouterOutputError
from routescope.store.schema import (
    ASSIGNMENTS,
    DECISIONS,
    LOGITS_FIELD,
    OUTPUT_NORM_FIELD,
    PROBS_FIELD,
    TOKENS,
)

from .normalise import Decoded, decision_stats
from .routers import RouterSpec
from .units import Layout


def router_call_tables(
    decoded: Decoded,
    layout: Layout,
    spec: RouterSpec,
    *,
    step: int,
    call: int,
    with_probs: bool,
    norms: torch.Tensor | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Assignments (k rows per real token, adjacent, by rank; for variable-k routers only the slots
    `decoded.valid` marks, so 0 … k rows) and decisions (one row per real token, with or without experts;
    for a router without positions, `layout` has one row per sample and `position` is written null);
    `with_probs` adds the `probs` and `logits` columns (logits null where `decoded` has none); `norms`
    (`[T, k]` expert output norms, hooks/expert_outputs.py) adds `output_norm`, null on dropped rows."""
    if decoded.expert.shape[0] != layout.rows:
        raise RouterOutputError(
            f"router {spec.path} returned {decoded.expert.shape[0]} rows for {layout.rows} "
            f"{'samples' if spec.positions == 'none' else 'tokens'}; RouteScope needs one row per input "
            "token (one per sample for a router declared without positions), batch-major (docs/routers.md)"
        )
    keep = layout.real
    sample = layout.sample[keep].numpy().astype(np.int32)
    expert = decoded.expert[keep].numpy()
    n, k = expert.shape
    slots = np.ones(n * k, dtype=bool) if decoded.valid is None else decoded.valid[keep].numpy().reshape(-1)
    m = int(slots.sum())
    if spec.positions == "none":  # one decision per sample and step: no token position (null)
        position: np.ndarray | pa.Array = pa.nulls(n, pa.int32())
        repeated: np.ndarray | pa.Array = pa.nulls(m, pa.int32())
    else:
        position = layout.position[keep].numpy().astype(np.int32)
        repeated = np.repeat(position, k)[slots]
    full = np.full
    assignments = pa.table(
        {
            "sample": np.repeat(sample, k)[slots],
            "position": repeated,
            "step": full(m, step, np.int32),
            "router": full(m, spec.id, np.int16),
            "layer": full(m, spec.layer, np.int16),
            "call": full(m, call, np.int16),
            "rank": np.tile(np.arange(k, dtype=np.int16), n)[slots],
            "expert": expert.reshape(-1).astype(np.int32)[slots],
            "weight": decoded.weight[keep].numpy().reshape(-1).astype(np.float32)[slots],
            "dropped": decoded.dropped[keep].numpy().reshape(-1)[slots],
        },
        schema=ASSIGNMENTS,
    )
    if norms is not None:
        if tuple(norms.shape) != tuple(decoded.expert.shape):
            raise InputError(
                f"expert_stats cannot read router {spec.path}'s experts: they return "
                f"{tuple(norms.shape)} outputs for {tuple(decoded.expert.shape)} choices",
                field="expert_stats",
            )
        values = norms[keep].numpy().reshape(-1).astype(np.float32)[slots]
        dropped = decoded.dropped[keep].numpy().reshape(-1)[slots]
        column = pa.array(values, OUTPUT_NORM_FIELD.type, mask=dropped)
        assignments = assignments.append_column(OUTPUT_NORM_FIELD, column)
    probs = decoded.probs[keep]
    entropy, margin, max_prob = (t.numpy().astype(np.float32) for t in decision_stats(probs))
    columns = {
        "sample": sample,
        "position": position,
        "step": full(n, step, np.int32),
        "router": full(n, spec.id, np.int16),
        "layer": full(n, spec.layer, np.int16),
        "call": full(n, call, np.int16),
        "entropy": entropy,
        "margin": margin,
        "max_prob": max_prob,
    }
    schema = DECISIONS
    if with_probs:
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * probs.shape[1])
        columns["probs"] = pa.ListArray.from_arrays(
            offsets, pa.array(probs.numpy().astype(np.float32).ravel())
        )
        if decoded.logits is None:
            columns["logits"] = pa.nulls(n, LOGITS_FIELD.type)
        else:
            logits = decoded.logits[keep].numpy().astype(np.float32).ravel()
            columns["logits"] = pa.ListArray.from_arrays(offsets, pa.array(logits))
        schema = DECISIONS.append(PROBS_FIELD).append(LOGITS_FIELD)
    return assignments, pa.table(columns, schema=schema)


def token_table(
    sample: int | np.ndarray,
    positions: Sequence[int] | np.ndarray,
    ids: Sequence[int] | np.ndarray,
    text_of: Callable[[int], str | None],
    *,
    generated: bool,
    stack: str,
    rows: Sequence[int] | np.ndarray | None = None,
    cols: Sequence[int] | np.ndarray | None = None,
) -> pa.Table:
    """Rows of the tokens table: some positions of one sample, or of several (`sample` per row)."""
    n = len(ids)
    token_ids = np.asarray(ids, dtype=np.int32)
    distinct, where = np.unique(token_ids, return_inverse=True)  # decode each distinct id once
    texts = pa.array([text_of(int(t)) for t in distinct], pa.string()).take(pa.array(where.astype(np.int32)))
    return pa.table(
        {
            "sample": np.full(n, sample, np.int32) if np.isscalar(sample) else np.asarray(sample, np.int32),
            "position": np.asarray(positions, dtype=np.int32),
            "token_id": token_ids,
            "token": texts,
            "generated": np.full(n, generated, bool),
            "stack": [stack] * n,
            "row": pa.nulls(n, pa.int32()) if rows is None else np.asarray(rows, dtype=np.int32),
            "col": pa.nulls(n, pa.int32()) if cols is None else np.asarray(cols, dtype=np.int32),
        },
        schema=TOKENS,
    )


class TokenTexts:
    """Decode each token id once (a run repeats the same ids many times)."""

    def __init__(self, tokenizer: object | None) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str | None] = {}

    def __call__(self, token_id: int) -> str | None:
        if token_id not in self._cache:
            decode = getattr(self.tokenizer, "decode", None)
            self._cache[token_id] = decode([token_id]) if decode is not None else None
        return self._cache[token_id]


def alive_mask(new_tokens: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """[B, N] bool: whether the new token at each step was produced before (or is) the first EOS."""
    if not eos_ids or new_tokens.numel() == 0:
        return torch.ones_like(new_tokens, dtype=torch.bool)
    is_eos = torch.isin(new_tokens, torch.tensor(list(eos_ids), dtype=new_tokens.dtype))
    ended_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return ended_before == 0
