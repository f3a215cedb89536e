"""Paper figures: one builder per figure kind (`figure_*(table, ...) -> plotly Figure`, fed the tidy tables
of `routescope.analysis`), the `routescope-paper` template, the `FIGURES` registry and export to SVG, PDF
and PNG (one browser per batch) and to CSV and LaTeX tables.

>>> from routescope.analysis import expert_load  # doctest: +SKIP
>>> fig = figure_load(expert_load(run), width="single")  # doctest: +SKIP
>>> export_figures([(fig, "load.pdf"), (fig, "load.png")])  # doctest: +SKIP
"""

from __future__ import annotations

from .consistency import figure_boundary_flips, figure_rank_consistency, figure_replay_samples
from .denoising import figure_denoising_paths
from .diffusion import (
    figure_branches,
    figure_spatial,
    figure_step_lines,
    figure_step_similarity,
    figure_steps,
)
from .experts import figure_expert_overview, figure_expert_steps, figure_partners, figure_token_weights
from .export import ExportError, export_figure, export_figures, write_table
from .labels import figure_embedding, figure_nmi, figure_sensitivity, figure_specialization
from .load import figure_balance, figure_load
from .pairs import figure_coactivation, figure_expert_similarity, figure_transitions
from .paths import figure_paths
from .placement import (
    figure_coverage,
    figure_drift,
    figure_drift_experts,
    figure_hot_set,
    figure_placement,
    figure_predictability,
)
from .probes import (
    figure_ablation,
    figure_batch_dependence,
    figure_changes,
    figure_flip_rate,
    figure_set_share,
)
from .registry import FIGURES, FigureKind, FigureRequest, make_figure, standard_set
from .sequence import figure_agreement, figure_repeat, figure_side_by_side, figure_top_tokens
from .statistics import (
    figure_loss_by_expert,
    figure_loss_by_label,
    figure_loss_by_uncertainty,
    figure_saliency,
)
from .theme import COLUMN_INCHES, TEMPLATE, expert_colour, paper_layout, template, width_px
from .uncertainty import (
    figure_binned_histogram,
    figure_uncertain_labels,
    figure_uncertainty,
    figure_uncertainty_histogram,
)
from .vocabulary import figure_vocabulary

__all__ = [
    "COLUMN_INCHES",
    "FIGURES",
    "TEMPLATE",
    "ExportError",
    "FigureKind",
    "FigureRequest",
    "expert_colour",
    "export_figure",
    "export_figures",
    "figure_ablation",
    "figure_agreement",
    "figure_balance",
    "figure_batch_dependence",
    "figure_binned_histogram",
    "figure_boundary_flips",
    "figure_branches",
    "figure_changes",
    "figure_coactivation",
    "figure_coverage",
    "figure_denoising_paths",
    "figure_drift",
    "figure_drift_experts",
    "figure_embedding",
    "figure_expert_overview",
    "figure_expert_similarity",
    "figure_expert_steps",
    "figure_flip_rate",
    "figure_hot_set",
    "figure_load",
    "figure_loss_by_expert",
    "figure_loss_by_label",
    "figure_loss_by_uncertainty",
    "figure_nmi",
    "figure_partners",
    "figure_paths",
    "figure_placement",
    "figure_predictability",
    "figure_rank_consistency",
    "figure_repeat",
    "figure_replay_samples",
    "figure_saliency",
    "figure_sensitivity",
    "figure_set_share",
    "figure_side_by_side",
    "figure_spatial",
    "figure_specialization",
    "figure_step_lines",
    "figure_step_similarity",
    "figure_steps",
    "figure_token_weights",
    "figure_top_tokens",
    "figure_transitions",
    "figure_uncertain_labels",
    "figure_uncertainty",
    "figure_uncertainty_histogram",
    "figure_vocabulary",
    "make_figure",
    "paper_layout",
    "standard_set",
    "template",
    "width_px",
    "write_table",
]
