"""The default runs: what `routescope demo` records in the terminal and what the dashboard's first start
records into a store, defined once so the README's "the same recording" holds.

Before, `demo` sampled two digits per class without x̂₀ and the first start one per class with x̂₀. The
first start's numbers were kept (they are what the README and docs/dashboard.md describe, and the faster
ones): `digits` is one digit of each class 0–9, 25 DDPM steps, CFG 4, seed 0, x̂₀ kept; `domains` is the
bundled LM on its 100-text, five-domain evaluation set with the `domain` label.

No Streamlit, no torch at import: the CLI and the dashboard both import this module cheaply; models come
through the `load` callable each caller passes (the dashboard its process-wide cache).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hooks import LoadedModel, Run, Store

Progress = Callable[[int, int], None]
"""`progress(done, total)`, called as a recording advances."""


@dataclass(frozen=True, kw_only=True)
class DefaultRun:
    """One default run: a bundled model and the inputs it is recorded on."""

    name: str
    model: str
    description: str
    dataset: str | None = None
    """Text models: the bundled dataset (texts and label columns)."""
    classes: tuple[int, ...] = ()
    """Diffusion models: the classes sampled (empty for text models)."""
    samples_per_class: int = 1
    steps: int = 25
    cfg_scale: float = 4.0
    seed: int = 0
    save_x0: bool = True

    @property
    def is_diffusion(self) -> bool:
        return bool(self.classes)


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
        classes=tuple(range(10)),
        samples_per_class=1,
        steps=25,
        cfg_scale=4.0,
        seed=0,
        save_x0=True,
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
    from .hooks import record, record_diffusion

    model = load(default.model)
    if default.is_diffusion:
        return record_diffusion(
            model,
            classes=list(default.classes),
            samples_per_class=default.samples_per_class,
            steps=default.steps,
            cfg_scale=default.cfg_scale,
            seed=default.seed,
            save_x0=default.save_x0,
            store=store,
            name=default.name,
            overwrite=True,
            progress=terminal,
            on_progress=progress,
        )
    from .datasets import load_dataset

    texts, labels = load_dataset(default.dataset or "bundled:domains")
    return record(
        model,
        texts,
        store=store,
        name=default.name,
        labels={column: list(values) for column, values in labels.items()},
        overwrite=True,
        progress=terminal,
        on_progress=progress,
    )
