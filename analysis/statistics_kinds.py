"""The report kinds over per-token loss and expert output norms (`loss-by-uncertainty`, `loss-by-expert`,
`loss-by-label`, `saliency`), declared beside their functions and merged into `registry.ANALYSES` by name.

Each needs a capability a recording has only when asked for (`token_loss`, `output_norms`;
routescope.store.capabilities), so `compute` refuses a run without it in one line naming the recording
option, before the function runs.
"""

from __future__ import annotations

from .kinds import LABEL, Analysis
from .loss import loss_by_expert, loss_by_label, loss_by_uncertainty
from .saliency import saliency

STATISTICS_ANALYSES: dict[str, Analysis] = {
    "loss-by-uncertainty": Analysis(
        loss_by_uncertainty,
        "token loss: mean next-token nll per router-entropy bin and layer",
        ("layer", "bin"),
        needs=("ids", "scores", "token_loss"),
    ),
    "loss-by-expert": Analysis(
        loss_by_expert,
        "token loss: mean nll per top-1 expert and layer, spread against a permutation null",
        ("layer", "expert"),
        needs=("ids", "ranks", "token_loss"),
    ),
    "loss-by-label": Analysis(
        loss_by_label, "token loss: mean nll per label value", (LABEL,), True, needs=("token_loss",)
    ),
    "saliency": Analysis(
        saliency,
        "expert stats: frequency, mean output norm (EAN), gate × norm (REAP), max per expert",
        ("layer", "expert"),
        needs=("ids", "gate_weights", "output_norms"),
    ),
}
