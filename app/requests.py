"""Requests shared by the CLI and the dashboard: what to record or probe, with every default and every
companion-run name in one place.

The CLI turns arguments into a request (`cli_record`, `cli_probe`), the dashboard turns widgets into the
same request (`dashboard/recording.py`, `dashboard/probing.py`), and `request.execute(model, ...)` calls
the library. Model loading stays with the front end (the CLI's flags, the dashboard's cached loader).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from routescope.hooks import LoadedModel
from routescope.probes import RecordOptions, Sampling
from routescope.probes.common import Inputs as ProbeInputs
from routescope.probes.noise import NoiseTarget
from routescope.store import InputError, Run, Store

from .inputs import Inputs

Progress = Callable[[int, int], None]
"""`progress(done, total)`, called as a recording advances."""
DEFAULT_STEPS = 25
"""Sampler steps when none are given (the README's and docs/dashboard.md's value)."""
DEFAULT_CLASSES = tuple(range(10))
"""Classes sampled when none are given."""


@dataclass(frozen=True, kw_only=True)
class DiffusionRequest(Sampling):
    """How to sample a class-conditional diffusion model: a probe's `Sampling` with the front ends'
    defaults (all ten classes, `DEFAULT_STEPS`); `record_kwargs()` gives `record_diffusion`'s arguments."""

    classes: tuple[int, ...] = DEFAULT_CLASSES
    steps: int = DEFAULT_STEPS


@dataclass(frozen=True, kw_only=True)
class RecordRequest:
    """Record one run: text `inputs` for a language model, or `diffusion` sampling settings."""

    name: str
    """Run name (letters, digits, . _ -)."""
    inputs: Inputs | None = None
    """Text inputs with their labels (and decoder targets); None for a diffusion model."""
    diffusion: DiffusionRequest | None = None
    """Sampling settings for a diffusion model; None for a text model."""
    probs: bool = False
    """Also store each decision's full probability vector."""
    token_loss: bool = False
    """Text: also store each token's next-token loss and argmax prediction (`tokens.nll`, `predicted`)."""
    expert_stats: bool = False
    """Also store each chosen expert's output norm before its gate (`assignments.output_norm`); text and
    diffusion models."""
    output_logprobs: bool = False
    """Text: also store each token's next-token log-probabilities (table `outputs`, for `output-kl`)."""
    expert_means: bool = False
    """Text: also store every expert's summed output over all tokens (`expert_means` table)."""
    max_new_tokens: int = 0
    """Text: generate this many tokens after each input and record their routing too."""
    batch_size: int | None = None
    """Texts per batch (None: 8); diffusion uses `diffusion.batch_size`."""
    chunk_size: int | None = None
    """Text: split longer inputs (None: the model's context)."""
    engine: str = "nnsight"
    """Capture engine: nnsight or hooks."""
    seed: int = 0
    """Text: generation seed."""
    overwrite: bool = False
    """Replace an existing run of the same name."""

    def companion_names(self) -> list[str]:
        """Every run the request writes."""
        return [self.name]

    def execute(
        self,
        model: LoadedModel,
        *,
        store: Store,
        progress: Progress | None = None,
        terminal: bool = False,
        **extra: Any,
    ) -> Run:
        """Record into `store`; `extra` (text models: `shard`, `remote`) goes to `record()` as is."""
        from routescope.hooks import record, record_diffusion

        common: dict[str, Any] = {
            "store": store,
            "name": self.name,
            "probs": self.probs,
            "engine": self.engine,
            "overwrite": self.overwrite,
            "progress": terminal,
            "on_progress": progress,
        }
        if model.sampler is not None:
            if self.inputs is not None and self.diffusion is None:
                raise InputError(f"{model.spec or 'this model'} is a diffusion model: give classes, not text")
            text_only = (
                (self.token_loss, "token_loss"),
                (self.output_logprobs, "output_logprobs"),
                (self.expert_means, "expert_means"),
            )
            for wanted, field_name in text_only:
                if wanted:
                    raise InputError(f"{field_name} is recorded for text models only", field=field_name)
            sampling = (self.diffusion or DiffusionRequest()).record_kwargs()
            return record_diffusion(model, **sampling, expert_stats=self.expert_stats, **common)
        if self.inputs is None:
            raise InputError(f"{model.spec or 'this model'} is not a diffusion model: give text inputs")
        return record(
            model,
            self.inputs.texts,
            labels=self.inputs.labels or None,
            targets=self.inputs.targets,
            max_new_tokens=self.max_new_tokens,
            batch_size=8 if self.batch_size is None else self.batch_size,
            chunk_size=self.chunk_size,
            seed=self.seed,
            token_loss=self.token_loss,
            output_logprobs=self.output_logprobs,
            expert_stats=self.expert_stats,
            **({"images": self.inputs.images} if self.inputs.images is not None else {}),
            expert_means=self.expert_means,
            **extra,
            **common,
        )


# --- Probes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Ablate:
    """Disable experts: a list, or each router's `top` most used in the base run; and/or the shared one."""

    experts: tuple[int, ...] = ()
    """Experts to disable."""
    top: int | None = None
    """Disable each router's `top` most used experts instead."""
    shared: bool = False
    """Also (or only) zero the shared expert."""
    seeds: int = 3
    """Random ablations of the same size (seeds 0..n-1)."""
    layers: tuple[int, ...] | None = None
    """MoE layers to edit (None: all)."""


@dataclass(frozen=True, kw_only=True)
class Force:
    """Route the selected tokens (all, or those whose labels match `where`) to `experts`."""

    experts: tuple[int, ...]
    """The forced expert set (at least top-k experts)."""
    where: Mapping[str, str] = field(default_factory=dict)
    """Only tokens of inputs with these label values."""
    positions: frozenset[int] | None = None
    """Only these positions / patches (None: all)."""
    stack: str | None = None
    """Encoder–decoder models: routers of one stack only."""
    layers: tuple[int, ...] | None = None
    """MoE layers to edit (None: all)."""


@dataclass(frozen=True, kw_only=True)
class Noise:
    """Gaussian noise of scale `sigma` on the router input (relative to its RMS) or logits."""

    sigma: float = 0.05
    """Noise scale."""
    on: NoiseTarget = "input"
    """Where the noise goes: input or logits."""
    seed: int = 0
    """Seed of the noise."""
    layers: tuple[int, ...] | None = None
    """MoE layers to edit (None: all)."""
    base: str | None = None
    """An unedited run of the same inputs to compare with (None: record `NAME.base`)."""


@dataclass(frozen=True, kw_only=True)
class Batch:
    """The same inputs one at a time and `batch_size` at a time."""

    batch_size: int | None = 4
    """Inputs per batch (None: the probe's default)."""


@dataclass(frozen=True, kw_only=True)
class Prune:
    """Disable each layer's lowest-scoring share of experts by a saliency criterion, per ratio; the loss."""

    criteria: tuple[str, ...] = ("reap", "frequency")
    """Criteria to compare: reap, ean, frequency, random."""
    ratios: tuple[float, ...] = (0.25, 0.5)
    """Shares of each layer's experts to disable, each in (0, 1)."""
    seed: int = 0
    """Seed of the `random` criterion."""
    calibration: str | None = None
    """A run of the same model recorded with expert stats to score the experts (None: `NAME.base`)."""
    layers: tuple[int, ...] | None = None
    """MoE layers to edit (None: all)."""


ProbeSettings: TypeAlias = Ablate | Force | Noise | Batch | Prune
PROBE_KINDS = ("ablate", "force", "noise", "batch")
"""The probes of the Interventions page's probe chooser (prune has a section of its own)."""


def companion_names(name: str, settings: ProbeSettings) -> list[str]:
    """Every run a probe writes, in the order it records them (the probe's own run last but for the
    random ablations). Every probe records its unedited base (`NAME.base`; `NAME.alone` for batch)
    beside the edited run, unless a noise probe is given an existing base."""
    if isinstance(settings, Ablate):
        seeds = settings.seeds if (settings.experts or settings.top) else 0
        return [f"{name}.base", name, *(f"{name}.random-{seed}" for seed in range(seeds))]
    if isinstance(settings, Batch):
        return [f"{name}.alone", name]
    if isinstance(settings, Prune):
        from routescope.probes.prune import check_criterion, check_ratio, run_name

        ratios = sorted({check_ratio(r) for r in settings.ratios})
        criteria = dict.fromkeys(check_criterion(c) for c in settings.criteria)
        return [f"{name}.base", *(run_name(name, c, r) for c in criteria for r in ratios)]
    if isinstance(settings, Noise) and settings.base:
        return [name]
    return [f"{name}.base", name]


@dataclass(frozen=True, kw_only=True)
class _Options(RecordOptions):
    """`RecordOptions` that also pass a progress callback to `record()` / `record_diffusion()`."""

    on_progress: Progress | None = None

    def for_inputs(self, inputs: ProbeInputs) -> dict[str, Any]:
        extra = {} if self.on_progress is None else {"on_progress": self.on_progress}
        return {**super().for_inputs(inputs), **extra}


@dataclass(frozen=True, kw_only=True)
class ProbeRequest:
    """Run one causal probe: its settings, inputs and how its runs are recorded."""

    name: str
    """Name of the probe's own run; its companions get suffixes (`companion_names`)."""
    settings: ProbeSettings
    """What the probe edits: `Ablate`, `Force`, `Noise`, `Batch` or `Prune`."""
    inputs: Inputs | DiffusionRequest
    """Text inputs with their labels, or a diffusion model's sampling settings."""
    probs: bool = False
    """Also store each decision's full probability vector."""
    batch_size: int | None = None
    """Texts per batch (None: 8)."""
    chunk_size: int | None = None
    """Text: split longer inputs (None: the model's context)."""
    engine: str = "nnsight"
    """Capture engine: nnsight or hooks."""
    overwrite: bool = False
    """Replace runs of the same names."""

    @property
    def kind(self) -> str:
        return type(self.settings).__name__.lower()

    def companion_names(self) -> list[str]:
        """Every run the probe writes (see `companion_names`)."""
        return companion_names(self.name, self.settings)

    @property
    def labels(self) -> dict[str, list[Any]]:
        return {} if isinstance(self.inputs, DiffusionRequest) else dict(self.inputs.labels)

    def probe_inputs(self) -> ProbeInputs:
        """What the library's probes take: the texts, or a `Sampling`."""
        if isinstance(self.inputs, DiffusionRequest):
            return self.inputs
        return list(self.inputs.texts)

    def options(self, progress: Progress | None = None) -> RecordOptions:
        return _Options(
            labels=self.labels or None,
            probs=self.probs,
            batch_size=8 if self.batch_size is None else self.batch_size,
            chunk_size=self.chunk_size,
            engine=self.engine,  # type: ignore[arg-type]
            overwrite=self.overwrite,
            on_progress=progress,
        )

    def execute(self, model: LoadedModel, *, store: Store, progress: Progress | None = None) -> list[Run]:
        """Check the edit against the model, then record every run (`companion_names()` order)."""
        from .probe_checks import check_edit

        s = self.settings
        given = self.probe_inputs()
        check_edit(model, given, self.labels, s)
        common: dict[str, Any] = {"store": store, "options": self.options(progress)}
        if isinstance(s, Ablate):
            from routescope.probes import ablation_study

            study = ablation_study(
                model,
                given,
                name=self.name,
                experts=s.experts or None,
                top=s.top,
                layers=s.layers,
                shared=s.shared,
                seeds=s.seeds,
                **common,
            )
            return [study.base, study.ablated, *study.random]
        if isinstance(s, Prune):
            from routescope.probes import probe_prune

            study = probe_prune(
                model,
                given,
                name=self.name,
                criteria=s.criteria,
                ratios=s.ratios,
                calibration=None if s.calibration is None else store.open(s.calibration),
                layers=s.layers,
                seed=s.seed,
                **common,
            )
            return [study.base, *study.pruned.values()]
        if isinstance(s, Batch):
            from routescope.probes import probe_batch

            return list(probe_batch(model, given, name=self.name, batch_size=s.batch_size, **common))
        from routescope.probes import probe_force, probe_noise, record_base

        if isinstance(s, Noise) and s.base:
            base = store.open(s.base)
        else:
            base = record_base(model, given, name=f"{self.name}.base", **common)
        if isinstance(s, Force):
            from routescope.probes import TokenSelection

            run = probe_force(
                model,
                given,
                name=self.name,
                experts=s.experts,
                layers=s.layers,
                tokens=TokenSelection(positions=s.positions),
                where=dict(s.where) or None,
                stack=s.stack,
                base=base,
                **common,
            )
        else:
            run = probe_noise(
                model,
                given,
                name=self.name,
                sigma=s.sigma,
                on=s.on,
                layers=s.layers,
                seed=s.seed,
                base=base,
                **common,
            )
        return [base, run]


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """`"0, 3,5"` → (0, 3, 5); blank → (). A one-line error for anything else."""
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        raise InputError(f"{what} {text!r}: give whole numbers separated by commas, e.g. 0, 3") from None


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """`"0.25, 0.5"` → (0.25, 0.5); blank → (). A one-line error for anything else."""
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    try:
        return tuple(float(part) for part in parts)
    except ValueError:
        raise InputError(f"{what} {text!r}: give numbers separated by commas, e.g. 0.25, 0.5") from None


__all__ = [
    "DEFAULT_STEPS",
    "PROBE_KINDS",
    "Ablate",
    "Batch",
    "DiffusionRequest",
    "Force",
    "Noise",
    "ProbeRequest",
    "ProbeSettings",
    "Progress",
    "Prune",
    "RecordRequest",
    "companion_names",
    "parse_floats",
    "parse_ints",
]


@dataclass(frozen=True, kw_only=True)
class ImportRequest:
    """Import an engine's routing trace as a run (`routescope import`, `routescope.importers`)."""

    kind: str
    """vllm, sglang, megatron, olmoe or llamacpp (docs/import.md)."""
    files: tuple[str, ...]
    """The trace files, in order (requests and ranks follow it)."""
    name: str
    """Run name (letters, digits, . _ -)."""
    tokenizer: str | None = None
    """A local tokenizer folder or `bundled:NAME`, for token texts (never a hub download)."""
    labels: str | None = None
    """A JSONL file with one object of labels per request, in order."""
    label_columns: tuple[str, ...] = ()
    """Label columns to keep from `labels` (empty: all)."""
    n_experts: int | None = None
    """Experts per layer, to check ids against (None: the largest id + 1)."""
    layers: int | None = None
    """SGLang JSONL: the model's MoE layers (to unflatten `routed_experts`)."""
    top_k: int | None = None
    """SGLang JSONL: experts per token (to unflatten `routed_experts`)."""
    overwrite: bool = False
    """Replace an existing run of the same name."""

    def companion_names(self) -> list[str]:
        """Every run the request writes."""
        return [self.name]

    def execute(self, *, store: Store) -> Run:
        from .importers import import_trace

        shape = {k: v for k, v in (("layers", self.layers), ("top_k", self.top_k)) if v is not None}
        if shape and self.kind != "sglang":
            raise InputError(f"layers and top_k unflatten SGLang JSONL only, not {self.kind} traces")
        return import_trace(
            self.kind,
            list(self.files),
            store,
            self.name,
            tokenizer=self.tokenizer,
            labels=self.labels,
            label_column=list(self.label_columns) or None,
            overwrite=self.overwrite,
            n_experts=self.n_experts,
            **shape,
        )
