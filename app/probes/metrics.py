"""Model quality under an edit: next-token loss for language models; for diffusion models, the measure the
model was loaded with (`LoadedModel.quality`: the bundled DiT registers its denoising loss and class
accuracy in `routescope.models`, so this package never imports the models).

A routing change matters when the model gets worse, so the ablation probe measures quality under the same
hooks it records with and stores the numbers in the probe entry; `routescope.analysis.ablation` turns
them into tables. Language models: the summed next-token negative log-likelihood (nats) and the number of
predicted tokens of every input, on exactly the tokens `record()` records (same tokenisation and
chunking; each chunk predicts its own tokens 1..n-1). Diffusion: only the bundled `dit-digits` has a
known data set and schedule; `routescope.models.dit_digits.measures` scores ε-prediction MSE on real
digits per timestep bucket and the class accuracy of the sampled digits. Other diffusion models get no
metrics (their runs are recorded all the same).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from routescope.hooks.loaded import LoadedModel
from routescope.hooks.recorder import ModelCall
from routescope.hooks.units import batches, make_units, pad

from .common import Inputs, RecordOptions, Sampling, chunk_size, text_token_ids


def _pad_id(model: LoadedModel) -> int:
    config = getattr(model.model, "config", None)
    return int(getattr(model.tokenizer, "pad_token_id", None) or getattr(config, "pad_token_id", None) or 0)


def _logits(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else None


@torch.no_grad()
def next_token_loss(
    model: LoadedModel, token_ids: Sequence[Sequence[int]], chunk: int, batch_size: int = 8
) -> dict[str, list[Any]] | None:
    """Per input: summed next-token NLL (nats) and predicted-token count; None for models that are not
    causal language models (encoder–decoder models, outputs without logits)."""
    torch_model = model.model
    config = getattr(torch_model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return None
    call = ModelCall(torch_model)
    nll = np.zeros(len(token_ids))
    count = np.zeros(len(token_ids), dtype=np.int64)
    for group in batches(make_units(token_ids, chunk), batch_size, same_length=not call.takes_mask):
        batch = pad(group, _pad_id(model), left=False)
        args, kwargs = call(batch.input_ids, batch.attention_mask)
        logits = _logits(torch_model(*args, **kwargs))
        if logits is None or logits.shape[:2] != batch.input_ids.shape:
            return None
        per_token = F.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), batch.input_ids[:, 1:], reduction="none"
        )
        real = batch.attention_mask[:, 1:].bool()
        for row, sample in enumerate(batch.samples.tolist()):
            nll[sample] += float(per_token[row][real[row]].double().sum())
            count[sample] += int(real[row].sum())
    return {"nll": nll.tolist(), "tokens": count.tolist()}


def quality(
    model: LoadedModel, inputs: Inputs, options: RecordOptions
) -> Callable[[], dict[str, Any] | None] | None:
    """The measurement a probe runs under its edit: next-token loss (text), denoising loss and class
    accuracy (the bundled DiT), or None when the model has neither."""
    if isinstance(inputs, Sampling):
        measure, sampler = model.quality, model.sampler
        if measure is None or sampler is None:
            return None
        sampling = inputs
        return lambda: measure(
            model.model,
            sampler,
            classes=sampling.classes,
            samples_per_class=sampling.samples_per_class,
            steps=sampling.steps,
            cfg_scale=sampling.cfg_scale,
            seed=sampling.seed,
            batch_size=sampling.batch_size,
        )
    token_ids = text_token_ids(model, inputs)
    chunk = chunk_size(model, options.chunk_size)

    def measure() -> dict[str, Any] | None:
        loss = next_token_loss(model, token_ids, chunk, options.batch_size)
        return None if loss is None else {"loss": loss}

    return measure
