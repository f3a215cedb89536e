"""One text recording's capture session: call the model on a batch, keep what its routers returned, and
write the batch's tokens and router rows.

Split from hooks/recorder.py, which turns `record()`'s arguments into a `TextSource` for the recording
driver (hooks/driver.py); this module is the per-batch work that source does: padding and placing the
inputs, encoder–decoder decoder batches, generation, and the layout of each router call's rows.
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from routescope.store.errors import InputError

from .capture import Captured, Capturer, Engine
from .expert_means import ExpertInputs
from .expert_outputs import Entry, ExpertNorms, experts_kind, experts_paths, resolve_norms
from .loaded import LoadedModel
from .normalise import normalise
from .output_logprobs import check_vocabulary, logprob_rows, output_logits
from .remote import Remote, is_remote
from .routers import RouterSpec, shared_expert_paths
from .shared_outputs import SharedNorms
from .source import Sink
from .tables import TokenTexts, alive_mask, router_call_tables, token_table
from .token_loss import batch_loss, check_lm_head, check_logits, with_loss
from .units import Layout, Padded, Unit, pad, prompt_layout, step_layout


def _input_device(model: torch.nn.Module) -> torch.device | None:
    """Where the model reads its input ids (its input embedding's device), or None when the inputs can
    stay on the CPU: CPU models, and meta-device models whose forward runs remotely."""
    try:
        embeddings = model.get_input_embeddings()  # type: ignore[operator]
        device = embeddings.weight.device
    except (AttributeError, NotImplementedError, TypeError):
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    return None if device.type in ("cpu", "meta") else device


class ModelCall:
    """How to call a model's forward: HF models take `input_ids=`/`attention_mask=`; a plain module may
    take the ids positionally and no mask (then batches hold equal-length inputs only, so no padding)."""

    def __init__(self, model: torch.nn.Module) -> None:
        try:
            params = dict(inspect.signature(model.forward).parameters)
        except (TypeError, ValueError):
            params = {}
        any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self.by_name = any_kw or "input_ids" in params
        self.takes_mask = self.by_name and (any_kw or "attention_mask" in params)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if not self.by_name:
            return (ids,), {}
        return (), ({"input_ids": ids, "attention_mask": mask} if self.takes_mask else {"input_ids": ids})


@dataclass(frozen=True)
class _Prepared:
    """One batch after the model ran: its padded inputs and what the routers returned."""

    batch: Padded
    decoder: Padded | None
    keep: torch.Tensor | None
    captured: Captured
    norms: dict[str, list[Entry]] | None = None
    """Router path → per call, the `[T, k]` output norms of its chosen experts or what computes them once
    the call's router output is decoded (`expert_stats`, hooks/expert_outputs.py)."""
    shared: dict[str, list[torch.Tensor]] | None = None
    """Shared expert (or gate) path → per call, its `[T]` output norms (gate: sigmoids)."""
    means: dict[str, list[tuple[torch.Tensor, ...]]] | None = None
    """Router path → per call, its experts module's (hidden, index, weights) (`expert_means`)."""
    loss: tuple[np.ndarray, np.ndarray] | None = None
    """`[B, S]` nll and predicted of the batch (`token_loss`), and of the decoder batch below."""
    decoder_loss: tuple[np.ndarray, np.ndarray] | None = None
    outputs: pa.Table | None = None
    """The batch's `outputs` rows: every real token's next-token log-probabilities (`output_logprobs`)."""


class _Session:
    """State of one recording: model, routers, writer and the per-batch decoding."""

    def __init__(
        self,
        subject: LoadedModel,
        paths: list[str],
        *,
        engine: Engine,
        with_probs: bool,
        generate_kwargs: dict[str, Any],
        targets: dict[int, list[int]],
        remote: Remote = False,
        token_loss: bool = False,
        expert_stats: bool = False,
        expert_means: bool = False,
        sequences: dict[int, list[int]] | None = None,
        output_logprobs: bool = False,
    ) -> None:
        self.model = subject.model
        self.tokenizer = subject.tokenizer
        self.paths = paths
        self.specs: list[RouterSpec] = []  # set once the routers are described
        self.writer: Sink | None = None  # set once the run is opened
        self.with_probs = with_probs
        self.generate_kwargs = generate_kwargs
        self.capturer = Capturer(self.model, paths, engine, subject.tokenizer, remote=remote)
        self.device = None if is_remote(remote) else _input_device(self.model)
        self.text_of = TokenTexts(subject.tokenizer)
        config = getattr(self.model, "config", None)
        self.encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        self.decoder_start = int(getattr(config, "decoder_start_token_id", None) or 0)
        self.pad_id = int(
            getattr(self.tokenizer, "pad_token_id", None) or getattr(config, "pad_token_id", 0) or 0
        )
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        self.eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
        self.generated: dict[int, list[int]] = {}
        self.targets = targets
        self.call = ModelCall(self.model)
        self.generating_run = bool(generate_kwargs.get("max_new_tokens"))
        self.token_loss = token_loss
        self.output_logprobs = output_logprobs
        if output_logprobs and self.encoder_decoder:
            raise InputError(
                "output_logprobs records decoder-only models; record without it", field="output_logprobs"
            )
        if output_logprobs:
            check_vocabulary(getattr(config, "vocab_size", None))
        if token_loss:
            check_lm_head(self.model)
        self.sequences = sequences or {}
        """Sample → all its token ids: the next token after a chunk's end (`token_loss`)."""
        self.norms = ExpertNorms(self.model, experts_paths(self.model, paths)) if expert_stats else None
        shared = SharedNorms(self.model, shared_expert_paths(self.model, paths)) if expert_stats else None
        self.shared = shared or None  # None without shared experts
        self.means = self._expert_inputs(paths) if expert_means else None

    def _expert_inputs(self, paths: list[str]) -> ExpertInputs:
        """The hooks `expert_means` needs: decoder-only models whose experts are called per rank."""
        if self.encoder_decoder:
            raise InputError("expert_means needs a decoder-only model", field="expert_means")
        try:
            experts = experts_paths(self.model, paths)
            for router, path in experts.items():
                if experts_kind(self.model, router, path) != "called":  # every expert on every token
                    raise InputError(
                        f"expert_stats needs experts called as experts(hidden_states, indices, weights); "
                        f"router {router}'s are not",
                        field="expert_stats",
                    )
            return ExpertInputs(self.model, experts)
        except InputError as exc:
            raise InputError(str(exc).replace("expert_stats", "expert_means"), field="expert_means") from None

    def _decoder_batch(self, units: list[Unit], with_targets: bool) -> tuple[Padded, torch.Tensor]:
        """Decoder inputs of an encoder–decoder batch (the start token, then the targets if given) and which
        rows to record: one decoder pass per sample — its first chunk, or the chunk that generates."""
        decoder_units = [
            Unit(u.sample, 0, (self.decoder_start, *(self.targets.get(u.sample, ()) if with_targets else ())))
            for u in units
        ]
        keep = torch.tensor([u.generate if self.generating_run else u.offset == 0 for u in units])
        return pad(decoder_units, self.pad_id, left=False), keep

    def capture(self, units: list[Unit]) -> _Prepared:
        """Run one batch and keep what its routers returned (nothing is written yet)."""
        generating = units[0].generate
        batch = pad(units, self.pad_id, left=generating and not self.encoder_decoder)
        args, inputs = self.call(self._placed(batch.input_ids), self._placed(batch.attention_mask))
        decoder, keep = None, None
        if self.encoder_decoder:
            decoder, keep = self._decoder_batch(units, with_targets=not generating)
            if not generating:
                inputs.update(
                    decoder_input_ids=self._placed(decoder.input_ids),
                    decoder_attention_mask=self._placed(decoder.attention_mask),
                )
        with ExitStack() as hooked:
            norms = hooked.enter_context(self.norms.watching()) if self.norms is not None else None
            shared = hooked.enter_context(self.shared.watching()) if self.shared is not None else None
            means = hooked.enter_context(self.means.watching()) if self.means is not None else None
            if generating:
                captured = self.capturer.generate(inputs, pad_token_id=self.pad_id, **self.generate_kwargs)
            else:
                captured = self.capturer.forward(inputs, args)
        loss = decoder_loss = None
        if self.token_loss and not generating:
            if decoder is None:
                loss = batch_loss(check_logits(captured.result, batch), batch, self.sequences)
            else:  # the logits are the decoder's: encoder tokens have none
                decoder_loss = batch_loss(check_logits(captured.result, decoder), decoder)
        outputs = None
        if self.output_logprobs and not generating:
            outputs = logprob_rows(output_logits(captured.result, batch), batch)
        return _Prepared(batch, decoder, keep, captured, norms, shared, means, loss, decoder_loss, outputs)

    def _placed(self, tensor: torch.Tensor) -> torch.Tensor:
        """An input tensor on the model's input device (a GPU model, or the first device of a device map)."""
        return tensor if self.device is None else tensor.to(self.device)

    def write(self, units: list[Unit], prepared: _Prepared) -> None:
        """Write one captured batch: its tokens, generated tokens and every router call's rows."""
        writer = self.writer
        assert writer is not None, "write() before the run was opened"
        batch, decoder, keep, captured = prepared.batch, prepared.decoder, prepared.keep, prepared.captured
        stack = "encoder" if self.encoder_decoder else "decoder"
        samples = np.concatenate([np.full(len(u.ids), u.sample, np.int32) for u in units])
        positions = np.concatenate(
            [np.arange(u.offset, u.offset + len(u.ids), dtype=np.int32) for u in units]
        )
        ids = np.concatenate([np.asarray(u.ids, np.int32) for u in units])
        real = batch.attention_mask.bool().numpy()
        loss = prepared.loss
        writer.write(
            "tokens",
            self._with_loss(
                token_table(samples, positions, ids, self.text_of, generated=False, stack=stack),
                None if loss is None else loss[0][real],
                None if loss is None else loss[1][real],
            ),
        )
        if decoder is not None and keep is not None:
            for row, sample in enumerate(decoder.samples.tolist()):
                if keep[row]:
                    length = int(decoder.lengths[row])
                    decoded = decoder.input_ids[row, :length].tolist()
                    dec_loss = prepared.decoder_loss
                    writer.write(
                        "tokens",
                        self._with_loss(
                            token_table(
                                sample,
                                range(len(decoded)),
                                decoded,
                                self.text_of,
                                generated=False,
                                stack="decoder",
                            ),
                            None if dec_loss is None else dec_loss[0][row, :length],
                            None if dec_loss is None else dec_loss[1][row, :length],
                        ),
                    )
        if prepared.outputs is not None:
            writer.write("outputs", prepared.outputs)
        alive = self._new_tokens(writer, batch, captured)
        for spec in self.specs:
            norms = None if prepared.norms is None else prepared.norms.get(spec.path, [])
            for index, output in enumerate(captured.outputs.get(spec.path, [])):
                step, call = divmod(index, spec.call_count)
                if decoder is not None and spec.stack == "decoder":
                    layout = self._layout(decoder, step, alive, keep)
                else:
                    layout = self._layout(batch, step, alive, None)
                decoded = normalise(output, spec.rule)
                assignments, decisions = router_call_tables(
                    decoded,
                    layout,
                    spec,
                    step=step,
                    call=call,
                    with_probs=self.with_probs,
                    norms=None if norms is None else resolve_norms(norms[index], output, decoded.expert),
                )
                writer.write("assignments", assignments)
                writer.write("decisions", decisions)
                if self.shared is not None and prepared.shared is not None:
                    for rows in self.shared.rows(prepared.shared, spec, index, layout, step, call):
                        writer.write("shared_experts", rows)
                if self.means is not None and prepared.means is not None:
                    real = batch.attention_mask.bool()
                    writer.write("expert_means", self.means.rows(prepared.means, spec, index, real))

    def _new_tokens(self, writer: Sink, batch: Padded, captured: Captured) -> torch.Tensor | None:
        """Write the generated tokens (up to and including the first EOS); return which steps were real."""
        if captured.sequences is None:
            return None
        prompt = 1 if self.encoder_decoder else batch.input_ids.shape[1]
        new_tokens = captured.sequences[:, prompt:]
        alive = alive_mask(new_tokens, self.eos_ids)
        for row, sample in enumerate(batch.samples.tolist()):
            kept = new_tokens[row][alive[row]].tolist()
            self.generated[sample] = kept
            start = 1 if self.encoder_decoder else int(batch.offsets[row] + batch.lengths[row])
            writer.write(
                "tokens",
                self._with_loss(
                    token_table(
                        sample,
                        range(start, start + len(kept)),
                        kept,
                        self.text_of,
                        generated=True,
                        stack="decoder",
                    )
                ),
            )
        return alive

    def _with_loss(
        self, table: pa.Table, nll: np.ndarray | None = None, predicted: np.ndarray | None = None
    ) -> pa.Table:
        """Tokens rows with `nll` and `predicted` when the run records token loss (null where not given)."""
        return with_loss(table, nll, predicted) if self.token_loss else table

    @staticmethod
    def _layout(source: Padded, step: int, alive: torch.Tensor | None, keep: torch.Tensor | None) -> Layout:
        """Rows of one router call: the whole (padded) input at step 0, one new token per row after;
        rows of batch entries not to record (`keep` false) count as padding."""
        if step == 0:
            layout = prompt_layout(source)
        else:
            assert alive is not None, "a decode step without generated tokens"
            n = source.input_ids.shape[0]
            real = alive[:, step - 1] if step - 1 < alive.shape[1] else torch.zeros(n, dtype=torch.bool)
            layout = step_layout(source.samples, source.offsets + source.lengths + step - 1, real)
        if keep is None:
            return layout
        per_row = layout.rows // len(keep)
        return Layout(layout.sample, layout.position, layout.real & keep.repeat_interleave(per_row))
