"""The explicit registry of analyses: report kind → function, for the CLI (and later the dashboard).

Each entry says which options it takes, so `routescope report` can refuse an option an analysis does not
use instead of ignoring it. Registering is a line here, never an import side effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from .balance import balance, expert_load
from .coactivation import coactivation
from .diffusion import steps
from .phases import denoising_phases, sensitivity, step_similarity
from .sequence import repeat_rate, transitions
from .similarity import expert_similarity
from .specialization import label_nmi, specialization
from .summary import router_summary
from .uncertainty import uncertainty
from .vocabulary import vocabulary_specialization


@dataclass(frozen=True)
class Analysis:
    """One report kind: the function, whether it needs a label (`--by`), and what it answers."""

    function: Callable[..., pd.DataFrame]
    needs_label: bool
    description: str
    needs_layer: bool = False
    """The function takes one layer (`--layer`) instead of reporting every layer."""


ANALYSES: dict[str, Analysis] = {
    "summary": Analysis(router_summary, False, "per router: decisions, drops, mean entropy and margin"),
    "load": Analysis(expert_load, False, "assignments and load share per expert and layer"),
    "balance": Analysis(balance, False, "max/mean, CV, load entropy, Gini, dead experts, aux loss per layer"),
    "specialization": Analysis(specialization, True, "expert × label counts, share and lift per layer"),
    "nmi": Analysis(label_nmi, True, "normalised mutual information of label and expert per layer"),
    "uncertainty": Analysis(uncertainty, False, "mean router entropy, margin and uncertain share per layer"),
    "vocabulary": Analysis(vocabulary_specialization, False, "per token id: top-1 expert and its share"),
    "repeat": Analysis(repeat_rate, False, "consecutive tokens with the same top-1 expert, with baselines"),
    "transitions": Analysis(transitions, False, "top-1 expert at one layer → the next layer's top-1"),
    "similarity": Analysis(step_similarity, False, "Jensen–Shannon divergence of expert load between steps"),
    "phases": Analysis(denoising_phases, False, "steps clustered into denoising phases by routing"),
    "sensitivity": Analysis(
        sensitivity, False, "NMI of the expert with class, position, step, ... per layer"
    ),
    "steps": Analysis(steps, False, "diffusion: expert load per layer at every sampler step"),
    "expert-similarity": Analysis(
        expert_similarity, False, "router-score similarity between experts (needs probs)", needs_layer=True
    ),
    "coactivation": Analysis(
        coactivation, False, "pairs of experts chosen together, with lift", needs_layer=True
    ),
}
