"""Where the uncertain decisions are (GW-MoE): router uncertainty broken down by a label.

Per layer and label value (token id, domain, class, step, position, ...): `decisions`, `mean_norm_entropy`
(mean H / ln E), `mean_margin` and `uncertain_share` — the share of its decisions whose normalised
entropy is at least `threshold` (as in `uncertainty`). Rows are sorted most uncertain first within each
layer; label values seen fewer than `min_count` times are left out, so rare tokens do not crowd the top.
"""

from __future__ import annotations

import pandas as pd

from routescope.store import InputError, Run

from .frames import label_join, norm_entropy_sql, sql
from .uncertainty import DEFAULT_THRESHOLD


def uncertainty_by_label(
    run: Run, label: str, threshold: float = DEFAULT_THRESHOLD, min_count: int = 5
) -> pd.DataFrame:
    """`layer, <label>, decisions, mean_norm_entropy, mean_margin, uncertain_share`, most uncertain first."""
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} must be between 0 and 1 (a normalised entropy)")
    join, expr = label_join(run, label, fact="d")
    norm = norm_entropy_sql(n_experts="r0.n_experts")
    table = sql(
        run,
        f"""SELECT d.layer, {expr} AS "{label}", count(*) AS decisions,
                   avg({norm}) AS mean_norm_entropy, avg(d.margin) AS mean_margin,
                   avg(CASE WHEN {norm} >= {float(threshold)} THEN 1.0 ELSE 0.0 END)
                       AS uncertain_share
            FROM decisions d JOIN routers r0 ON r0.id = d.router {join}
            GROUP BY ALL HAVING count(*) >= {int(min_count)}""",
    )
    return table.sort_values(
        ["layer", "uncertain_share", "mean_norm_entropy"], ascending=[True, False, False], ignore_index=True
    )
