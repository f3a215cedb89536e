"""Analysis room: read runs (DuckDB over Parquet) and return tidy pandas tables.

Each function takes a `Run` and returns a DataFrame; its docstring states the formula. `ANALYSES` maps
report kinds to functions for the CLI and the dashboard.
"""

from __future__ import annotations

from .balance import balance, expert_load
from .coactivation import coactivation
from .comparison import agreement
from .diffusion import steps
from .engine import connect
from .phases import denoising_phases, sensitivity, step_similarity
from .registry import ANALYSES, Analysis
from .sequence import repeat_rate, transitions
from .similarity import expert_similarity, merge_groups
from .specialization import label_counts, label_nmi, specialization
from .summary import router_summary
from .tokens import top_tokens
from .uncertainty import uncertainty
from .vocabulary import vocabulary_specialization

__all__ = [
    "ANALYSES",
    "Analysis",
    "agreement",
    "balance",
    "coactivation",
    "connect",
    "denoising_phases",
    "expert_load",
    "expert_similarity",
    "label_counts",
    "label_nmi",
    "merge_groups",
    "repeat_rate",
    "router_summary",
    "sensitivity",
    "specialization",
    "step_similarity",
    "steps",
    "top_tokens",
    "transitions",
    "uncertainty",
    "vocabulary_specialization",
]
