"""Analysis room: read runs (DuckDB over Parquet) and return tidy pandas tables.

Each function takes a `Run` and returns a DataFrame; its docstring states the formula. `ANALYSES` maps
report kinds to functions and `VIEWS` the tables only figures and the dashboard draw; `compute(kind, run,
...)` calls either, checking its options in one place.
"""

from __future__ import annotations

from .ablation import ablation_accuracy, ablation_denoising, ablation_loss
from .balance import balance, expert_load
from .batching import batch_dependence
from .bootstrap import bootstrap_ci
from .coactivation import coactivation
from .comparison import agreement
from .consistency import boundary_flips, rank_consistency
from .decisions import decision_entropy, decision_histogram, most_uncertain
from .diffusion import denoising_paths, steps
from .drift import expert_drift, layer_predictability, load_drift
from .embeddings import embeddings
from .engine import ENGINES, connect, current_engine, use_engine
from .forcing import set_share
from .output_kl import output_kl, output_kl_by_sample, token_kl
from .paths import expert_paths
from .phases import denoising_phases, sensitivity, step_similarity
from .placement import coverage, device_load, device_loads, hot_set, place, replicate
from .registry import ANALYSES, KINDS, VIEWS, Analysis, coerce_params, compute, keys_of
from .replay import replay_by_sample, routing_replay
from .sequence import repeat_rate, transitions
from .series import saturation_series
from .side_by_side import side_by_side
from .similarity import expert_similarity, merge_budget, merge_groups
from .spatial import spatial_preference
from .specialization import label_counts, label_nmi, peak_lift, specialization
from .stability import decision_changes, flip_correlation, flip_rate
from .summary import router_summary
from .tokens import expert_tokens, top_tokens
from .uncertain_labels import uncertainty_by_label
from .uncertainty import uncertainty
from .views import label_choices, router_names, token_routing, token_weights, uncertain, weight_matrix
from .vocabulary import vocabulary_specialization

__all__ = [
    "ANALYSES",
    "ENGINES",
    "KINDS",
    "VIEWS",
    "Analysis",
    "ablation_accuracy",
    "ablation_denoising",
    "ablation_loss",
    "agreement",
    "balance",
    "batch_dependence",
    "bootstrap_ci",
    "boundary_flips",
    "coactivation",
    "coerce_params",
    "compute",
    "connect",
    "coverage",
    "current_engine",
    "decision_changes",
    "decision_entropy",
    "decision_histogram",
    "denoising_paths",
    "denoising_phases",
    "device_load",
    "device_loads",
    "embeddings",
    "expert_drift",
    "expert_load",
    "expert_paths",
    "expert_similarity",
    "expert_tokens",
    "flip_correlation",
    "flip_rate",
    "hot_set",
    "keys_of",
    "label_choices",
    "label_counts",
    "label_nmi",
    "layer_predictability",
    "load_drift",
    "merge_budget",
    "merge_groups",
    "most_uncertain",
    "output_kl",
    "output_kl_by_sample",
    "peak_lift",
    "place",
    "rank_consistency",
    "repeat_rate",
    "replay_by_sample",
    "replicate",
    "router_names",
    "router_summary",
    "routing_replay",
    "saturation_series",
    "sensitivity",
    "set_share",
    "side_by_side",
    "spatial_preference",
    "specialization",
    "step_similarity",
    "steps",
    "token_kl",
    "token_routing",
    "token_weights",
    "top_tokens",
    "transitions",
    "uncertain",
    "uncertainty",
    "uncertainty_by_label",
    "use_engine",
    "vocabulary_specialization",
    "weight_matrix",
]
