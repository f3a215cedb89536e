"""Analysis room: read runs (DuckDB over Parquet) and return tidy pandas tables.

Each function takes a `Run` and returns a DataFrame; its docstring states the formula. `ANALYSES` maps
report kinds to functions for the CLI and the dashboard.
"""

from __future__ import annotations

from .ablation import ablation_accuracy, ablation_denoising, ablation_loss
from .balance import balance, expert_load
from .batching import batch_dependence
from .bootstrap import bootstrap_ci
from .coactivation import coactivation
from .comparison import agreement
from .diffusion import steps
from .embeddings import embeddings
from .engine import ENGINES, connect, current_engine, use_engine
from .forcing import set_share
from .paths import expert_paths
from .phases import denoising_phases, sensitivity, step_similarity
from .registry import ANALYSES, Analysis, coerce_params, compute, keys_of
from .sequence import repeat_rate, transitions
from .side_by_side import side_by_side
from .similarity import expert_similarity, merge_budget, merge_groups
from .spatial import spatial_preference
from .specialization import label_counts, label_nmi, specialization
from .stability import decision_changes, flip_correlation, flip_rate
from .summary import router_summary
from .tokens import top_tokens
from .uncertain_labels import uncertainty_by_label
from .uncertainty import uncertainty
from .vocabulary import vocabulary_specialization

__all__ = [
    "ANALYSES",
    "ENGINES",
    "Analysis",
    "ablation_accuracy",
    "ablation_denoising",
    "ablation_loss",
    "agreement",
    "balance",
    "batch_dependence",
    "bootstrap_ci",
    "coactivation",
    "coerce_params",
    "compute",
    "connect",
    "current_engine",
    "decision_changes",
    "denoising_phases",
    "embeddings",
    "expert_load",
    "expert_paths",
    "expert_similarity",
    "flip_correlation",
    "flip_rate",
    "keys_of",
    "label_counts",
    "label_nmi",
    "merge_budget",
    "merge_groups",
    "repeat_rate",
    "router_summary",
    "sensitivity",
    "set_share",
    "side_by_side",
    "spatial_preference",
    "specialization",
    "step_similarity",
    "steps",
    "top_tokens",
    "transitions",
    "uncertainty",
    "uncertainty_by_label",
    "use_engine",
    "vocabulary_specialization",
]
