"""The explicit registry of analyses: report kind → function, for the CLI, the figures and the dashboard.

`ANALYSES` are the report kinds (`routescope report --kind`); `VIEWS` are the tables figures and the
dashboard draw that no report prints (one sample's tokens, histograms, the most uncertain decisions, a
run's own small tables). Both are `Analysis` entries and go through the same `compute`, so a figure kind
(`routescope.figures.registry`) and a dashboard view (`cache.table`) name an analysis kind and never call
its function themselves. Each entry says what the function needs — a label (`--by`), a layer
(`--layer`), a second run (`--compare`) — and which columns identify a row (`keys`, used to put two runs
side by side), so callers never guess. `compute` is the one way to call an analysis by kind, and the one
place its options are checked; `coerce_params` turns `key=value` strings from the command line into the
function's own argument types. Registering is a line here (or a group of kinds declared beside its
functions and merged here by name, as `placement_kinds.PLACEMENT_ANALYSES`), never an import side effect;
what an entry is lives in `kinds.py`.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

import pandas as pd

from routescope.store import InputError, Run
from routescope.store.capabilities import missing_message, require_recorded

from .ablation import ablation_loss
from .balance import balance, expert_load
from .batching import batch_dependence
from .coactivation import coactivation
from .comparison import agreement
from .consistency import boundary_flips, rank_consistency, score_needs
from .decisions import decision_entropy, decision_histogram, most_uncertain
from .diffusion import denoising_paths, steps
from .embeddings import embeddings
from .kinds import LABEL, NOTHING, SCORES, TOKEN_IDS, Analysis
from .modality import modality_load, modality_specialization
from .output_kl import output_kl, output_kl_by_sample
from .paths import expert_paths
from .phases import denoising_phases, sensitivity, step_similarity
from .placement_kinds import PLACEMENT_ANALYSES
from .pruning import prune_curve_of
from .replay import replay_by_sample, routing_replay
from .reroute_kinds import REROUTE_ANALYSES
from .sequence import repeat_rate, transitions
from .series import saturation_series
from .similarity import expert_similarity, merge_groups, similarity_needs
from .spatial import spatial_preference
from .specialization import label_nmi, specialization
from .stability import decision_changes, flip_correlation, flip_rate
from .statistics_kinds import STATISTICS_ANALYSES
from .summary import router_summary
from .tokens import expert_tokens, top_tokens
from .uncertain_labels import uncertainty_by_label
from .uncertainty import uncertainty
from .views import samples_table, steps_table, token_routing, token_weights
from .vocabulary import vocabulary_specialization

MODALITY = ("ids", "modality")
"""Kinds over `tokens.modality`: runs recorded with images."""


def _embedding_needs(params: dict[str, Any]) -> tuple[str, ...]:
    """Token embeddings use probability vectors, or gate weights where a run has no probs."""
    return ("ids",) if params.get("of") == "experts" else ("ids", "gate_weights", "positions")


def _vocabulary_needs(params: dict[str, Any]) -> tuple[str, ...]:
    """Token ids; keyed on the predicted next token, also the token loss that recorded it."""
    return (*TOKEN_IDS, "token_loss") if params.get("target") == "predicted" else TOKEN_IDS


ANALYSES: dict[str, Analysis] = {
    "summary": Analysis(
        router_summary, "per router: decisions, drops, mean entropy and margin", ("router",), needs=NOTHING
    ),
    "load": Analysis(
        expert_load, "assignments and load share per expert and layer", ("layer", "expert"), needs=NOTHING
    ),
    "balance": Analysis(
        balance,
        "max/mean, CV, load entropy, Gini, dead experts, aux loss, overflow per layer",
        ("layer",),
        needs=NOTHING,
    ),
    "specialization": Analysis(
        specialization, "expert × label counts, share and lift per layer", ("layer", "expert", LABEL), True
    ),
    "nmi": Analysis(
        label_nmi, "normalised mutual information of label and expert, χ² test", ("layer",), True
    ),
    "uncertainty": Analysis(
        uncertainty, "mean router entropy, margin and uncertain share", ("layer",), needs=SCORES
    ),
    "uncertain-labels": Analysis(
        uncertainty_by_label,
        "router uncertainty per label value, most uncertain first",
        ("layer", LABEL),
        True,
        needs=SCORES,
    ),
    "vocabulary": Analysis(
        vocabulary_specialization,
        "per token id: top-1 expert and its share",
        ("layer", "token_id"),
        needs=_vocabulary_needs,
    ),
    "coactivation": Analysis(
        coactivation,
        "pairs of experts chosen together, with lift",
        ("expert_a", "expert_b"),
        layer="required",
    ),
    "transitions": Analysis(
        transitions, "top-1 expert at one layer → the next layer's", ("layer", "expert", "next_expert")
    ),
    "paths": Analysis(expert_paths, "most frequent top-1 expert paths through depth", ("stack", "path")),
    "repeat": Analysis(
        repeat_rate,
        "consecutive tokens with the same top-1 expert, with baselines",
        ("layer",),
        needs=("ids", "positions"),
    ),
    "similarity": Analysis(
        expert_similarity,
        "expert × expert similarity: router scores (probs), mean outputs (expert means) or co-activation",
        ("expert_a", "expert_b"),
        layer="required",
        needs=similarity_needs,
    ),
    "merge-groups": Analysis(
        merge_groups,
        "experts clustered by similarity, one to keep per group",
        ("expert",),
        layer="required",
        needs=similarity_needs,
    ),
    "top-tokens": Analysis(
        top_tokens,
        "an expert's most frequent tokens with example contexts",
        ("token_id",),
        layer="required",
        needs=TOKEN_IDS,
    ),
    "steps": Analysis(
        steps, "diffusion: expert load per layer at every sampler step", ("layer", "step", "expert")
    ),
    "denoising-paths": Analysis(
        denoising_paths,
        "diffusion: share of decisions using each expert per block and step (Switch-DiT's denoising path)",
        ("layer", "step", "expert"),
        needs=("ids", "gate_weights", "steps"),
    ),
    "step-similarity": Analysis(
        step_similarity,
        "Jensen–Shannon divergence of expert load between steps",
        ("layer", "step_a", "step_b"),
    ),
    "phases": Analysis(
        denoising_phases, "steps clustered into denoising phases by routing", ("layer", "step")
    ),
    "sensitivity": Analysis(
        sensitivity, "NMI of the expert with class, position, step, ...", ("layer", "label")
    ),
    "spatial": Analysis(
        spatial_preference,
        "diffusion: expert usage per patch row/col",
        ("layer", "expert", "row", "col"),
        layer="optional",
        needs=("ids", "positions"),
    ),
    "modality": Analysis(
        modality_load,
        "vision-language runs: expert load share by token modality (text / image / video)",
        ("layer", "modality", "expert"),
        layer="optional",
        needs=MODALITY,
    ),
    "modality-specialization": Analysis(
        modality_specialization,
        "vision-language runs: TVD of visual vs text top-1 experts, within-input permutation p",
        ("layer",),
        needs=MODALITY,
    ),
    "embedding": Analysis(
        embeddings,
        "2-D PCA/UMAP of tokens by router scores or experts by usage",
        (),
        layer="required",
        needs=_embedding_needs,
    ),
    "agreement": Analysis(
        agreement,
        "top-1 agreement and top-k overlap between two runs on the same inputs",
        ("layer",),
        other=True,
    ),
    "saturation": Analysis(
        saturation_series,
        "OLMoE router saturation: top-k overlap of each run of a checkpoint series with the run, per layer",
        ("checkpoint", "layer"),
        series=True,
    ),
    "output-kl": Analysis(
        output_kl,
        "mean per-token KL(run ‖ second run) of the next-token distributions, bootstrap CI over sequences",
        (),
        other=True,
        needs=("output_logprobs",),
    ),
    "output-kl-samples": Analysis(
        output_kl_by_sample,
        "per sequence: mean and largest per-token KL(run ‖ second run) of the next-token distributions",
        ("sample",),
        other=True,
        needs=("output_logprobs",),
    ),
    "replay": Analysis(
        routing_replay,
        "routing replay: share of tokens whose expert set differs in any layer between two runs",
        (),
        other=True,
    ),
    "replay-samples": Analysis(
        replay_by_sample,
        "routing replay per sample: share of its tokens whose expert set differs in any layer",
        ("sample",),
        other=True,
    ),
    "rank-consistency": Analysis(
        rank_consistency,
        "Kendall τ of router scores over experts and identical top-k sets between two runs, per layer",
        ("layer",),
        other=True,
        needs=score_needs,
    ),
    "boundary-flips": Analysis(
        boundary_flips,
        "share of expert sets that differ in a second run, by quantile bin of the top-k boundary margin",
        ("bin",),
        other=True,
        needs=("ids", "probs"),
    ),
    "changes": Analysis(
        decision_changes,
        "probes: share of decisions whose experts changed against a base run",
        ("layer",),
        other=True,
    ),
    "flips": Analysis(
        flip_rate, "noise probe: top-1 flip rate by margin bucket", ("margin_low",), other=True, needs=SCORES
    ),
    "flip-correlation": Analysis(
        flip_correlation,
        "noise probe: correlation of flips with entropy and margin",
        ("layer",),
        other=True,
        needs=SCORES,
    ),
    "batch-dependence": Analysis(
        batch_dependence,
        "batch probe: decisions that change inside a batch, per router",
        ("router",),
        other=True,
    ),
    "ablation-loss": Analysis(
        ablation_loss, "ablation probe: loss of the ablated run against its base, per label", (), other=True
    ),
    "prune-curve": Analysis(
        prune_curve_of,
        "prune probe: loss (nats/token) per criterion and share of experts disabled, from the base run",
        ("criterion", "ratio"),
        needs=NOTHING,
    ),
    **PLACEMENT_ANALYSES,
    **STATISTICS_ANALYSES,
    **REROUTE_ANALYSES,
}


DECISION = ("sample", "position", "step", "router", "call")
"""The columns that identify one routing decision."""
TOP_DECISION = ("sample", "position", "step", "call")
"""`most_uncertain` rows: decisions of one layer (its router is not a column)."""

VIEWS: dict[str, Analysis] = {
    "table.samples": Analysis(
        samples_table, "the run's samples with their labels", ("sample",), needs=NOTHING
    ),
    "table.steps": Analysis(steps_table, "the run's sampler or generation steps", ("step",), needs=NOTHING),
    "decisions": Analysis(
        decision_entropy, "decisions with entropy / ln E", DECISION, layer="optional", needs=SCORES
    ),
    "decision_histogram": Analysis(
        decision_histogram, "decisions binned per layer", ("layer", "bin"), needs=SCORES
    ),
    "most_uncertain": Analysis(
        most_uncertain, "top entropy / ln E", TOP_DECISION, layer="required", needs=SCORES
    ),
    "expert_tokens": Analysis(
        expert_tokens, "top-tokens with lift", ("token_id",), layer="required", needs=TOKEN_IDS
    ),
    "token_routing": Analysis(
        token_routing, "one sample's top-1 experts", ("position",), needs=("ids", "positions")
    ),
    "token_weights": Analysis(
        token_weights, "one token's weights", ("router", "call", "expert"), needs=("ids", "gate_weights")
    ),
}
"""Registered views: tables that figures and the dashboard compute by kind, not offered as reports."""

KINDS: dict[str, Analysis] = {**ANALYSES, **VIEWS}
"""Every kind `compute` knows: the report kinds, then the views."""
assert len(KINDS) == len(ANALYSES) + len(VIEWS), "a view is named like an analysis"


def keys_of(kind: str, label: str | None = None) -> list[str]:
    """The columns that identify a row of `kind`'s table (the label placeholder filled in)."""
    return [label or "label" if key == LABEL else key for key in KINDS[kind].keys]


def compute(
    kind: str,
    run: Run,
    *,
    label: str | None = None,
    layer: int | None = None,
    other: Run | None = None,
    series: Sequence[Run] = (),
    **params: Any,
) -> pd.DataFrame:
    """Run analysis `kind` on `run`, checking that what it needs was given; a mistake is a one-line
    `InputError` naming the missing or unused option. `series` is the runs a series kind (`saturation`)
    compares with `run`, in order."""
    if kind not in KINDS:
        raise InputError(f"unknown analysis {kind!r}; kinds: {', '.join(sorted(ANALYSES))}")
    analysis = KINDS[kind]
    check_capabilities(kind, run, other, label, params, series)
    args: list[Any] = [run]
    if analysis.series:
        if not series:
            raise InputError(f"{kind} compares a series of runs: give them in order", field="compare")
        args.append(tuple(series))
    elif series:
        raise InputError(f"{kind} takes no series of runs")
    if analysis.other:
        if other is None:
            raise InputError(f"{kind} compares two runs: give the second one", field="compare")
        args.append(other)
    if analysis.label:
        if not label:
            raise InputError(
                f"{kind} needs a label, e.g. {', '.join(run.label_columns) or 'token_id'}", field="by"
            )
        args.append(label)
    elif label:
        raise InputError(f"{kind} takes no label")
    if analysis.layer == "required" and layer is None:
        raise InputError(f"{kind} needs a layer", field="layer")
    if analysis.layer in ("required", "optional") and layer is not None:
        params["layer"] = layer
    missing = [
        name
        for name, parameter in parameters(kind).items()
        if parameter.default is inspect.Parameter.empty and name not in params
    ]
    if missing:
        raise InputError(f"{kind} needs the parameter {', '.join(missing)}", field="param")
    table = analysis.function(*args, **params)
    if analysis.layer == "filter" and layer is not None:
        if "layer" not in table.columns:
            raise InputError(f"{kind} has no layer column to filter by")
        table = table[table["layer"] == layer].reset_index(drop=True)
    return table


TOKEN_LABEL_NEEDS = {"token_id": "token_ids", "token": "token_ids", "position": "positions"}
"""Labels that come from what a run may lack: token ids (and texts) and positions."""


def capability_gap(
    kind: str,
    run: Run,
    other: Run | None,
    label: str | None,
    params: dict[str, Any],
    series: Sequence[Run] = (),
) -> str | None:
    """The one-line refusal when `run` (or `other`) lacks a capability `kind` (or its label) needs, else
    None — the one place the check lives, so reports, figures and dashboard pages all refuse alike."""
    needs = KINDS[kind].needs
    wanted = list(needs(params) if callable(needs) else needs)
    if label in TOKEN_LABEL_NEEDS:
        wanted.append(TOKEN_LABEL_NEEDS[label])
    for subject in (run, other, *series):
        if subject is not None:
            message = missing_message(kind, subject.info.engine, subject.info.caps, wanted)
            if message:
                return message
    return None


def check_capabilities(
    kind: str,
    run: Run,
    other: Run | None,
    label: str | None,
    params: dict[str, Any],
    series: Sequence[Run] = (),
) -> None:
    """Raise `capability_gap`'s line as an `InputError` when there is one; an on-request capability
    (token loss, expert output norms) is refused naming the recording option that adds it."""
    needs = KINDS[kind].needs
    for subject in (run, other, *series):
        if subject is not None:
            require_recorded(subject.info.caps, needs(params) if callable(needs) else needs)
    message = capability_gap(kind, run, other, label, params, series)
    if message:
        raise InputError(message)


def parameters(kind: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters of `kind`'s function that callers may set (beyond run, label, layer, other)."""
    analysis = KINDS[kind]
    taken = 1 + int(analysis.other) + int(analysis.series) + int(analysis.label)
    signature = inspect.signature(analysis.function)
    names = list(signature.parameters)[taken:]
    return {name: signature.parameters[name] for name in names if name != "layer"}


def coerce_params(kind: str, raw: dict[str, str]) -> dict[str, Any]:
    """`key=value` strings → the function's argument types (int, float, bool, str, tuple of str)."""
    return coerce_arguments(KINDS[kind].function, raw, list(parameters(kind)), kind)


def coerce_arguments(
    function: Callable[..., Any], raw: dict[str, str], allowed: Sequence[str], what: str
) -> dict[str, Any]:
    """`key=value` strings → `function`'s argument types, for the parameters in `allowed`; an unknown key or
    a value of the wrong type is a one-line `InputError`."""
    hints = typing.get_type_hints(function)
    out: dict[str, Any] = {}
    for name, text in raw.items():
        if name not in allowed:
            options = ", ".join(allowed) or "none"
            raise InputError(f"{what} has no parameter {name!r}; parameters: {options}")
        out[name] = _convert(name, text, hints.get(name, str))
    return out


def _convert(name: str, text: str, hint: Any) -> Any:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = [t for t in typing.get_args(hint) if t is not type(None)] if union else [hint]
    origin = typing.get_origin(options[0])
    if origin is Literal:
        choices = [str(c) for c in typing.get_args(options[0])]
        if text not in choices:
            raise InputError(f"{name} must be one of {', '.join(choices)}, not {text!r}")
        return text
    target = origin or options[0]
    try:
        if target is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if target in (int, float):
            return target(text)
        if target in (tuple, list) or "Sequence" in str(target):
            element = (typing.get_args(options[0]) or (str,))[0]
            convert = element if element in (int, float) else str
            return tuple(convert(part.strip()) for part in text.split(",") if part.strip())
        if "Mapping" in str(target) or target is dict:
            pairs = (item.split(":", 1) for item in text.split(",") if item.strip())
            return {int(k): float(v) for k, v in pairs}
    except ValueError:
        raise InputError(f"{name}={text!r} is not a valid {getattr(target, '__name__', target)}") from None
    return text
