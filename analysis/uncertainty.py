"""Router uncertainty (GW-MoE): how sure the router was, token by token.

Per decision RouteScope stores the entropy H of the distribution the router chose from (nats), the
top-1 − top-2 probability margin and the max probability. Here, per group: `mean_entropy` (the mean
*per-token* entropy — not the entropy of the expert load, which `balance` reports as `norm_entropy`),
`mean_norm_entropy` = mean of H / ln E, `mean_margin`, and `uncertain_share` = the share of decisions
whose normalised entropy is at least `threshold` (default 0.9: the router spread its probability almost
evenly; GW-MoE calls such tokens uncertain and shows they are prone to wrong expert choices).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from routescope.store import InputError, Run

from .frames import check_by, norm_entropy_sql, sql

NORM_ENTROPY = norm_entropy_sql()

DEFAULT_THRESHOLD = 0.9


def uncertainty(
    run: Run, by: Sequence[str] = ("layer",), threshold: float = DEFAULT_THRESHOLD
) -> pd.DataFrame:
    """`<by>, decisions, mean_entropy, mean_norm_entropy, mean_margin, uncertain_share`."""
    columns = check_by(by)
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} must be between 0 and 1 (a normalised entropy)")
    keys = ", ".join(f"d.{c}" for c in columns)
    return sql(
        run,
        f"""SELECT {keys}, count(*) AS decisions, avg(d.entropy) AS mean_entropy,
                   avg({NORM_ENTROPY}) AS mean_norm_entropy, avg(d.margin) AS mean_margin,
                   avg(CASE WHEN {NORM_ENTROPY} >= {float(threshold)} THEN 1.0 ELSE 0.0 END)
                       AS uncertain_share
            FROM decisions d JOIN routers r ON r.id = d.router
            GROUP BY ALL ORDER BY ALL""",
    )
