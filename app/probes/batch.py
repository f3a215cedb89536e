"""Batch dependence: route the same sequences alone and inside a batch, and record both.

"Buffer Overflow in MoE" shows that when routing depends on the whole batch — a capacity shared by the
batch's tokens, expert-choice routing — one sequence can change another's experts. Token-choice routers
without capacity decide each token from its own hidden state, so the two runs agree; a router whose
capacity spans the batch drops or moves tokens depending on their neighbours.
`routescope.analysis.batching.batch_dependence` compares the two runs decision by decision. (transformers'
Switch counts capacity per sequence, so even it is batch-independent under right padding.)
"""

from __future__ import annotations

from routescope.hooks.loaded import LoadedModel
from routescope.store.errors import InputError
from routescope.store.reader import Run, Store

from .common import Inputs, RecordOptions, Sampling, check_inputs, record_probe


def probe_batch(
    model: LoadedModel,
    inputs: Inputs,
    *,
    store: Store | str,
    name: str,
    batch_size: int | None = None,
    options: RecordOptions | None = None,
) -> tuple[Run, Run]:
    """Record `inputs` one at a time (`NAME.alone`) and `batch_size` at a time (`NAME`; default: all in one
    batch). Returns `(alone, batched)`."""
    check_inputs(model, inputs)
    if isinstance(inputs, Sampling):
        raise InputError("the batch probe is for text models (a diffusion batch changes its noise seeds)")
    size = batch_size or len(inputs)
    if size < 2:
        raise InputError("the batch probe needs at least two inputs in a batch")
    options = options or RecordOptions()
    entry = {"probe": "batch", "params": {"batch_size": size}, "base": f"{name}.alone"}
    alone = record_probe(
        model,
        inputs,
        store=store,
        name=f"{name}.alone",
        entry={**entry, "params": {"batch_size": 1}, "base": None},
        record_options={**options.for_inputs(inputs), "batch_size": 1},
    )
    batched = record_probe(
        model,
        inputs,
        store=store,
        name=name,
        entry=entry,
        record_options={**options.for_inputs(inputs), "batch_size": size},
    )
    return alone, batched
