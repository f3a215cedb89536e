"""Expert saliency from recorded output norms: which experts could be pruned or merged.

Routing frequency alone says how often an expert is chosen, not how much it contributes. With
`assignments.output_norm` (‖f_e(x)‖₂ before the gate, `record(expert_stats=True)`) the criteria of the
pruning literature follow per layer and expert, over the tokens routed to it (drops excluded):

- `frequency`: tokens routed to e / the layer's routing decisions (sums to about k over experts);
- `ean`: mean output norm, ‖f_e(x)‖ (EAN);
- `reap`: mean of gate weight × output norm, g_e(x)·‖f_e(x)‖ (REAP, arXiv 2510.13999);
- `max_activation`: the largest output norm.

Experts never routed in a layer appear with `routed = 0`, `frequency = 0` and null norms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import Run
from routescope.store.capabilities import require_recorded

from .frames import sql


def require_expert_stats(run: Run) -> None:
    """Refuse a run recorded without expert output norms, in one line naming the option (field
    `expert_stats`)."""
    require_recorded(run.info.caps, ("output_norms",))


def saliency(run: Run) -> pd.DataFrame:
    """`layer, expert, routed, frequency, ean, reap, max_activation`, one row per layer and expert."""
    require_expert_stats(run)
    table = sql(
        run,
        """WITH per_layer AS (SELECT layer, count(*) AS decisions FROM decisions GROUP BY layer),
                routed AS (
                    SELECT a.layer, a.expert, count(*) AS routed, avg(a.output_norm) AS ean,
                           avg(a.weight * a.output_norm) AS reap, max(a.output_norm) AS max_activation
                    FROM assignments a WHERE NOT a.dropped AND a.output_norm IS NOT NULL GROUP BY ALL)
           SELECT r.layer, r.expert, r.routed, r.routed / p.decisions AS frequency, r.ean, r.reap,
                  r.max_activation
           FROM routed r JOIN per_layer p ON p.layer = r.layer""",
    )
    sizes: dict[int, int] = {}
    for router in run.info.routers:
        sizes[router.layer] = max(sizes.get(router.layer, 0), router.n_experts)
    grid = pd.DataFrame(
        [(layer, expert) for layer, n in sorted(sizes.items()) for expert in range(n)],
        columns=["layer", "expert"],
    )
    table = grid.merge(table, on=["layer", "expert"], how="left")
    table["routed"] = table["routed"].fillna(0).astype(np.int64)
    table["frequency"] = table["frequency"].fillna(0.0).astype(float)
    return table
