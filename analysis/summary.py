"""A run at a glance: per router, how many decisions, how spread the load is, how sure the router was."""

from __future__ import annotations

import pandas as pd

from routescope.store import Run

from .frames import sql


def router_summary(run: Run) -> pd.DataFrame:
    """One row per router: `router, path, layer, stack, n_experts, top_k, decisions, dropped_share,
    mean_entropy, mean_margin, experts_used`.

    `mean_entropy` is the mean per-token router entropy in nats (not the entropy of the load);
    `experts_used` counts experts that received at least one assignment.
    """
    return sql(
        run,
        """
            WITH d AS (
                SELECT router, count(*) AS decisions, avg(entropy) AS mean_entropy, avg(margin) AS mean_margin
                FROM decisions GROUP BY router
            ), a AS (
                SELECT router, avg(CAST(dropped AS DOUBLE)) AS dropped_share,
                       count(DISTINCT expert) FILTER (WHERE NOT dropped) AS experts_used
                FROM assignments GROUP BY router
            )
            SELECT r.id AS router, r.path, r.layer, r.stack, r.n_experts, r.top_k,
                   coalesce(d.decisions, 0) AS decisions, coalesce(a.dropped_share, 0) AS dropped_share,
                   d.mean_entropy, d.mean_margin, coalesce(a.experts_used, 0) AS experts_used
            FROM routers r LEFT JOIN d ON d.router = r.id LEFT JOIN a ON a.router = r.id
            ORDER BY r.id
            """,
    )
