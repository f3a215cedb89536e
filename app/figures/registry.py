"""The explicit registry of figure kinds: kind → (the analysis kind that makes its table, the builder that
draws it), with the options each takes and the runs it applies to. Used by `routescope figure` and the
dashboard; registering a kind is an entry here, never an import side effect (what a kind is: `kinds.py`).

`make_figure(kind, run, ...)` checks the options (a missing `--layer`, a label the kind does not use, a
diffusion figure asked of a text run), computes the table through `routescope.analysis.compute` and
returns the figure with that table. `draw(kind, table, request)` draws a table the caller already has (the
dashboard's cached one). `standard_set(run)` lists what `routescope figure --all` draws for a run: the
kinds that apply to it, at its first and last MoE layer for kinds that show one layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from routescope.analysis import compute
from routescope.store import InputError, Run

from .consistency import CONSISTENCY_FIGURES
from .denoising import figure_denoising_paths
from .diffusion import figure_spatial, figure_step_similarity, figure_steps
from .kinds import (
    FigureKind,
    FigureRequest,
    Need,
    Requirement,
    basis,
    check_options,
    experts_at,
    is_diffusion,
    layer_of,
    layer_sizes,
    table_call,
    unmet,
)
from .labels import figure_embedding, figure_nmi, figure_sensitivity, figure_specialization
from .load import figure_balance, figure_load
from .modality import figure_modality_specialization
from .pairs import figure_coactivation, figure_expert_similarity, figure_transitions
from .paths import figure_paths
from .placement import PLACEMENT_FIGURES
from .probes import figure_batch_dependence, figure_changes, figure_flip_rate
from .pruning import figure_prune_curve
from .reroute import REROUTE_FIGURES
from .saturation import figure_saturation
from .sequence import figure_agreement, figure_repeat, figure_top_tokens
from .statistics import CRITERIA, STATISTICS_FIGURES
from .theme import Width
from .uncertainty import figure_uncertain_labels, figure_uncertainty, figure_uncertainty_histogram
from .vocabulary import figure_vocabulary

__all__ = [
    "FIGURES",
    "FigureKind",
    "FigureRequest",
    "Need",
    "Requirement",
    "StandardFigure",
    "check_request",
    "default_label",
    "draw",
    "figure_table",
    "is_diffusion",
    "make_figure",
    "standard_set",
    "unmet",
]


def _merge_groups_figure(groups: pd.DataFrame, *, similarity: pd.DataFrame, width: Width) -> go.Figure:
    """`expert-similarity` with the experts ordered and outlined by their merge group."""
    return figure_expert_similarity(similarity, groups=groups, width=width)


def _phases(request: FigureRequest) -> pd.DataFrame:
    """The denoising phases outlined on step-similarity: the caller's cached table, else computed."""
    return request.draw["phases"] if "phases" in request.draw else request.table("phases")


FIGURES: dict[str, FigureKind] = {
    "load": FigureKind(
        analysis="load",
        build=figure_load,
        description="layer × expert heatmap of each expert's share of the layer's assignments",
    ),
    "balance": FigureKind(
        analysis="balance",
        build=figure_balance,
        description="load balance per layer: max/mean load, CV, normalised load entropy, Gini",
        paper_table=True,
    ),
    "balance-steps": FigureKind(
        analysis="balance",
        params=lambda r: {"by": ("layer", "step")},
        build=figure_balance,
        options=lambda r: {"x": "step"},
        description="load balance at every sampler step, one line per layer",
        requires=("steps",),
        standard=("diffusion",),
    ),
    "specialization": FigureKind(
        analysis="specialization",
        build=figure_specialization,
        options=lambda r: {"layer": r.layer},
        description="expert × label lift (log scale, 1 = the label's base rate) at one layer",
        layer="required",
    ),
    "nmi": FigureKind(
        analysis="nmi",
        build=figure_nmi,
        options=lambda r: {"label": r.by},
        description="normalised mutual information of the label and the chosen expert per layer",
        paper_table=True,
    ),
    "sensitivity": FigureKind(
        analysis="sensitivity",
        build=figure_sensitivity,
        description="NMI of the expert with every available label (class, position, step, ...) per layer",
        paper_table=True,
    ),
    "uncertainty": FigureKind(
        analysis="uncertainty",
        build=figure_uncertainty,
        description="router uncertainty per layer: normalised entropy, top-1 − top-2 margin, uncertain share",
        paper_table=True,
    ),
    "uncertainty-histogram": FigureKind(
        analysis="decisions",
        params=lambda r: {"by": r.by},
        build=figure_uncertainty_histogram,
        options=lambda r: {"by": r.by or "layer"},
        description="distribution of per-token router entropy / ln E, per layer (or per --by label)",
        layer="optional",
        label="optional",
    ),
    "coactivation": FigureKind(
        analysis="coactivation",
        build=figure_coactivation,
        options=lambda r: {"n_experts": experts_at(r)},
        description="expert × expert co-activation lift (log scale, 1 = chosen independently) at one layer",
    ),
    "transitions": FigureKind(
        analysis="transitions",
        build=figure_transitions,
        options=lambda r: {"layer": r.layer},
        description="P(top-1 expert at the next MoE layer | top-1 expert at this layer)",
        layer="optional",
        requires=("layers",),
    ),
    "repeat": FigureKind(
        analysis="repeat",
        build=figure_repeat,
        description="consecutive tokens with the same top-1 expert, with chance levels, per layer",
        requires=("text",),
        standard=("text",),
        paper_table=True,
    ),
    "steps": FigureKind(
        analysis="steps",
        build=figure_steps,
        options=lambda r: {"layer": r.layer, "noise": r.run.steps()},
        description="expert × sampler step heatmap of load share at one layer (x ticks: timesteps)",
        layer="required",
        requires=("steps",),
        standard=("diffusion",),
    ),
    "denoising-paths": FigureKind(
        analysis="denoising-paths",
        build=figure_denoising_paths,
        description="Switch-DiT's denoising paths: share of decisions using each expert, per block and step",
        requires=("steps",),
        standard=("diffusion",),
    ),
    "step-similarity": FigureKind(
        analysis="step-similarity",
        build=figure_step_similarity,
        options=lambda r: {"layer": r.layer, "phases": _phases(r)},
        description="step × step JS divergence of expert load at one layer, denoising phases outlined",
        layer="required",
        requires=("steps",),
        standard=("diffusion",),
    ),
    "spatial": FigureKind(
        analysis="spatial",
        build=figure_spatial,
        options=lambda r: {"layer": r.layer},
        description="each expert's share of every patch on the image grid at one layer",
        layer="required",
        requires=("diffusion",),
        standard=("diffusion",),
    ),
    "expert-similarity": FigureKind(
        analysis="similarity",
        params=lambda r: {"basis": basis(r)},
        build=figure_expert_similarity,
        description="expert × expert similarity at one layer: router logits (MC-SMoE) if recorded with "
        "--probs, else co-activation (Ochiai)",
    ),
    "merge-groups": FigureKind(
        analysis="merge-groups",
        params=lambda r: {"n_groups": max(1, experts_at(r) // 2), "basis": basis(r)},
        build=_merge_groups_figure,
        options=lambda r: {"similarity": r.table("similarity", layer=layer_of(r), basis=basis(r))},
        description="expert-similarity with the experts ordered and outlined by merge group (E/2 groups, "
        "MC-SMoE)",
        standard=(),
    ),
    "paths": FigureKind(
        analysis="paths",
        build=figure_paths,
        description="the most frequent top-1 expert paths through depth (3>7>1>0), each beside its share if "
        "every layer chose independently",
        requires=("layers",),
        standard=("text",),
        paper_table=True,
    ),
    "vocabulary": FigureKind(
        analysis="vocabulary",
        build=figure_vocabulary,
        options=lambda r: {"n_experts": layer_sizes(r.run)},
        description="per layer, the CDF over tokens of the share of a token id routed to its top expert "
        "(1/E dashed: a uniform router)",
        requires=("text",),
        standard=("text",),
    ),
    "vocabulary-predicted": FigureKind(
        analysis="vocabulary",
        params=lambda r: {"target": "predicted"},
        build=figure_vocabulary,
        options=lambda r: {"n_experts": layer_sizes(r.run), "target": "predicted"},
        description="vocabulary keyed on the model's predicted next token (runs recorded with token loss): "
        "per layer, the CDF of the share of a predicted token routed to its top expert",
        requires=("text",),
        standard=("text",),
    ),
    "modality": FigureKind(
        analysis="modality",
        build=figure_specialization,
        options=lambda r: {"layer": r.layer, "sort": False},
        description="vision-language runs: expert × modality (text / image / video) lift at one layer",
        layer="required",
    ),
    "modality-specialization": FigureKind(
        analysis="modality-specialization",
        build=figure_modality_specialization,
        description="vision-language runs: per layer, TVD of the visual and text top-1 expert distributions "
        "beside its within-input permutation null (filled: p < 0.05)",
        paper_table=True,
    ),
    "uncertain-labels": FigureKind(
        analysis="uncertain-labels",
        build=figure_uncertain_labels,
        options=lambda r: {"label": str(r.by), "layer": r.layer},
        description="the label values (tokens, domains, ...) with the most uncertain decisions at one layer",
        layer="required",
        standard=(),
    ),
    "top-tokens": FigureKind(
        analysis="top-tokens",
        params=lambda r: {"expert": int(r.expert or 0)},
        build=figure_top_tokens,
        description="the tokens one expert takes most often",
        expert="required",
        requires=("text",),
        standard=(),
    ),
    "embedding": FigureKind(
        analysis="embedding",
        build=figure_embedding,
        options=lambda r: {"color": r.by or "top_expert", "axis_names": ("PC 1", "PC 2")},
        description="2-D PCA map of the decisions' router scores at one layer, coloured by --by",
        label="optional",
        standard=(),
    ),
    "agreement": FigureKind(
        analysis="agreement",
        build=figure_agreement,
        description="per layer, how often two runs on the same inputs choose the same experts",
        paper_table=True,
    ),
    "saturation": FigureKind(
        analysis="saturation",
        build=figure_saturation,
        description="OLMoE router saturation: top-k overlap of each checkpoint with the reference run "
        "(--run), checkpoints in --compare order, one line per layer",
        paper_table=True,
    ),
    "changes": FigureKind(
        analysis="changes",
        build=figure_changes,
        description="probes: per layer, the share of decisions whose top-1 expert or expert set changed "
        "against the base run (--compare: the probed run)",
    ),
    "flips": FigureKind(
        analysis="flips",
        build=figure_flip_rate,
        description="noise probe: top-1 flip rate and set-change rate per bucket of the base run's margin "
        "(--compare: the noisy run)",
    ),
    "batch-dependence": FigureKind(
        analysis="batch-dependence",
        build=figure_batch_dependence,
        description="batch probe: per router, the share of decisions that change when inputs share a batch "
        "(--compare: the batched run)",
    ),
    "prune-curve": FigureKind(
        analysis="prune-curve",
        build=figure_prune_curve,
        description="prune probe: loss against the share of experts pruned, one line per criterion "
        "(of the study's base run)",
        standard=(),
    ),
    **PLACEMENT_FIGURES,
    **STATISTICS_FIGURES,
    **CONSISTENCY_FIGURES,
    **REROUTE_FIGURES,
}


def check_request(name: str, request: FigureRequest) -> FigureKind:
    """The kind, after checking that the request gives what it needs and nothing it ignores."""
    if name not in FIGURES:
        raise InputError(f"unknown figure kind {name!r}; kinds: {', '.join(FIGURES)}")
    kind = FIGURES[name]
    check_options(name, kind, request)
    return kind


def figure_table(name: str, request: FigureRequest) -> tuple[str, dict[str, Any]]:
    """The analysis kind and `compute` options of figure `name`'s table, after checking the request: the
    dashboard passes them to its cache, `make_figure` to `compute`."""
    return table_call(check_request(name, request), request)


def draw(name: str, table: pd.DataFrame, request: FigureRequest) -> go.Figure:
    """Figure `name` drawn from `table` (the one `figure_table` names, or a caller's richer variant)."""
    return check_request(name, request).draw(table, request)


def make_figure(
    name: str,
    run: Run,
    *,
    layer: int | None = None,
    by: str | None = None,
    expert: int | None = None,
    other: Run | None = None,
    series: Sequence[Run] = (),
    width: Width = "single",
    criterion: str | None = None,
) -> tuple[go.Figure, pd.DataFrame]:
    """Figure `name` of `run` and the table it was drawn from (`series`: the runs a series figure compares
    with `run`, in order; `criterion`: which saliency criterion `saliency` shows, REAP by default); bad
    options are one-line `InputError`s."""
    if criterion is not None:
        if name != "saliency":
            raise InputError(f"figure {name} takes no criterion (only saliency does)", field="criterion")
        if criterion not in CRITERIA:
            choices = ", ".join(CRITERIA)
            raise InputError(f"unknown saliency criterion {criterion!r}; choose {choices}", field="criterion")
    request = FigureRequest(
        run=run,
        layer=layer,
        by=by,
        expert=expert,
        other=other,
        series=tuple(series),
        width=width,
        draw={"criterion": criterion} if criterion else {},
    )
    kind = check_request(name, request)
    analysis, options = table_call(kind, request)
    table = compute(analysis, run, **options)
    return kind.draw(table, request), table


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
