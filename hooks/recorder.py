"""`record()`: run a model over inputs and write every routing decision into a new run.

The loop is: tokenise → chunk → batch → capture (nnsight or hooks) → normalise each router call → append
Arrow row groups → publish. Memory is bounded by one batch. Generation records step 0 (the prompt) and
one step per new token; encoder–decoder models feed the text to the encoder and run the decoder on its
start token (forward) or on the tokens it generates.
"""

from __future__ import annotations

import importlib.metadata as metadata
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from .capture import Captured, Capturer, Engine
from .errors import InputError, RunExistsError
from .loaded import LoadedModel
from .normalise import normalise
from .routers import RouterSpec, describe_routers
from .schema import ASSIGNMENTS, STEPS, TOKENS, decisions_schema, samples_schema
from .store import Run, Store, check_run_name
from .tables import TokenTexts, alive_mask, router_call_tables, token_table
from .units import Layout, Padded, batches, make_units, pad, prompt_layout, step_layout
from .writer import RunWriter, check_label_columns

DEFAULT_CHUNK = 2048


def _tokenise(inputs: Sequence[str | torch.Tensor | Sequence[int]], tokenizer: Any) -> tuple[list[list[int]], list]:
    if isinstance(inputs, str | torch.Tensor) or not isinstance(inputs, Sequence) or len(inputs) == 0:
        raise InputError("inputs must be a non-empty list of strings or token-id sequences")
    ids: list[list[int]] = []
    texts: list[str | None] = []
    for index, item in enumerate(inputs):
        if isinstance(item, str):
            if not item.strip():
                raise InputError(f"input {index} is empty; give non-empty text")
            if tokenizer is None:
                raise InputError("text inputs need a tokenizer; pass tokenizer= or token ids")
            ids.append(list(tokenizer(item, add_special_tokens=True)["input_ids"]))
            texts.append(item)
        else:
            tokens = torch.as_tensor(item).reshape(-1).tolist()
            ids.append([int(t) for t in tokens])
            texts.append(tokenizer.decode(tokens) if tokenizer is not None else None)
        if not ids[-1]:
            raise InputError(f"input {index} has no tokens; give non-empty input")
    return ids, texts


def _labels(labels: Mapping[str, Sequence[Any]] | None, n: int) -> dict[str, list[str | None]]:
    out: dict[str, list[str | None]] = {}
    for column, values in (labels or {}).items():
        values = list(values)
        if len(values) != n:
            raise InputError(f"label column {column!r} has {len(values)} values for {n} inputs")
        out[str(column)] = [None if v is None else str(v) for v in values]
    check_label_columns(list(out))
    return out


def _context_length(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return min(value, DEFAULT_CHUNK)
    return DEFAULT_CHUNK


def _package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("routescope", "torch", "transformers", "nnsight", "pyarrow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


class _Session:
    """State of one recording: model, routers, writer and the per-batch decoding."""

    def __init__(self, subject: LoadedModel, specs: list[RouterSpec], writer: RunWriter, *, engine: Engine,
                 with_probs: bool, generate_kwargs: dict[str, Any]) -> None:
        self.model = subject.model
        self.tokenizer = subject.tokenizer
        self.specs = specs
        self.writer = writer
        self.with_probs = with_probs
        self.generate_kwargs = generate_kwargs
        self.capturer = Capturer(self.model, [s.path for s in specs], engine, subject.tokenizer)
        self.text_of = TokenTexts(subject.tokenizer)
        config = getattr(self.model, "config", None)
        self.encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        self.decoder_start = int(getattr(config, "decoder_start_token_id", None) or 0)
        self.pad_id = int(getattr(self.tokenizer, "pad_token_id", None) or getattr(config, "pad_token_id", 0) or 0)
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        self.eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
        self.generated: dict[int, list[int]] = {}

    def model_inputs(self, batch: Padded) -> dict[str, Any]:
        inputs: dict[str, Any] = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if self.encoder_decoder:
            inputs["decoder_input_ids"] = torch.full((batch.input_ids.shape[0], 1), self.decoder_start)
        return inputs

    def run_batch(self, units: list[Any]) -> None:
        generating = units[0].generate
        batch = pad(units, self.pad_id, left=generating and not self.encoder_decoder)
        for unit in units:
            positions = range(unit.offset, unit.offset + len(unit.ids))
            self.writer.write("tokens", token_table(unit.sample, positions, unit.ids, self.text_of,
                                                    generated=False, stack="encoder" if self.encoder_decoder else "decoder"))
        if generating:
            inputs = self.model_inputs(batch)
            inputs.pop("decoder_input_ids", None)
            captured = self.capturer.generate(inputs, pad_token_id=self.pad_id, **self.generate_kwargs)
        else:
            captured = self.capturer.forward(self.model_inputs(batch))
        self._write_routing(batch, captured)

    def _write_routing(self, batch: Padded, captured: Captured) -> None:
        new_tokens, alive = self._new_tokens(batch, captured)
        for spec in self.specs:
            entries = captured.outputs.get(spec.path, [])
            for index, output in enumerate(entries):
                step, call = divmod(index, spec.call_count)
                layout = self._layout(batch, spec, step, alive)
                assignments, decisions = router_call_tables(
                    normalise(output, spec.rule), layout, spec, step=step, call=call, with_probs=self.with_probs
                )
                self.writer.write("assignments", assignments)
                self.writer.write("decisions", decisions)

    def _new_tokens(self, batch: Padded, captured: Captured) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if captured.sequences is None:
            if self.encoder_decoder:  # the decoder ran on its start token
                for row, sample in enumerate(batch.samples.tolist()):
                    self.writer.write("tokens", token_table(sample, [0], [self.decoder_start], self.text_of,
                                                            generated=False, stack="decoder"))
            return None, None
        prompt = 1 if self.encoder_decoder else batch.input_ids.shape[1]
        new_tokens = captured.sequences[:, prompt:]
        alive = alive_mask(new_tokens, self.eos_ids)
        for row, sample in enumerate(batch.samples.tolist()):
            kept = new_tokens[row][alive[row]].tolist()
            self.generated[sample] = kept
            if self.encoder_decoder:
                self.writer.write("tokens", token_table(sample, [0], [self.decoder_start], self.text_of,
                                                        generated=False, stack="decoder"))
                positions, ids = list(range(1, 1 + len(kept))), kept
            else:
                start = int(batch.offsets[row] + batch.lengths[row])
                positions, ids = list(range(start, start + len(kept))), kept
            self.writer.write("tokens", token_table(sample, positions, ids, self.text_of, generated=True,
                                                    stack="decoder"))
        return new_tokens, alive

    def _layout(self, batch: Padded, spec: RouterSpec, step: int, alive: torch.Tensor | None) -> Layout:
        n = batch.input_ids.shape[0]
        decoder_of_seq2seq = self.encoder_decoder and spec.stack == "decoder"
        if step == 0:
            if decoder_of_seq2seq:
                return step_layout(batch.samples, torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.bool))
            return prompt_layout(batch)
        assert alive is not None, "a decode step without generated tokens"
        real = alive[:, step - 1] if step - 1 < alive.shape[1] else torch.zeros(n, dtype=torch.bool)
        if decoder_of_seq2seq:
            return step_layout(batch.samples, torch.full((n,), step), real)
        return step_layout(batch.samples, batch.offsets + batch.lengths + step - 1, real)


def record(
    model: LoadedModel | torch.nn.Module,
    inputs: Sequence[str | torch.Tensor | Sequence[int]],
    *,
    store: Store | str,
    name: str,
    labels: Mapping[str, Sequence[Any]] | None = None,
    probs: bool = False,
    max_new_tokens: int = 0,
    batch_size: int = 8,
    chunk_size: int | None = None,
    tokenizer: Any = None,
    routers: Sequence[str] | Mapping[str, Any] | None = None,
    engine: Engine = "nnsight",
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
    generate_kwargs: Mapping[str, Any] | None = None,
) -> Run:
    """Record every routing decision of `model` on `inputs` into a new run `name` of `store`.

    `inputs` are strings (tokenised with the model's tokenizer) or token-id sequences; `labels` maps a
    column name to one value per input (e.g. `{"domain": [...]}`). `probs=True` also stores each
    decision's full probability vector. `max_new_tokens > 0` generates (greedy unless `generate_kwargs`
    says otherwise) and records the routing of every new token. Returns the published `Run`.
    """
    subject = model if isinstance(model, LoadedModel) else LoadedModel(model=model, tokenizer=tokenizer)
    if tokenizer is not None:
        subject.tokenizer = tokenizer
    store = store if isinstance(store, Store) else Store(store)
    check_run_name(name)
    if store.exists(name) and not overwrite:
        raise RunExistsError(f"run {name!r} already exists in {store.path}; pick another name or pass --overwrite")
    if batch_size < 1 or max_new_tokens < 0:
        raise InputError("batch_size must be ≥ 1 and max_new_tokens ≥ 0")
    token_ids, texts = _tokenise(inputs, subject.tokenizer)
    label_values = _labels(labels, len(token_ids))
    torch_model = subject.model.eval()
    if max_new_tokens and subject.tokenizer is None:
        raise InputError("generation needs a tokenizer; pass tokenizer= or use max_new_tokens=0")
    chunk = chunk_size or _context_length(torch_model)
    if max_new_tokens and max_new_tokens >= chunk:
        raise InputError(f"max_new_tokens ({max_new_tokens}) must be below the chunk size ({chunk})")
    units = make_units(token_ids, chunk - max_new_tokens, generate=max_new_tokens > 0)

    probe = pad(units[:1], 0, left=False)
    probe_inputs = {"input_ids": probe.input_ids[:, :2], "attention_mask": probe.attention_mask[:, :2]}
    if getattr(getattr(torch_model, "config", None), "is_encoder_decoder", False):
        start = int(getattr(torch_model.config, "decoder_start_token_id", None) or 0)
        probe_inputs["decoder_input_ids"] = torch.full((1, 1), start)
    specs = describe_routers(torch_model, lambda: torch_model(**probe_inputs), routers or subject.routers)

    config = getattr(torch_model, "config", None)
    manifest = {
        "model": {
            "spec": subject.spec,
            "source": subject.source,
            "class": type(torch_model).__name__,
            "family": getattr(config, "model_type", None),
            "revision": getattr(config, "_commit_hash", None),
            "dtype": str(next(torch_model.parameters()).dtype).removeprefix("torch."),
            "parameters": sum(p.numel() for p in torch_model.parameters()),
            "encoder_decoder": bool(getattr(config, "is_encoder_decoder", False)),
            **subject.info,
        },
        "tokenizer": getattr(subject.tokenizer, "name_or_path", None) or type(subject.tokenizer).__name__,
        "routers": [s.to_manifest() for s in specs],
        "labels": list(label_values),
        "seed": seed,
        "options": {"probs": probs, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                    "chunk_size": chunk, "engine": engine},
        "packages": _package_versions(),
    }
    schemas = {
        "samples": samples_schema(list(label_values)),
        "tokens": TOKENS,
        "assignments": ASSIGNMENTS,
        "decisions": decisions_schema(probs),
        "steps": STEPS,
    }
    gen_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, **(generate_kwargs or {})}
    torch.manual_seed(seed)
    with RunWriter(store, name, schemas=schemas, manifest=manifest, overwrite=overwrite) as writer:
        session = _Session(subject, specs, writer, engine=engine, with_probs=probs, generate_kwargs=gen_kwargs)
        groups = list(batches(units, batch_size))
        for group in tqdm(groups, desc=f"recording {name}", unit="batch", disable=not progress or len(groups) < 2):
            session.run_batch(group)
        n_steps = max_new_tokens if max_new_tokens else 0
        writer.write("steps", pa.table({"step": np.arange(n_steps + 1, dtype=np.int32),
                                        "timestep": pa.nulls(n_steps + 1, pa.float64()),
                                        "sigma": pa.nulls(n_steps + 1, pa.float64())}, schema=STEPS))
        decode = getattr(subject.tokenizer, "decode", None)
        generated = [session.generated.get(i, []) for i in range(len(token_ids))]
        samples = {
            "sample": np.arange(len(token_ids), dtype=np.int32),
            "text": texts,
            "n_tokens": np.array([len(t) for t in token_ids], dtype=np.int32),
            "n_generated": np.array([len(g) for g in generated], dtype=np.int32),
            "generated": [decode(g) if decode and g else None for g in generated],
            **label_values,
        }
        writer.write("samples", pa.table(samples, schema=schemas["samples"]))
        path = writer.publish()
    return Run(path)
