"""`record()`: run a model over inputs and write every routing decision into a new run.

The loop is: tokenise → chunk → batch → capture (nnsight or hooks) → normalise each router call → append
Arrow row groups → publish. Memory is bounded by one batch. Generation records step 0 (the prompt) and
one step per new token; encoder–decoder models feed the text to the encoder and run the decoder on its
start token (forward) or on the tokens it generates.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from routescope.store.errors import InputError, RunExistsError
from routescope.store.reader import Run, Store, check_run_name
from routescope.store.schema import ASSIGNMENTS, STEPS, TOKENS, decisions_schema, samples_schema
from routescope.store.shards import Shard, parse_shard, part_store
from routescope.store.writer import RunWriter, check_label_columns

from .capture import Captured, Capturer, Engine
from .loaded import LoadedModel
from .manifest import model_facts, package_versions, tokenizer_name
from .normalise import normalise
from .remote import Remote, is_remote
from .routers import RouterSpec, candidate_paths, describe_from_outputs, describe_routers
from .tables import TokenTexts, alive_mask, router_call_tables, token_table
from .units import Layout, Padded, Unit, batches, make_units, pad, prompt_layout, step_layout

DEFAULT_CHUNK = 2048


def _tokenise(
    inputs: Sequence[str | torch.Tensor | Sequence[int]], tokenizer: Any
) -> tuple[list[list[int]], list]:
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
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:  # e.g. non-UTF-8 bytes from the command line
                raise InputError(
                    f"input {index} is not valid text (character {exc.start} is not Unicode); give UTF-8"
                ) from None
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


def _targets(
    targets: Sequence[str | Sequence[int]] | None,
    model: torch.nn.Module,
    tokenizer: Any,
    n: int,
    max_new_tokens: int,
    units: list[Unit],
) -> dict[int, list[int]]:
    """Tokenised decoder targets per sample (encoder–decoder models, forward recording only)."""
    if targets is None:
        return {}
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise InputError("targets are for encoder–decoder models; this model has no decoder stack")
    if max_new_tokens:
        raise InputError("give either targets or max_new_tokens, not both")
    if len(targets) != n:
        raise InputError(f"{len(targets)} targets for {n} inputs; give one target per input")
    if len(units) != n:
        raise InputError("an input is longer than the chunk size; targets need unchunked inputs")
    out = {}
    for sample, target in enumerate(targets):
        if isinstance(target, str):
            if tokenizer is None:
                raise InputError("text targets need a tokenizer")
            out[sample] = list(tokenizer(target, add_special_tokens=False)["input_ids"])
        else:
            out[sample] = [int(t) for t in target]
    return out


def _probe(unit: Unit) -> Unit:
    """The first two tokens of a unit, run forward only: a dry run that shows every router's output."""
    return Unit(unit.sample, unit.offset, unit.ids[:2])


def _context_length(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return min(value, DEFAULT_CHUNK)
    return DEFAULT_CHUNK


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


class _ModelCall:
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
    ) -> None:
        self.model = subject.model
        self.tokenizer = subject.tokenizer
        self.paths = paths
        self.specs: list[RouterSpec] = []  # set once the routers are described
        self.writer: RunWriter | None = None  # set once the run is opened
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
        self.call = _ModelCall(self.model)
        self.generating_run = bool(generate_kwargs.get("max_new_tokens"))

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
        if generating:
            captured = self.capturer.generate(inputs, pad_token_id=self.pad_id, **self.generate_kwargs)
        else:
            captured = self.capturer.forward(inputs, args)
        return _Prepared(batch, decoder, keep, captured)

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
        writer.write(
            "tokens", token_table(samples, positions, ids, self.text_of, generated=False, stack=stack)
        )
        if decoder is not None and keep is not None:
            for row, sample in enumerate(decoder.samples.tolist()):
                if keep[row]:
                    decoded = decoder.input_ids[row, : int(decoder.lengths[row])].tolist()
                    writer.write(
                        "tokens",
                        token_table(
                            sample,
                            range(len(decoded)),
                            decoded,
                            self.text_of,
                            generated=False,
                            stack="decoder",
                        ),
                    )
        alive = self._new_tokens(writer, batch, captured)
        for spec in self.specs:
            for index, output in enumerate(captured.outputs.get(spec.path, [])):
                step, call = divmod(index, spec.call_count)
                if decoder is not None and spec.stack == "decoder":
                    layout = self._layout(decoder, step, alive, keep)
                else:
                    layout = self._layout(batch, step, alive, None)
                assignments, decisions = router_call_tables(
                    normalise(output, spec.rule),
                    layout,
                    spec,
                    step=step,
                    call=call,
                    with_probs=self.with_probs,
                )
                writer.write("assignments", assignments)
                writer.write("decisions", decisions)

    def _new_tokens(self, writer: RunWriter, batch: Padded, captured: Captured) -> torch.Tensor | None:
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
                token_table(
                    sample,
                    range(start, start + len(kept)),
                    kept,
                    self.text_of,
                    generated=True,
                    stack="decoder",
                ),
            )
        return alive

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


def record(
    model: LoadedModel | torch.nn.Module,
    inputs: Sequence[str | torch.Tensor | Sequence[int]],
    *,
    store: Store | str,
    name: str,
    labels: Mapping[str, Sequence[Any]] | None = None,
    probs: bool = False,
    max_new_tokens: int = 0,
    targets: Sequence[str | Sequence[int]] | None = None,
    batch_size: int = 8,
    chunk_size: int | None = None,
    tokenizer: Any = None,
    routers: Sequence[str] | Mapping[str, Any] | None = None,
    engine: Engine = "nnsight",
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
    generate_kwargs: Mapping[str, Any] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    shard: Shard | str | None = None,
    remote: Remote = False,
) -> Run:
    """Record every routing decision of `model` on `inputs` into a new run `name` of `store`.

    `inputs` are strings (tokenised with the model's tokenizer) or token-id sequences; `labels` maps a
    column name to one value per input (e.g. `{"domain": [...]}`). `probs=True` also stores each
    decision's full probability vector and the raw router scores it came from (`logits`).
    `max_new_tokens > 0` generates (greedy unless `generate_kwargs` says otherwise) and records the
    routing of every new token. For encoder–decoder models the inputs feed the encoder and the decoder
    runs on its start token, followed by `targets` (one per input) when given. `on_progress(done, total)`
    is called after each batch is written (a dashboard's progress bar; `progress` switches the terminal
    bar). Returns the published `Run`.

    `shard="i/n"` records only inputs i, i+n, ... (keeping their sample indices) as part i of run `name`;
    `merge(store, name)` publishes the run once all n parts are recorded (store/shards.py). `remote=True`
    (NDIF), a host URL or `"local"` (nnsight's local simulation) runs the same nnsight trace remotely:
    the model may then be a meta-device model built from its hub config (see hooks/remote.py).
    """
    subject = model if isinstance(model, LoadedModel) else LoadedModel(model=model, tokenizer=tokenizer)
    if tokenizer is not None:
        subject.tokenizer = tokenizer
    store = store if isinstance(store, Store) else Store(store)
    check_run_name(name)
    if store.exists(name) and not overwrite:
        raise RunExistsError(
            f"run {name!r} already exists in {store.path}; pick another name or pass --overwrite"
        )
    if batch_size < 1 or max_new_tokens < 0 or (chunk_size is not None and chunk_size < 1):
        raise InputError("batch_size and chunk_size must be ≥ 1 and max_new_tokens ≥ 0")
    if not -(2**63) <= seed < 2**63:
        raise InputError(f"seed {seed} is out of range; give an integer in -2**63..2**63-1")
    if is_remote(remote) and engine != "nnsight":
        raise InputError("remote recording runs nnsight traces; use engine='nnsight'")
    n_inputs = len(inputs) if isinstance(inputs, Sequence) and not isinstance(inputs, str) else 0
    sample_ids = list(range(n_inputs))
    part = parse_shard(shard) if shard is not None else None
    if part is not None:
        sample_ids = part.samples(n_inputs)
        if not sample_ids:
            raise InputError(f"shard {part} has no inputs: {n_inputs} inputs for {part.count} shards")
        full = _labels(labels, n_inputs)  # checked on all inputs, then kept for this shard's
        labels = {column: [values[i] for i in sample_ids] for column, values in full.items()}
        if targets is not None and len(targets) != n_inputs:
            raise InputError(f"{len(targets)} targets for {n_inputs} inputs; give one target per input")
        targets = [targets[i] for i in sample_ids] if targets is not None else None
        inputs = [inputs[i] for i in sample_ids]
        store, name = part_store(store, name), part.part_name()
    token_ids, texts = _tokenise(inputs, subject.tokenizer)
    label_values = _labels(labels, len(token_ids))
    torch_model = subject.model.eval()
    if max_new_tokens and subject.tokenizer is None:
        raise InputError("generation needs a tokenizer; pass tokenizer= or use max_new_tokens=0")
    chunk = chunk_size or _context_length(torch_model)
    if max_new_tokens and max_new_tokens >= chunk:
        raise InputError(f"max_new_tokens ({max_new_tokens}) must be below the chunk size ({chunk})")
    units = make_units(token_ids, chunk, generate_room=max_new_tokens)
    target_ids = _targets(targets, torch_model, subject.tokenizer, len(token_ids), max_new_tokens, units)
    if part is not None:  # shard-local indices → the inputs' original sample indices
        units = [replace(unit, sample=sample_ids[unit.sample]) for unit in units]
        target_ids = {sample_ids[local]: ids for local, ids in target_ids.items()}

    declared = routers or subject.routers
    gen_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, **(generate_kwargs or {})}
    session = _Session(
        subject,
        candidate_paths(torch_model, declared),
        engine=engine,
        with_probs=probs,
        generate_kwargs=gen_kwargs,
        targets=target_ids,
        remote=remote,
    )
    groups = list(batches(units, batch_size, same_length=not session.call.takes_mask))
    torch.manual_seed(seed)
    first: _Prepared | None = None
    if max_new_tokens:  # a dry forward pass on two tokens says what each router returns
        specs = describe_routers(torch_model, lambda: session.capture([_probe(units[0])]), declared)
    else:  # a forward pass already says it: describe the routers from the first batch
        first = session.capture(groups[0])
        specs = describe_from_outputs(torch_model, session.paths, first.captured.outputs, declared)
    session.specs = specs

    manifest = {
        "kind": "text",
        "model": model_facts(subject),
        "tokenizer": tokenizer_name(subject),
        "routers": [s.to_manifest() for s in specs],
        "labels": list(label_values),
        "seed": seed,
        "options": {
            "probs": probs,
            "logits": probs,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "chunk_size": chunk,
            "engine": engine,
            "generate_kwargs": dict(generate_kwargs or {}),
            **({"shard": str(part), "inputs": n_inputs} if part is not None else {}),
            **({"remote": "local" if remote == "local" else "ndif"} if is_remote(remote) else {}),
        },
        "packages": package_versions(),
    }
    schemas = {
        "samples": samples_schema(list(label_values)),
        "tokens": TOKENS,
        "assignments": ASSIGNMENTS,
        "decisions": decisions_schema(probs, with_logits=probs),
        "steps": STEPS,
    }
    with RunWriter(store, name, schemas=schemas, manifest=manifest, overwrite=overwrite) as writer:
        session.writer = writer
        bar = tqdm(groups, desc=f"recording {name}", unit="batch", disable=not progress or len(groups) < 2)
        for index, group in enumerate(bar):
            session.write(group, first if index == 0 and first is not None else session.capture(group))
            if on_progress is not None:
                on_progress(index + 1, len(groups))
        n_steps = max(max_new_tokens, 1)  # step t < max_new_tokens routes a token; the last one is never fed
        writer.write(
            "steps",
            pa.table(
                {
                    "step": np.arange(n_steps, dtype=np.int32),
                    "timestep": pa.nulls(n_steps, pa.float64()),
                    "sigma": pa.nulls(n_steps, pa.float64()),
                },
                schema=STEPS,
            ),
        )
        decode = getattr(subject.tokenizer, "decode", None)
        generated = [session.generated.get(i, []) for i in sample_ids]
        samples = {
            "sample": np.asarray(sample_ids, dtype=np.int32),
            "text": texts,
            "n_tokens": np.array([len(t) for t in token_ids], dtype=np.int32),
            "n_generated": np.array([len(g) for g in generated], dtype=np.int32),
            "generated": [decode(g) if decode and g else None for g in generated],
            **label_values,
        }
        writer.write("samples", pa.table(samples, schema=schemas["samples"]))
        path = writer.publish()
    return Run(path)
