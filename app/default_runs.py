"""The default runs: what `routescope demo` records in the terminal and what the dashboard's first start
records into a store, defined once so the README's "the same recording" holds.

Before, `demo` sampled two digits per class without x̂₀ and the first start one per class with x̂₀. The
first start's numbers were kept (they are what the README and docs/dashboard.md describe, and the faster
ones): `digits` is one digit of each class 0–9, 25 DDPM steps, CFG 4, seed 0, x̂₀ kept; `domains` is the
bundled LM on its 100-text, five-domain evaluation set with the `domain` label.

No Streamlit at import; models come through the `load` callable each caller passes (the dashboard its
process-wide cache), and the recording is a `RecordRequest`, the same service `routescope record` uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .requests import DiffusionRequest, Progress, RecordRequest

if TYPE_CHECKING:
    from .hooks import LoadedModel, Run, Store


@dataclass(frozen=True, kw_only=True)
class DefaultRun:
    """One default run: a bundled model and the inputs it is recorded on."""

    name: str
    model: str
    description: str
    dataset: str | None = None
    """Text models: the bundled dataset (texts and label columns)."""
    diffusion: DiffusionRequest | None = None
    """Diffusion models: what is sampled (None for text models)."""

    @property
    def is_diffusion(self) -> bool:
        return self.diffusion is not None

    def request(self) -> RecordRequest:
        """The recording as the same request `routescope record` and the Run page build (it replaces a run
        or an interrupted recording of the same name)."""
        if self.diffusion is not None:
            return RecordRequest(name=self.name, diffusion=self.diffusion, overwrite=True)
        from .datasets import load_dataset
        from .inputs import Inputs

        texts, labels = load_dataset(self.dataset or "bundled:domains")
        inputs = Inputs(texts=texts, labels={column: list(values) for column, values in labels.items()})
        return RecordRequest(name=self.name, inputs=inputs, overwrite=True)


DEFAULT_RUNS: tuple[DefaultRun, ...] = (
    DefaultRun(
        name="domains",
        model="bundled:moe-lm",
        dataset="bundled:domains",
        description="bundled:moe-lm on its five-domain evaluation set (100 texts)",
    ),
    DefaultRun(
        name="digits",
        model="bundled:dit-digits",
        diffusion=DiffusionRequest(classes=tuple(range(10)), samples_per_class=1, steps=25, save_x0=True),
        description="bundled:dit-digits, one digit of each class, 25 steps",
    ),
)
"""What `routescope demo` records and what the dashboard records into a store on first start."""


def record_default(
    default: DefaultRun,
    store: Store,
    load: Callable[[str], LoadedModel],
    progress: Progress | None = None,
    *,
    terminal: bool = False,
) -> Run:
    """Record `default` into `store`, replacing a run or an interrupted recording of the same name.

    `progress(done, total)` follows batches (text) or sampler steps (diffusion); `terminal` also draws
    the CLI's own progress bar."""
    return default.request().execute(load(default.model), store=store, progress=progress, terminal=terminal)
