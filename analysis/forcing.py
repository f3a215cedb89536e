"""How much of the routing goes to a given expert set: the check of a forced-routing run.

For each decision (token × router × step × call), `in_set` says that every expert it was dispatched to is
in the set, and `touches_set` that at least one is. Per layer (and label value, when asked), the shares of
decisions of each kind: a forced run shows `in_set_share` = 1 for the tokens it forced, the unedited run
shows how often the model chose that set by itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from routescope.store import InputError, Run

from .frames import label_join, sql


def set_share(run: Run, experts: Sequence[int], label: str | None = None) -> pd.DataFrame:
    """`layer, [<label>,] decisions, in_set_share, touches_set_share` over dispatched assignments."""
    chosen = sorted({int(e) for e in experts})
    if not chosen:
        raise InputError("give at least one expert")
    members = ", ".join(map(str, chosen))
    join, expression = label_join(run, label, fact="a") if label else ("", "")
    group = f', any_value({expression}) AS "{label}"' if label else ""
    keys = "a.sample, a.position, a.step, a.router, a.call"
    return sql(
        run,
        f"""WITH d AS (SELECT {keys}, any_value(a.layer) AS layer{group},
                              bool_and(a.expert IN ({members})) AS in_set,
                              bool_or(a.expert IN ({members})) AS touches
                       FROM assignments a {join} WHERE NOT a.dropped GROUP BY {keys})
            SELECT layer{f', "{label}"' if label else ""}, count(*) AS decisions,
                   avg(CASE WHEN in_set THEN 1.0 ELSE 0.0 END) AS in_set_share,
                   avg(CASE WHEN touches THEN 1.0 ELSE 0.0 END) AS touches_set_share
            FROM d GROUP BY ALL ORDER BY ALL""",
    )
