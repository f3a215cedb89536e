"""Published claims as code: each one a check that returns a `Verdict` a paper can cite.

`CLAIMS` maps a claim's name to its `Claim`: the source, the statement, when it applies to a run and the
check, whose docstring states the criterion — fixed before the claim was run on any bundled model. Every
claim is tested twice (tests/test_claims.py): on a run where the effect is planted (it reproduces) and on
a null run — labels permuted across units, a token-blind router with the same loads, shuffled flags —
(it does not). Claims of absence are decided on an equivalence margin, never on a non-significant test.

    from routescope import claims
    verdict = claims.check(run, "olmoe-domain")
    verdict.reproduces, verdict.p_value, verdict.sentence
"""

from __future__ import annotations

import inspect
from typing import Any

from routescope.store import InputError, Run

from .balance import switch_balance
from .diffusion import (
    dit_moe_depth_dispersion,
    dit_moe_early_steps,
    dit_moe_position_step_not_class,
    needs_class,
    needs_diffusion,
    needs_patches,
    switch_dit_phases,
)
from .language import (
    gw_moe_uncertain_tokens,
    mixtral_repeat,
    needs_label,
    needs_text,
    olmoe_domain,
    olmoe_vocabulary,
)
from .paths import needs_step_gates, switch_dit_shared_paths
from .verdict import Claim, Verdict


def _always(run: Run) -> str | None:
    return None


CLAIMS: dict[str, Claim] = {
    claim.name: claim
    for claim in (
        Claim(
            "olmoe-domain",
            "OLMoE (Muennighoff et al. 2024, §5)",
            "experts specialise in domains",
            needs_label("domain"),
            olmoe_domain,
        ),
        Claim(
            "olmoe-vocabulary",
            "OLMoE (Muennighoff et al. 2024, §5)",
            "routing is driven by the token id (vocabulary specialization)",
            needs_text,
            olmoe_vocabulary,
        ),
        Claim(
            "mixtral-repeat",
            "Mixtral (Jiang et al. 2024, §5)",
            "consecutive tokens are often routed to the same expert",
            needs_text,
            mixtral_repeat,
        ),
        Claim(
            "gw-moe-uncertain-tokens",
            "GW-MoE (Wu et al. 2024)",
            "uncertain tokens are a minority that concentrates on particular tokens",
            needs_text,
            gw_moe_uncertain_tokens,
        ),
        Claim(
            "dit-moe-position-step-not-class",
            "DiT-MoE (Fei et al. 2024, §4.4)",
            "expert choice follows spatial position and denoising step, hardly the class",
            needs_class,
            dit_moe_position_step_not_class,
        ),
        Claim(
            "dit-moe-depth-dispersion",
            "DiT-MoE (Fei et al. 2024, §4.4)",
            "deeper layers move from position-specific to dispersed, balanced routing",
            needs_patches,
            dit_moe_depth_dispersion,
        ),
        Claim(
            "dit-moe-early-steps",
            "DiT-MoE (Fei et al. 2024, §4.4)",
            "expert specialization is concentrated at the early, noisy steps",
            needs_patches,
            dit_moe_early_steps,
        ),
        Claim(
            "switch-dit-phases",
            "Switch-DiT (Park et al. 2024)",
            "steps with similar noise levels share routing (denoising phases)",
            needs_diffusion,
            switch_dit_phases,
        ),
        Claim(
            "switch-dit-shared-paths",
            "Switch-DiT (Park et al. 2024, §3.3, §4)",
            "nearby timesteps share denoising paths (experts), distant timesteps use different experts",
            needs_step_gates,
            switch_dit_shared_paths,
        ),
        Claim(
            "switch-balance",
            "Switch Transformer (Fedus et al. 2021); DiT-MoE",
            "training with the balance loss keeps expert loads even",
            _always,
            switch_balance,
        ),
    )
}


def applicable(run: Run) -> list[str]:
    """Names of the claims that apply to `run`, in registry order."""
    return [name for name, claim in CLAIMS.items() if claim.applies(run) is None]


def check(run: Run, name: str, **params: Any) -> Verdict:
    """Check one claim on `run`; an unknown claim, or one that does not apply, is a one-line error."""
    if name not in CLAIMS:
        raise InputError(f"unknown claim {name!r}; choose from {', '.join(CLAIMS)}")
    reason = CLAIMS[name].applies(run)
    if reason is not None:
        raise InputError(f"claim {name!r} does not apply to run {run.name!r}: {reason}")
    accepted = _parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InputError(f"claim {name!r} takes no {', '.join(unknown)}; it takes {', '.join(accepted)}")
    return CLAIMS[name].check(run, **params)


def check_all(run: Run, names: list[str] | None = None, **params: Any) -> list[Verdict]:
    """Every claim that applies to `run` (or the named ones, which must apply), checked with the shared
    `params` (e.g. n_permutations, seed); a claim gets the parameters its check takes."""
    return [check(run, name, **_accepted(name, params)) for name in (names or applicable(run))]


def _parameters(name: str) -> list[str]:
    """The keyword parameters of a claim's check (everything after the run)."""
    return list(inspect.signature(CLAIMS[name].check).parameters)[1:]


def _accepted(name: str, params: dict[str, Any]) -> dict[str, Any]:
    accepted = _parameters(name)
    return {k: v for k, v in params.items() if k in accepted}


__all__ = ["CLAIMS", "Claim", "Verdict", "applicable", "check", "check_all"]
