"""Causal probes: edit routing inside a running model and record what it then does.

Each probe is one function that records an ordinary run (so every analysis works on it) with a manifest
entry naming the probe and its parameters (`probe_of(run)`): `probe_ablate` / `ablation_study` (disable
experts, measure the model's quality), `probe_force` (route tokens to given experts), `probe_noise`
(perturb the routers), `probe_batch` (alone vs batched), `probe_prune` (disable each layer's
lowest-scoring experts by a saliency criterion, measure the loss). The edits themselves live in
`routescope.hooks.interventions`; the tables in `routescope.analysis.ablation`, `.stability`, `.batching`,
`.pruning`.
"""

from __future__ import annotations

from routescope.hooks.interventions import Intervention, InterventionError, RouterEdit, TokenSelection

from .ablate import AblationStudy, ablation_study, probe_ablate, random_experts, top_experts
from .batch import probe_batch
from .common import RecordOptions, Sampling, describe, probe_of, record_base
from .force import probe_force
from .noise import NOISE_TARGETS, probe_noise
from .prune import CRITERIA, PruneStudy, probe_prune

__all__ = [
    "CRITERIA",
    "NOISE_TARGETS",
    "AblationStudy",
    "Intervention",
    "InterventionError",
    "PruneStudy",
    "RecordOptions",
    "RouterEdit",
    "Sampling",
    "TokenSelection",
    "ablation_study",
    "describe",
    "probe_ablate",
    "probe_batch",
    "probe_force",
    "probe_noise",
    "probe_of",
    "probe_prune",
    "random_experts",
    "record_base",
    "top_experts",
]
