"""The Switch Transformer's (and DiT-MoE's) balance claim: training with the auxiliary balance loss keeps
expert loads even. A claim of absence — of imbalance — so it is decided on equivalence margins with
bootstrap intervals over units, never on a non-significant test."""

from __future__ import annotations

import pandas as pd

from routescope.store import Run

from ..balance import balance
from ..bootstrap import bootstrap_ci
from .verdict import Verdict, yes_no

MAX_OVER_MEAN = 2.0
"""Equivalence margin of `switch-balance`: no expert above twice its even share."""
AUX_LOSS = 1.25
"""Equivalence margin of `switch-balance` on the Switch auxiliary loss (1 when perfectly balanced)."""


def switch_balance(run: Run, *, n_boot: int = 1000, seed: int = 0, unit: str | None = None) -> Verdict:
    """Switch Transformer / DiT-MoE: training with the balance loss keeps expert loads even.

    A claim of absence (of imbalance), so it is decided on equivalence margins with 95 % bootstrap
    intervals over units, never on a non-significant test. Criterion, at every layer: no dead expert, the
    upper bound of max/mean load ≤ 2.0, and — on runs recorded with probabilities — the upper bound of the
    auxiliary loss E · Σ_e f_e P_e ≤ 1.25. Effect: the largest max/mean load over layers."""
    intervals = bootstrap_ci(run, "balance", n_boot=n_boot, seed=seed, unit=unit)
    wide = intervals.pivot(index="layer", columns="metric", values=["estimate", "hi"])
    dead = balance(run).set_index("layer")["dead_experts"]
    details = pd.DataFrame(
        {
            "dead_experts": dead,
            "max_over_mean": wide[("estimate", "max_over_mean")],
            "max_over_mean_hi": wide[("hi", "max_over_mean")],
        }
    )
    has_aux = ("estimate", "aux_loss") in wide.columns
    ok_layers = (details["dead_experts"] == 0) & (details["max_over_mean_hi"] <= MAX_OVER_MEAN)
    if has_aux:
        details["aux_loss"] = wide[("estimate", "aux_loss")]
        details["aux_loss_hi"] = wide[("hi", "aux_loss")]
        ok_layers &= details["aux_loss_hi"] <= AUX_LOSS
    details = details.reset_index()
    ok = bool(ok_layers.all())
    worst = intervals[intervals["metric"] == "max_over_mean"].sort_values("estimate").iloc[-1]
    aux = f", aux loss ≤ {details['aux_loss_hi'].max():.2f} (margin {AUX_LOSS})" if has_aux else ""
    return Verdict(
        claim="switch-balance",
        reproduces=ok,
        statistic=f"max/mean expert load at layer {int(worst['layer'])}",
        value=float(worst["estimate"]),
        null=f"equivalence margins: no dead expert, max/mean ≤ {MAX_OVER_MEAN}"
        + (f", aux loss ≤ {AUX_LOSS}" if has_aux else ""),
        p_value=None,
        null_reference=MAX_OVER_MEAN,
        n_permutations=0,
        seed=seed,
        unit=str(worst["unit"]),
        effect="largest max/mean expert load over layers",
        effect_size=float(worst["estimate"]),
        effect_lo=float(worst["lo"]),
        effect_hi=float(worst["hi"]),
        sentence=(
            f"Even loads {yes_no(ok)}: {int(details['dead_experts'].sum())} dead experts, max/mean load up "
            f"to {worst['estimate']:.2f} (95 % upper bound {worst['hi']:.2f}, margin {MAX_OVER_MEAN}){aux}."
        ),
        details=details,
    )
