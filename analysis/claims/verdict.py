"""What a claim check returns: a verdict a paper can cite, with the numbers behind it.

A `Verdict` names the statistic and its value, the null it was compared with (how the null reference was
drawn: the permutation, its N and seed, the unit of independence), the effect size with a bootstrap
interval over the same units, and one sentence. `reproduces` is decided by the criterion written in the
claim's docstring, fixed before the claim was run on any bundled model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from routescope.store import Run


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The outcome of one claim on one run."""

    claim: str
    """Registry name, e.g. `olmoe-domain`."""
    reproduces: bool
    """Whether the run meets the claim's criterion (its docstring)."""
    statistic: str
    """What was measured, in words."""
    value: float
    """The statistic on the run (for per-layer statistics: the layer the criterion hinges on)."""
    null: str
    """The null hypothesis and how its reference distribution was drawn."""
    p_value: float | None
    """Permutation p-value, (1 + #{null ≥ observed}) / (1 + N), Bonferroni-adjusted over layers where the
    criterion says so; None for claims decided on intervals alone."""
    null_reference: float | None
    """The chance level: the permutation mean of the statistic (or the margin of an equivalence claim)."""
    n_permutations: int
    seed: int
    unit: str
    """The unit of independence resampled and permuted (sample, pair, ...)."""
    effect: str
    """The effect size, in words."""
    effect_size: float
    effect_lo: float
    effect_hi: float
    level: float = 0.95
    """Level of the effect-size interval (percentile bootstrap over units)."""
    sentence: str
    details: pd.DataFrame = field(default_factory=pd.DataFrame, compare=False)
    """Per-layer numbers behind the verdict."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN → None; `details` as a list of records)."""
        out = {k: v for k, v in asdict(self).items() if k != "details"}
        for key, value in out.items():
            if isinstance(value, float) and math.isnan(value):
                out[key] = None
        out["details"] = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in self.details.to_dict(orient="records")
        ]
        return out


@dataclass(frozen=True)
class Claim:
    """A published claim as code: where it comes from, when it applies and how it is checked."""

    name: str
    source: str
    statement: str
    applies: Callable[[Run], str | None]
    """None when the claim applies to the run, else the reason it does not."""
    check: Callable[..., Verdict]
    """`check(run, **params) -> Verdict`; its docstring states the criterion."""


def yes_no(flag: bool) -> str:
    return "reproduces" if flag else "does not reproduce"
