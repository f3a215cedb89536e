"""The explicit registry of figure kinds: kind → (the analysis that makes its table, the builder that
draws it), with the options each takes and the runs it applies to. Used by `routescope figure` and the
dashboard; registering a kind is an entry here, never an import side effect.

`make_figure(kind, run, ...)` checks the options (a missing `--layer`, a label the kind does not use, a
diffusion figure asked of a text run) and returns the figure with the table it was drawn from.
`standard_set(run)` lists what `routescope figure --all` draws for a run: the kinds that apply to it, at
its first and last MoE layer for kinds that show one layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from routescope import analysis as A
from routescope.store import InputError, Run

from .diffusion import figure_spatial, figure_step_similarity, figure_steps
from .labels import figure_embedding, figure_nmi, figure_sensitivity, figure_specialization
from .load import figure_balance, figure_load
from .pairs import figure_coactivation, figure_expert_similarity, figure_transitions
from .paths import figure_paths
from .probes import figure_batch_dependence, figure_changes, figure_flip_rate
from .sequence import figure_agreement, figure_repeat, figure_top_tokens
from .theme import Width
from .uncertainty import figure_uncertain_labels, figure_uncertainty, figure_uncertainty_histogram
from .vocabulary import figure_vocabulary

Need = Literal["required", "optional", "no"]
Requirement = Literal["diffusion", "text", "probs", "layers", "steps", "other"]


@dataclass(frozen=True, kw_only=True)
class FigureRequest:
    """What one figure is asked for: the run and the options of `routescope figure`."""

    run: Run
    layer: int | None = None
    by: str | None = None
    """A label: domain, class, token_id, position, step, ... (kinds with `label` ≠ "no")."""
    expert: int | None = None
    other: Run | None = None
    """The second run of a comparison (`agreement`, and the probe kinds `changes`, `flips`,
    `batch-dependence`)."""
    width: Width = "single"


@dataclass(frozen=True, kw_only=True)
class FigureKind:
    """One figure kind: its table (an analysis call), its builder, and what it needs."""

    table: Callable[[FigureRequest], pd.DataFrame]
    build: Callable[[pd.DataFrame, FigureRequest], go.Figure]
    description: str
    layer: Need = "no"
    label: Need = "no"
    expert: Need = "no"
    requires: tuple[Requirement, ...] = ()
    standard: tuple[str, ...] = ("text", "diffusion")
    """The run kinds whose `--all` set includes this figure (empty: only on request)."""
    paper_table: bool = False
    """A small per-layer table: `--all` also writes it as CSV and LaTeX."""


def _decisions(request: FigureRequest) -> pd.DataFrame:
    """Decisions with `norm_entropy` = entropy / ln E, one layer if asked, and the `--by` label joined."""
    run = request.run
    table = run.decisions(columns=["sample", "position", "step", "router", "layer", "entropy", "margin"])
    sizes = {r.id: r.n_experts for r in run.info.routers}
    table["norm_entropy"] = table["entropy"] / np.log(table["router"].map(sizes).clip(lower=2))
    if request.layer is not None:
        table = _one_layer(table, request.layer, run)
    by = request.by
    if by and by not in table.columns:
        if by not in run.label_columns:
            choices = ", ".join(["layer", "step", "position", *run.label_columns])
            raise InputError(f"run {run.name!r} has no label {by!r} for this figure; labels: {choices}")
        table = table.merge(run.samples(columns=["sample", by]), on="sample", how="left")
    return table


def _one_layer(table: pd.DataFrame, layer: int, run: Run) -> pd.DataFrame:
    part = table[table["layer"] == int(layer)]
    if part.empty:
        layers = ", ".join(sorted({str(r.layer) for r in run.info.routers}))
        raise InputError(f"run {run.name!r} has no router at layer {layer}; layers: {layers}")
    return part


def _basis(request: FigureRequest) -> str:
    """Router logits when the run stored them, else its probabilities, else co-activation (Ochiai)."""
    options = dict(request.run.info.options)
    return "router" if options.get("logits") else "probs" if options.get("probs") else "coactivation"


def _similarity(request: FigureRequest) -> pd.DataFrame:
    """Expert similarity at the request's layer on `_basis`."""
    return A.expert_similarity(request.run, _layer(request), basis=_basis(request))


def _merge_groups(request: FigureRequest) -> pd.DataFrame:
    """`merge_groups` at the request's layer: the experts merged to half as many groups (MC-SMoE's usual
    compression), on the same basis as `expert-similarity`."""
    return A.merge_groups(request.run, _layer(request), max(1, _experts(request) // 2), basis=_basis(request))


def _layer_sizes(run: Run) -> dict[int, int]:
    """Experts per MoE layer (the largest router of the layer)."""
    sizes: dict[int, int] = {}
    for router in run.info.routers:
        layer = router.layer
        sizes[layer] = max(sizes.get(layer, 0), router.n_experts)
    return sizes


def _compared(analysis: Callable[[Run, Run], pd.DataFrame]) -> Callable[[FigureRequest], pd.DataFrame]:
    """The table of a two-run analysis (base = the run, other = `--other`); `unmet` checks `other` first."""
    return lambda r: analysis(r.run, r.other) if r.other else pd.DataFrame()


def _layer(request: FigureRequest) -> int:
    return int(request.layer) if request.layer is not None else 0


FIGURES: dict[str, FigureKind] = {
    "load": FigureKind(
        table=lambda r: A.expert_load(r.run),
        build=lambda t, r: figure_load(t, width=r.width),
        description="layer × expert heatmap of each expert's share of the layer's assignments",
    ),
    "balance": FigureKind(
        table=lambda r: A.balance(r.run),
        build=lambda t, r: figure_balance(t, width=r.width),
        description="load balance per layer: max/mean load, CV, normalised load entropy, Gini",
        paper_table=True,
    ),
    "balance-steps": FigureKind(
        table=lambda r: A.balance(r.run, by=("layer", "step")),
        build=lambda t, r: figure_balance(t, x="step", width=r.width),
        description="load balance at every sampler step, one line per layer",
        requires=("steps",),
        standard=("diffusion",),
    ),
    "specialization": FigureKind(
        table=lambda r: A.specialization(r.run, str(r.by)),
        build=lambda t, r: figure_specialization(t, layer=r.layer, width=r.width),
        description="expert × label lift (log scale, 1 = the label's base rate) at one layer",
        layer="required",
        label="required",
    ),
    "nmi": FigureKind(
        table=lambda r: A.label_nmi(r.run, str(r.by)),
        build=lambda t, r: figure_nmi(t, label=r.by, width=r.width),
        description="normalised mutual information of the label and the chosen expert per layer",
        label="required",
        paper_table=True,
    ),
    "sensitivity": FigureKind(
        table=lambda r: A.sensitivity(r.run),
        build=lambda t, r: figure_sensitivity(t, width=r.width),
        description="NMI of the expert with every available label (class, position, step, ...) per layer",
        paper_table=True,
    ),
    "uncertainty": FigureKind(
        table=lambda r: A.uncertainty(r.run),
        build=lambda t, r: figure_uncertainty(t, width=r.width),
        description="router uncertainty per layer: normalised entropy, top-1 − top-2 margin, uncertain share",
        paper_table=True,
    ),
    "uncertainty-histogram": FigureKind(
        table=_decisions,
        build=lambda t, r: figure_uncertainty_histogram(t, by=r.by or "layer", width=r.width),
        description="distribution of per-token router entropy / ln E, per layer (or per --by label)",
        layer="optional",
        label="optional",
    ),
    "coactivation": FigureKind(
        table=lambda r: A.coactivation(r.run, _layer(r)),
        build=lambda t, r: figure_coactivation(t, n_experts=_experts(r), width=r.width),
        description="expert × expert co-activation lift (log scale, 1 = chosen independently) at one layer",
        layer="required",
    ),
    "transitions": FigureKind(
        table=lambda r: A.transitions(r.run),
        build=lambda t, r: figure_transitions(t, layer=r.layer, width=r.width),
        description="P(top-1 expert at the next MoE layer | top-1 expert at this layer)",
        layer="optional",
        requires=("layers",),
    ),
    "repeat": FigureKind(
        table=lambda r: A.repeat_rate(r.run),
        build=lambda t, r: figure_repeat(t, width=r.width),
        description="consecutive tokens with the same top-1 expert, with chance levels, per layer",
        requires=("text",),
        standard=("text",),
        paper_table=True,
    ),
    "steps": FigureKind(
        table=lambda r: A.steps(r.run),
        build=lambda t, r: figure_steps(t, layer=r.layer, noise=r.run.steps(), width=r.width),
        description="expert × sampler step heatmap of load share at one layer (x ticks: timesteps)",
        layer="required",
        requires=("steps",),
        standard=("diffusion",),
    ),
    "step-similarity": FigureKind(
        table=lambda r: A.step_similarity(r.run),
        build=lambda t, r: figure_step_similarity(
            t, layer=r.layer, phases=A.denoising_phases(r.run), width=r.width
        ),
        description="step × step JS divergence of expert load at one layer, denoising phases outlined",
        layer="required",
        requires=("steps",),
        standard=("diffusion",),
    ),
    "spatial": FigureKind(
        table=lambda r: A.spatial_preference(r.run, layer=r.layer),
        build=lambda t, r: figure_spatial(t, layer=r.layer, width=r.width),
        description="each expert's share of every patch on the image grid at one layer",
        layer="required",
        requires=("diffusion",),
        standard=("diffusion",),
    ),
    "expert-similarity": FigureKind(
        table=_similarity,
        build=lambda t, r: figure_expert_similarity(t, width=r.width),
        description="expert × expert similarity at one layer: router logits (MC-SMoE) if recorded with "
        "--probs, else co-activation (Ochiai)",
        layer="required",
    ),
    "merge-groups": FigureKind(
        table=_merge_groups,
        build=lambda t, r: figure_expert_similarity(_similarity(r), groups=t, width=r.width),
        description="expert-similarity with the experts ordered and outlined by merge group (E/2 groups, "
        "MC-SMoE)",
        layer="required",
        standard=(),
    ),
    "paths": FigureKind(
        table=lambda r: A.expert_paths(r.run),
        build=lambda t, r: figure_paths(t, width=r.width),
        description="the most frequent top-1 expert paths through depth (3>7>1>0), each beside its share if "
        "every layer chose independently",
        requires=("layers",),
        standard=("text",),
        paper_table=True,
    ),
    "vocabulary": FigureKind(
        table=lambda r: A.vocabulary_specialization(r.run),
        build=lambda t, r: figure_vocabulary(t, n_experts=_layer_sizes(r.run), width=r.width),
        description="per layer, the CDF over tokens of the share of a token id routed to its top expert "
        "(1/E dashed: a uniform router)",
        requires=("text",),
        standard=("text",),
    ),
    "uncertain-labels": FigureKind(
        table=lambda r: A.uncertainty_by_label(r.run, str(r.by)),
        build=lambda t, r: figure_uncertain_labels(t, label=str(r.by), layer=r.layer, width=r.width),
        description="the label values (tokens, domains, ...) with the most uncertain decisions at one layer",
        layer="required",
        label="required",
        standard=(),
    ),
    "top-tokens": FigureKind(
        table=lambda r: A.top_tokens(r.run, _layer(r), int(r.expert or 0)),
        build=lambda t, r: figure_top_tokens(t, width=r.width),
        description="the tokens one expert takes most often",
        layer="required",
        expert="required",
        requires=("text",),
        standard=(),
    ),
    "embedding": FigureKind(
        table=lambda r: A.embeddings(r.run, _layer(r)),
        build=lambda t, r: figure_embedding(
            t, color=r.by or "top_expert", axis_names=("PC 1", "PC 2"), width=r.width
        ),
        description="2-D PCA map of the decisions' router scores at one layer, coloured by --by",
        layer="required",
        label="optional",
        standard=(),
    ),
    "agreement": FigureKind(
        table=lambda r: A.agreement(r.run, r.other) if r.other else pd.DataFrame(),
        build=lambda t, r: figure_agreement(t, width=r.width),
        description="per layer, how often two runs on the same inputs choose the same experts",
        requires=("other",),
        standard=(),
        paper_table=True,
    ),
    "changes": FigureKind(
        table=_compared(A.decision_changes),
        build=lambda t, r: figure_changes(t, width=r.width),
        description="probes: per layer, the share of decisions whose top-1 expert or expert set changed "
        "against the base run (--other: the probed run)",
        requires=("other",),
        standard=(),
    ),
    "flips": FigureKind(
        table=_compared(A.flip_rate),
        build=lambda t, r: figure_flip_rate(t, width=r.width),
        description="noise probe: top-1 flip rate and set-change rate per bucket of the base run's margin "
        "(--other: the noisy run)",
        requires=("other",),
        standard=(),
    ),
    "batch-dependence": FigureKind(
        table=_compared(A.batch_dependence),
        build=lambda t, r: figure_batch_dependence(t, width=r.width),
        description="batch probe: per router, the share of decisions that change when inputs share a batch "
        "(--other: the batched run)",
        requires=("other",),
        standard=(),
    ),
}


def _experts(request: FigureRequest) -> int:
    return max(r.n_experts for r in request.run.info.routers if r.layer == _layer(request))


def unmet(kind: FigureKind, request: FigureRequest) -> str | None:
    """Why `kind` cannot be drawn for this run (None when it can)."""
    run = request.run
    checks = {
        "diffusion": (run.info.is_diffusion, "a diffusion run"),
        "text": (not run.info.is_diffusion, "a text run"),
        "probs": (run.info.probs, "a run recorded with --probs"),
        "layers": (len({r.layer for r in run.info.routers}) > 1, "a run with two or more MoE layers"),
        "steps": (len(run.steps()) > 1, "a run with several steps (diffusion or generation)"),
        "other": (request.other is not None, "a second run: give it with --other NAME"),
    }
    for requirement in kind.requires:
        ok, needed = checks[requirement]
        if not ok:
            return f"needs {needed}"
    return None


def check_request(name: str, request: FigureRequest) -> FigureKind:
    """The kind, after checking that the request gives what it needs and nothing it ignores."""
    if name not in FIGURES:
        raise InputError(f"unknown figure kind {name!r}; kinds: {', '.join(FIGURES)}")
    kind = FIGURES[name]
    for option, need, value in (
        ("layer", kind.layer, request.layer),
        ("by", kind.label, request.by),
        ("expert", kind.expert, request.expert),
    ):
        flag = f"--{option} {'LABEL' if option == 'by' else option.upper()[0]}"
        if need == "required" and value is None:
            raise InputError(f"figure {name} needs {flag}")
        if need == "no" and value is not None:
            raise InputError(f"figure {name} takes no --{option}")
    reason = unmet(kind, request)
    if reason and "other" in kind.requires and request.other is None:
        raise InputError(f"figure {name} {reason}")
    if reason:
        raise InputError(f"figure {name} {reason}; run {request.run.name!r} is not one")
    return kind


def make_figure(
    name: str,
    run: Run,
    *,
    layer: int | None = None,
    by: str | None = None,
    expert: int | None = None,
    other: Run | None = None,
    width: Width = "single",
) -> tuple[go.Figure, pd.DataFrame]:
    """Figure `name` of `run` and the table it was drawn from; bad options are one-line `InputError`s."""
    request = FigureRequest(run=run, layer=layer, by=by, expert=expert, other=other, width=width)
    kind = check_request(name, request)
    table = kind.table(request)
    return kind.build(table, request), table


@dataclass(frozen=True)
class StandardFigure:
    """One entry of a run's standard figure set: file stem, kind and options."""

    stem: str
    kind: str
    layer: int | None
    by: str | None


def default_label(run: Run) -> str | None:
    """The label the standard set specialises on: the run's first label column (not `pair`/`branch`)."""
    labels = [c for c in run.label_columns if c not in ("pair", "branch")]
    return labels[0] if labels else None


def standard_set(run: Run, by: str | None = None) -> list[StandardFigure]:
    """The figures `routescope figure --all` draws for `run` (see the module docstring)."""
    run_kind = "diffusion" if run.info.is_diffusion else "text"
    label = by or default_label(run)
    layers = sorted({r.layer for r in run.info.routers})
    shown_layers = sorted({layers[0], layers[-1]})
    out = []
    for name, kind in FIGURES.items():
        request = FigureRequest(run=run, other=None)
        if run_kind not in kind.standard or unmet(kind, request):
            continue
        if kind.label == "required" and label is None:
            continue
        kind_label = label if kind.label == "required" else None
        suffix = f"-{kind_label}" if kind_label else ""
        if kind.layer == "required":
            out += [StandardFigure(f"{name}{suffix}-layer{ly}", name, ly, kind_label) for ly in shown_layers]
        elif name == "transitions":
            out.append(StandardFigure(f"{name}-layer{layers[0]}", name, layers[0], None))
        else:
            out.append(StandardFigure(f"{name}{suffix}", name, None, kind_label))
    return out
