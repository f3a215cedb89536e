"""What a figure kind is: the analysis kind that makes its table, the builder that draws it, and what it
needs — and the one place a figure request is checked and turned into an analysis call.

The chain is analysis kind → figure kind → dashboard view. A `FigureKind` names its analysis by its
registered kind (`routescope.analysis.KINDS`), never calls the function itself: `table_call` gives the
kind and options, `analysis.compute` checks and coerces them as it does for `routescope report`, and the
dashboard asks the same `table_call` so that its cached table is the one the CLI's figure is drawn from.
The second run of a comparison is `--compare` in `report` and `figure` alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import plotly.graph_objects as go

from routescope.analysis import KINDS, compute
from routescope.analysis.registry import capability_gap
from routescope.store import InputError, Run

from .theme import Width

Need = Literal["required", "optional", "no"]
Requirement = Literal["diffusion", "text", "probs", "layers", "steps", "other", "series"]


@dataclass(frozen=True, kw_only=True)
class FigureRequest:
    """What one figure is asked for: the run and the options of `routescope figure`."""

    run: Run
    layer: int | None = None
    by: str | None = None
    """A label: domain, class, token_id, position, step, ... (kinds with `label` ≠ "no")."""
    expert: int | None = None
    other: Run | None = None
    """The second run of a comparison (`--compare`: `agreement`, and the probe kinds `changes`, `flips`,
    `batch-dependence`)."""
    series: tuple[Run, ...] = ()
    """The runs a series figure compares with `run`, in order (`--compare A B C`: `saturation`)."""
    width: Width = "single"
    draw: Mapping[str, Any] = field(default_factory=dict)
    """Extra options for the builder only (the dashboard's chosen balance metrics, UMAP axis names)."""

    def table(self, kind: str, **params: Any) -> pd.DataFrame:
        """Another registered analysis of this run, for a builder that overlays one (phases, similarity)."""
        return compute(kind, self.run, **params)


def _no_params(request: FigureRequest) -> dict[str, Any]:
    return {}


@dataclass(frozen=True, kw_only=True)
class FigureKind:
    """One figure kind: the analysis kind of its table, its builder, and what it needs."""

    analysis: str
    """A kind of `routescope.analysis.KINDS`; its label, layer and second run come from the request."""
    build: Callable[..., go.Figure]
    """The builder, `figure_*(table, width=..., **options)`."""
    description: str
    params: Callable[[FigureRequest], dict[str, Any]] = _no_params
    """Further analysis options this figure fixes (a basis, a grouping), from the request."""
    options: Callable[[FigureRequest], dict[str, Any]] = _no_params
    """The builder's options from the request (the layer shown, the label, the noise schedule)."""
    layer: Need | None = None
    """None: what the analysis says (`required` if it needs a layer, else `no`)."""
    label: Need | None = None
    """None: what the analysis says (`required` if it takes a label, else `no`)."""
    expert: Need = "no"
    requires: tuple[Requirement, ...] = ()
    """What the run must be; a two-run analysis adds `other` itself."""
    standard: tuple[str, ...] | None = None
    """The run kinds whose `--all` set includes this figure (empty: only on request; None: text and
    diffusion runs, or none for a two-run analysis)."""
    paper_table: bool = False
    """A small per-layer table: `--all` also writes it as CSV and LaTeX."""

    def __post_init__(self) -> None:
        assert self.analysis in KINDS, f"figure of unknown analysis {self.analysis!r}"
        analysis = KINDS[self.analysis]
        derived = {
            "layer": "required" if analysis.layer == "required" else "no",
            "label": "required" if analysis.label else "no",
            "standard": () if analysis.other or analysis.series else ("text", "diffusion"),
        }
        for name, value in derived.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if analysis.other and "other" not in self.requires:
            object.__setattr__(self, "requires", (*self.requires, "other"))
        if analysis.series and "series" not in self.requires:
            object.__setattr__(self, "requires", (*self.requires, "series"))

    def draw(self, table: pd.DataFrame, request: FigureRequest) -> go.Figure:
        """The figure of `table`: the builder with the request's width, options and extra `draw` ones."""
        return self.build(table, width=request.width, **{**self.options(request), **request.draw})


def table_call(kind: FigureKind, request: FigureRequest) -> tuple[str, dict[str, Any]]:
    """The analysis kind and `compute` options of `kind`'s table: the label if the analysis takes one, the
    layer if it takes one (analyses that filter by layer get the whole table; the builder picks the
    layer), the second run, and the figure's own `params`."""
    analysis = KINDS[kind.analysis]
    options = dict(kind.params(request))
    if analysis.label:
        options["label"] = request.by
    if analysis.layer != "filter" and request.layer is not None:
        options["layer"] = int(request.layer)
    if analysis.other:
        options["other"] = request.other
    if analysis.series:
        options["series"] = request.series
    return kind.analysis, options


def is_diffusion(run: Run) -> bool:
    return run.info.is_diffusion


def unmet(kind: FigureKind, request: FigureRequest) -> str | None:
    """Why `kind` cannot be drawn for this run (None when it can)."""
    run = request.run
    checks = {
        "diffusion": (is_diffusion(run), "a diffusion run"),
        "text": (not is_diffusion(run), "a text run"),
        "probs": (run.info.probs, "a run recorded with router probabilities"),
        "layers": (len({r.layer for r in run.info.routers}) > 1, "a run with two or more MoE layers"),
        "steps": (len(run.steps()) > 1, "a run with several steps (diffusion or generation)"),
        "other": (request.other is not None, "a second run to compare with"),
        "series": (bool(request.series), "a series of runs to compare with, in order"),
    }
    for requirement in kind.requires:
        ok, needed = checks[requirement]
        if not ok:
            return f"needs {needed}"
    return capability_of(kind, request)


def capability_of(kind: FigureKind, request: FigureRequest) -> str | None:
    """The registry's refusal when the run lacks what the figure's analysis needs (an import's ids only)."""
    label = request.by if KINDS[kind.analysis].label else None
    params = dict(kind.params(request))
    return capability_gap(kind.analysis, request.run, request.other, label, params, request.series)


OPTION_NOUNS = {"layer": "a layer", "by": "a label", "expert": "an expert"}


def check_options(name: str, kind: FigureKind, request: FigureRequest) -> None:
    """Check that the request gives what `kind` needs and nothing it ignores (one-line `InputError`s)."""
    for option, need, value in (
        ("layer", kind.layer, request.layer),
        ("by", kind.label, request.by),
        ("expert", kind.expert, request.expert),
    ):
        noun = OPTION_NOUNS[option]
        if need == "required" and value is None:
            raise InputError(f"figure {name} needs {noun}", field=option)
        if need == "no" and value is not None:
            raise InputError(f"figure {name} takes no {option}")
    gap = capability_of(kind, request)
    if gap:
        raise InputError(gap)
    reason = unmet(kind, request)
    if reason and "other" in kind.requires and request.other is None:
        raise InputError(f"figure {name} {reason}", field="compare")
    if reason and "series" in kind.requires and not request.series:
        raise InputError(f"figure {name} {reason}", field="compare")
    if reason:
        raise InputError(f"figure {name} {reason}; run {request.run.name!r} is not one")


def layer_of(request: FigureRequest) -> int:
    return int(request.layer) if request.layer is not None else 0


def experts_at(request: FigureRequest) -> int:
    """Experts of the request's layer (its largest router)."""
    layer = layer_of(request)
    return max(r.n_experts for r in request.run.info.routers if r.layer == layer)


def layer_sizes(run: Run) -> dict[int, int]:
    """Experts per MoE layer (the largest router of the layer)."""
    sizes: dict[int, int] = {}
    for router in run.info.routers:
        sizes[router.layer] = max(sizes.get(router.layer, 0), router.n_experts)
    return sizes


def basis(request: FigureRequest) -> str:
    """Router logits when the run stored them, else its probabilities, else mean expert outputs, else
    co-activation (Ochiai)."""
    info = request.run.info
    if info.logits or info.probs:
        return "router" if info.logits else "probs"
    return "outputs" if info.expert_means else "coactivation"
