"""`record()`: run a model over inputs and write every routing decision into a new run.

The loop is: tokenise → chunk → batch → capture (nnsight or hooks) → normalise each router call → append
Arrow row groups → publish. Memory is bounded by one batch. Generation records step 0 (the prompt) and
one step per new token; encoder–decoder models feed the text to the encoder and run the decoder on its
start token (forward) or on the tokens it generates.

`record()` checks its arguments into a `TextSource` and hands it to the recording driver
(hooks/driver.py), which owns the opening checks, the manifest, the writer and the progress; the
per-batch capture and writing live in hooks/text_session.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from routescope.store.errors import InputError
from routescope.store.reader import Run, Store
from routescope.store.schema import EXPERT_MEANS, OUTPUTS, SHARED_EXPERTS
from routescope.store.shards import Shard, parse_shard, part_store
from routescope.store.writer import check_label_columns

from .capture import Engine
from .dimensions import samples_table, steps_table
from .driver import record_source
from .loaded import LoadedModel
from .manifest import ManifestFacts, model_facts, tokenizer_name
from .remote import Remote, is_remote
from .routers import RouterSpec, candidate_paths, describe_from_outputs, describe_routers
from .source import BaseSource, Plan, Sink
from .text_session import ModelCall, _input_device, _Prepared, _Session
from .units import Unit, batches, make_units
from .vision import ImageTextSource

DEFAULT_CHUNK = 2048
__all__ = ["DEFAULT_CHUNK", "ModelCall", "TextSource", "_Session", "_input_device", "record"]


def tokenise(
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


def check_statistics(
    token_loss: bool,
    expert_stats: bool,
    max_new_tokens: int,
    remote: Remote,
    output_logprobs: bool = False,
    expert_means: bool = False,
) -> None:
    """Refuse, in one line each, the per-token loss, output distributions, expert statistics and expert
    means a recording cannot give."""
    forward_only = (
        (token_loss, "token_loss"),
        (output_logprobs, "output_logprobs"),
        (expert_means, "expert_means"),
    )
    for wanted, name in forward_only:
        if wanted and max_new_tokens:
            raise InputError(f"{name} needs forward recordings; record without max_new_tokens", field=name)
    for wanted, name in (
        (token_loss, "token_loss"),
        (expert_stats, "expert_stats"),
        (output_logprobs, "output_logprobs"),
        (expert_means, "expert_means"),
    ):
        if wanted and is_remote(remote):
            raise InputError(f"{name} is computed here, not in a remote trace; record locally", field=name)


def check_image_options(**given: Any) -> None:
    """Refuse, in one line, a recording option that image inputs do not support (forward only, local,
    unchunked, without token loss or expert statistics)."""
    for option, value in given.items():
        if value:
            raise InputError(f"images are recorded forward and locally only; drop {option}", field=option)


def _probe(unit: Unit) -> Unit:
    """The first two tokens of a unit, run forward only: a dry run that shows every router's output."""
    return Unit(unit.sample, unit.offset, unit.ids[:2])


def context_length(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return min(value, DEFAULT_CHUNK)
    return DEFAULT_CHUNK


class TextSource(BaseSource):
    """A text model run over inputs, batch by batch: forward, or generating `max_new_tokens` per input."""

    verb = "recording"

    def __init__(
        self,
        subject: LoadedModel,
        inputs: Sequence[str | torch.Tensor | Sequence[int]],
        *,
        labels: Mapping[str, Sequence[Any]] | None,
        probs: bool,
        max_new_tokens: int,
        targets: Sequence[str | Sequence[int]] | None,
        batch_size: int,
        chunk_size: int | None,
        routers: Sequence[str] | Mapping[str, Any] | None,
        engine: Engine,
        seed: int,
        generate_kwargs: Mapping[str, Any] | None,
        shard: Shard | str | None,
        remote: Remote,
        token_loss: bool = False,
        expert_stats: bool = False,
        output_logprobs: bool = False,
        expert_means: bool = False,
    ) -> None:
        self.subject, self.inputs, self.label_input, self.targets = subject, inputs, labels, targets
        self.probs, self.max_new_tokens, self.batch_size, self.chunk_size = (
            probs,
            max_new_tokens,
            batch_size,
            chunk_size,
        )
        self.declared, self.engine, self.seed, self.remote = routers, engine, seed, remote
        self.generate_kwargs, self.shard = generate_kwargs, shard
        self.token_loss, self.expert_stats = bool(token_loss), bool(expert_stats)
        self.output_logprobs = bool(output_logprobs)
        self.expert_means = bool(expert_means)
        self.labels: list[str] = []

    def prepare(self) -> Plan:
        """Check the arguments, tokenise and chunk the inputs, and describe the routers (one model call)."""
        max_new_tokens, chunk_size, subject = self.max_new_tokens, self.chunk_size, self.subject
        if self.batch_size < 1 or max_new_tokens < 0 or (chunk_size is not None and chunk_size < 1):
            raise InputError("batch_size and chunk_size must be ≥ 1 and max_new_tokens ≥ 0")
        if not -(2**63) <= self.seed < 2**63:
            raise InputError(f"seed {self.seed} is out of range; give an integer in -2**63..2**63-1")
        if is_remote(self.remote) and self.engine != "nnsight":
            raise InputError("remote recording runs nnsight traces; use engine='nnsight'")
        check_statistics(
            self.token_loss,
            self.expert_stats,
            self.max_new_tokens,
            self.remote,
            self.output_logprobs,
            self.expert_means,
        )
        inputs, labels, targets = self.inputs, self.label_input, self.targets
        self.n_inputs = len(inputs) if isinstance(inputs, Sequence) and not isinstance(inputs, str) else 0
        self.sample_ids = list(range(self.n_inputs))
        self.part = part = parse_shard(self.shard) if self.shard is not None else None
        if part is not None:
            self.sample_ids = part.samples(self.n_inputs)
            if not self.sample_ids:
                raise InputError(
                    f"shard {part} has no inputs: {self.n_inputs} inputs for {part.count} shards"
                )
            full = _labels(labels, self.n_inputs)  # checked on all inputs, then kept for this shard's
            labels = {column: [values[i] for i in self.sample_ids] for column, values in full.items()}
            if targets is not None and len(targets) != self.n_inputs:
                raise InputError(
                    f"{len(targets)} targets for {self.n_inputs} inputs; give one target per input"
                )
            targets = [targets[i] for i in self.sample_ids] if targets is not None else None
            inputs = [inputs[i] for i in self.sample_ids]
        self.token_ids, self.texts = tokenise(inputs, subject.tokenizer)
        self.label_values = _labels(labels, len(self.token_ids))
        self.labels = list(self.label_values)
        torch_model = subject.model.eval()
        if max_new_tokens and subject.tokenizer is None:
            raise InputError("generation needs a tokenizer; pass tokenizer= or use max_new_tokens=0")
        self.chunk = chunk = chunk_size or context_length(torch_model)
        if max_new_tokens and max_new_tokens >= chunk:
            raise InputError(f"max_new_tokens ({max_new_tokens}) must be below the chunk size ({chunk})")
        units = make_units(self.token_ids, chunk, generate_room=max_new_tokens)
        target_ids = _targets(
            targets, torch_model, subject.tokenizer, len(self.token_ids), max_new_tokens, units
        )
        if part is not None:  # shard-local indices → the inputs' original sample indices
            units = [replace(unit, sample=self.sample_ids[unit.sample]) for unit in units]
            target_ids = {self.sample_ids[local]: ids for local, ids in target_ids.items()}
        declared = self.declared or subject.routers
        gen_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, **(self.generate_kwargs or {})}
        self.session = session = _Session(
            subject,
            candidate_paths(torch_model, declared),
            engine=self.engine,
            with_probs=self.probs,
            generate_kwargs=gen_kwargs,
            targets=target_ids,
            remote=self.remote,
            token_loss=self.token_loss,
            expert_stats=self.expert_stats,
            output_logprobs=self.output_logprobs,
            expert_means=self.expert_means,
            sequences={
                self.sample_ids[local]: ids for local, ids in enumerate(self.token_ids)
            },  # original sample ids, as the units carry
        )
        self.groups = list(batches(units, self.batch_size, same_length=not session.call.takes_mask))
        torch.manual_seed(self.seed)
        self.first: _Prepared | None = None
        if max_new_tokens:  # a dry forward pass on two tokens says what each router returns
            specs = describe_routers(torch_model, lambda: session.capture([_probe(units[0])]), declared)
        else:  # a forward pass already says it: describe the routers from the first batch
            self.first = session.capture(self.groups[0])
            specs = describe_from_outputs(torch_model, session.paths, self.first.captured.outputs, declared)
        session.specs = specs
        self.extra_tables = {
            **({"shared_experts": SHARED_EXPERTS} if session.shared is not None else {}),
            **({"expert_means": EXPERT_MEANS} if session.means is not None else {}),
            **({"outputs": OUTPUTS} if self.output_logprobs else {}),
        }
        return Plan(batches=len(self.groups), units=len(self.groups))

    def destination(self, store: Store, name: str) -> tuple[Store, str]:
        return (store, name) if self.part is None else (part_store(store, name), self.part.part_name())

    def routers(self) -> list[RouterSpec]:
        return self.session.specs

    def manifest_facts(self) -> ManifestFacts:
        part, remote = self.part, self.remote
        options = {
            "probs": self.probs,
            "logits": self.probs,
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
            "chunk_size": self.chunk,
            "engine": self.engine,
            "generate_kwargs": dict(self.generate_kwargs or {}),
            **({"shard": str(part), "inputs": self.n_inputs} if part is not None else {}),
            **({"remote": "local" if remote == "local" else "ndif"} if is_remote(remote) else {}),
            **({"token_loss": True} if self.token_loss else {}),
            **({"expert_stats": True} if self.expert_stats else {}),
            **({"output_logprobs": True} if self.output_logprobs else {}),
            **({"expert_means": True} if self.expert_means else {}),
        }
        return ManifestFacts(
            kind="text",
            model=model_facts(self.subject),
            tokenizer=tokenizer_name(self.subject),
            labels=self.labels,
            seed=self.seed,
            options=options,
        )

    def batches(self, sink: Sink) -> Iterator[None]:
        self.session.writer = sink
        for index, group in enumerate(self.groups):
            first = self.first if index == 0 else None
            self.session.write(group, first if first is not None else self.session.capture(group))
            sink.advance()
            yield

    def dimensions(self) -> Iterator[tuple[str, pa.Table]]:
        n_steps = max(self.max_new_tokens, 1)  # step t < max_new_tokens routes a token; the last is never fed
        yield "steps", steps_table(np.arange(n_steps))
        decode = getattr(self.subject.tokenizer, "decode", None)
        generated = [self.session.generated.get(i, []) for i in self.sample_ids]
        yield (
            "samples",
            samples_table(
                self.sample_ids,
                text=self.texts,
                n_tokens=[len(t) for t in self.token_ids],
                n_generated=[len(g) for g in generated],
                generated=[decode(g) if decode and g else None for g in generated],
                labels=self.label_values,
            ),
        )


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
    token_loss: bool = False,
    expert_stats: bool = False,
    images: Sequence[Any] | None = None,
    processor: Any = None,
    output_logprobs: bool = False,
    expert_means: bool = False,
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

    `token_loss=True` adds `tokens.nll` (−log p(next token) under the model's own logits; null on a
    sequence's last position) and `tokens.predicted` (the argmax next token), forward recordings only
    (hooks/token_loss.py). `expert_stats=True` adds `assignments.output_norm`, ‖f_e(x)‖₂ of each chosen
    expert's output before its gate weight, from one extra evaluation of the chosen experts through the
    model's own experts module (hooks/expert_outputs.py). `output_logprobs=True` keeps every input
    token's next-token log-probabilities (float16, table `outputs`; decoder-only forward recordings,
    vocabularies up to 65,536), which `output-kl` compares between runs (hooks/output_logprobs.py).
    `expert_means=True` adds the `expert_means` table: every real token through every expert of each
    layer, Σ f_e(x) and the token count per batch (decoder-only forward recordings; hooks/expert_means.py),
    the basis of output-based expert similarity.

    `images` (one entry per input: an image, a list of images or None; PIL images, arrays or file paths)
    records a vision-language model: each text with its images goes through the model's `processor`
    (`LoadedModel.processor` or `processor=`), and tokens gain `modality`, `image`, `frame`, `row`, `col`
    (hooks/vision.py). Forward recording only.
    """
    subject = model if isinstance(model, LoadedModel) else LoadedModel(model=model, tokenizer=tokenizer)
    if tokenizer is not None:
        subject.tokenizer = tokenizer
    if processor is not None:
        subject.processor = processor
    if images is not None:
        check_image_options(
            max_new_tokens=max_new_tokens,
            targets=targets,
            shard=shard,
            remote=remote,
            token_loss=token_loss,
            expert_stats=expert_stats,
            output_logprobs=output_logprobs,
            expert_means=expert_means,
        )
        vision = ImageTextSource(
            subject,
            inputs,
            images,
            labels=labels,
            probs=probs,
            batch_size=batch_size,
            routers=routers,
            engine=engine,
            seed=seed,
        )
        return record_source(
            vision, store=store, name=name, overwrite=overwrite, progress=progress, on_progress=on_progress
        )
    source = TextSource(
        subject,
        inputs,
        labels=labels,
        probs=probs,
        max_new_tokens=max_new_tokens,
        targets=targets,
        batch_size=batch_size,
        chunk_size=chunk_size,
        routers=routers,
        engine=engine,
        seed=seed,
        generate_kwargs=generate_kwargs,
        shard=shard,
        remote=remote,
        token_loss=token_loss,
        expert_stats=expert_stats,
        output_logprobs=output_logprobs,
        expert_means=expert_means,
    )
    return record_source(
        source, store=store, name=name, overwrite=overwrite, progress=progress, on_progress=on_progress
    )
