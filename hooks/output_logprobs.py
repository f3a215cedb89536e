"""Next-token distributions (`record(output_logprobs=True)`): every input token's log-probabilities over the
vocabulary, in a table of their own (`outputs`).

Why: two runs can route differently and still predict the same; whether a routing change (a checkpoint,
an ablation, a quantised copy) changes what the model *says* is the per-token KL between the two output
distributions (analysis/output_kl.py), and that needs each distribution kept, not only the loss of the
observed next token (hooks/token_loss.py). The forward pass a recording makes anyway returns the logits,
so this costs one log-softmax per batch and the storage: V values per token, kept as float16 (2 bytes
each; their rounding moves a KL by about 1e-3 nats) in a separate table so that nothing else grows.
Vocabularies over `MAX_VOCAB` are refused in one line (at 151k entries a token would take 300 kB).
Forward recordings of decoder-only models only: generation and encoder–decoder models are refused.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from routescope.store.errors import InputError
from routescope.store.schema import OUTPUTS

from .units import Padded

MAX_VOCAB = 65_536
"""The largest vocabulary whose distributions a run stores (128 kB per token)."""


def check_vocabulary(size: int | None) -> None:
    """Refuse (one line) a vocabulary too large to store per token."""
    if size is not None and size > MAX_VOCAB:
        raise InputError(
            f"output_logprobs stores {size:,} log-probabilities per token, over the {MAX_VOCAB:,} limit; "
            "record without output_logprobs",
            field="output_logprobs",
        )


def logprob_rows(logits: torch.Tensor, batch: Padded) -> pa.Table:
    """Rows of the `outputs` table for a right-padded forward batch: per real token (in the tokens table's
    order), `log_softmax(logits)` at that position as float16."""
    if batch.left:
        raise ValueError("logprob_rows takes right-padded forward batches")
    check_vocabulary(int(logits.shape[-1]))
    real = batch.attention_mask.bool()
    with torch.no_grad():
        values = torch.log_softmax(logits.float(), dim=-1)[real.to(logits.device)].cpu()
    positions = batch.offsets[:, None] + torch.arange(real.shape[1])[None, :]
    samples = batch.samples[:, None].expand_as(real)
    n, vocab = values.shape
    flat = pa.array(values.numpy().astype(np.float16).reshape(-1), pa.float16())
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * vocab)
    return pa.table(
        {
            "sample": samples[real].numpy().astype(np.int32),
            "position": positions[real].numpy().astype(np.int32),
            "logprobs": pa.ListArray.from_arrays(offsets, flat),
        },
        schema=OUTPUTS,
    )


NO_LOGITS = "output_logprobs needs a model whose forward returns next-token logits (an LM head)"


def output_logits(result: object, batch: Padded) -> torch.Tensor:
    """The `[B, S, V]` logits of `batch`'s forward, refused in one line otherwise."""
    from .token_loss import logits_of

    logits = logits_of(result)
    if logits is None or tuple(logits.shape[:2]) != tuple(batch.input_ids.shape):
        raise InputError(NO_LOGITS, field="output_logprobs")
    return logits
