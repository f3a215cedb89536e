"""Decision rows of an import: unknown router scores stay NaN; logits, when a trace has them, give them.

Most engines trace expert ids only, so a decision's entropy, margin and max probability are unknown and
stored as NaN (the run's capabilities lack `scores`, so nothing reads them). Megatron's RouterTracer can
also write the pre-top-k router logits (`logits_rank{r}.bin`); then the decisions get the same statistics
a recording computes (hooks/normalise.py) and the full `probs` and `logits` columns.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from routescope.store.schema import DECISIONS, decisions_schema

from ..normalise import decision_stats, scores_to_probs


def decision_rows(
    keys: dict[str, np.ndarray],
    logits: np.ndarray | None,
    token: np.ndarray,
    layer: np.ndarray,
    scoring: str = "softmax",
) -> pa.Table:
    """Decision rows for the decisions (`token`, `layer`) keyed by `keys`: NaN statistics without
    `logits` ([tokens, layers, experts]); with them, entropy, margin, max prob, `probs` and `logits`."""
    d = len(token)
    if logits is None:
        nan = np.full(d, np.nan, np.float32)
        return pa.table({**keys, "entropy": nan, "margin": nan, "max_prob": nan}, DECISIONS)
    raw = torch.from_numpy(np.ascontiguousarray(logits[token, layer], np.float32))
    probs = scores_to_probs(raw, scoring)  # type: ignore[arg-type]
    entropy, margin, max_prob = (t.numpy().astype(np.float32) for t in decision_stats(probs))
    offsets = pa.array(np.arange(d + 1, dtype=np.int32) * raw.shape[1])
    columns = {**keys, "entropy": entropy, "margin": margin, "max_prob": max_prob}
    columns["probs"] = pa.ListArray.from_arrays(offsets, pa.array(probs.numpy().ravel()))
    columns["logits"] = pa.ListArray.from_arrays(offsets, pa.array(raw.numpy().ravel()))
    return pa.table(columns, decisions_schema(True, True))
