"""The routing-replay check: on the same tokens, does a second engine pick the same expert *sets*?

Routing replay (vLLM PR #28284; Megatron #4168 reports ~10 % of routers disagreeing between engines with
identical weights) trains on the experts an inference engine chose; what matters is whether each token's
set of experts agrees at every layer, regardless of rank order. For every token (sample, position, step,
call) present in both runs, a layer *differs* when its expert sets differ; `share_differing` is the share
of tokens with at least one differing layer, `decisions_differing` the share of (token, layer) decisions;
`replay_by_sample` gives the same counts per sample.
Only decisions both runs carry count (dense layers and missing rows drop out). Plain joins and counts,
so the query runs on DuckDB and Spark alike.
"""

from __future__ import annotations

import pandas as pd

from routescope.store import InputError, Run

from .frames import sql

TOKEN = ("sample", "position", "step", "call")
KEYS = (*TOKEN, "layer")


def routing_replay(run_a: Run, run_b: Run) -> pd.DataFrame:
    """One row: `tokens, tokens_differing, share_differing, decisions, decisions_differing,
    share_decisions` (see the module docstring)."""
    return _replay(run_a, run_b, ())


def replay_by_sample(run_a: Run, run_b: Run) -> pd.DataFrame:
    """`routing_replay`'s row for every sample both runs share: `sample, tokens, tokens_differing,
    share_differing, ...` (which inputs routing replay breaks)."""
    return _replay(run_a, run_b, ("sample",))


def _replay(run_a: Run, run_b: Run, group: tuple[str, ...]) -> pd.DataFrame:
    select = "".join(f"{c}, " for c in group)
    grouped = f" GROUP BY {', '.join(group)} ORDER BY {', '.join(group)}" if group else ""
    keys = ", ".join(KEYS)
    on = " AND ".join(f"x.{k} = y.{k}" for k in KEYS)
    table = sql(
        run_a,
        f"""WITH a AS (SELECT {keys}, expert FROM assignments WHERE NOT dropped),
                 b AS (SELECT {keys}, expert FROM other WHERE NOT dropped),
                 na AS (SELECT {keys}, count(*) AS n FROM a GROUP BY ALL),
                 nb AS (SELECT {keys}, count(*) AS n FROM b GROUP BY ALL),
                 shared AS (SELECT {", ".join(f"x.{k}" for k in KEYS)}, count(*) AS n
                            FROM a x JOIN b y ON {on} AND x.expert = y.expert GROUP BY ALL),
                 d AS (SELECT {", ".join(f"x.{k}" for k in KEYS)},
                              CASE WHEN x.n = y.n AND coalesce(s.n, 0) = x.n THEN 0 ELSE 1 END AS differs
                       FROM na x JOIN nb y ON {on}
                       LEFT JOIN shared s ON {" AND ".join(f"s.{k} = x.{k}" for k in KEYS)}),
                 t AS (SELECT {", ".join(TOKEN)}, max(differs) AS differs, count(*) AS layers,
                              sum(differs) AS layers_differing FROM d GROUP BY ALL)
            SELECT {select}count(*) AS tokens, coalesce(sum(differs), 0) AS tokens_differing,
                   sum(layers) AS decisions, coalesce(sum(layers_differing), 0) AS decisions_differing
            FROM t{grouped}""",
        views={"other": run_b.table_path("assignments")},
    )
    if table.empty or int(table["tokens"].iloc[0]) == 0:
        raise InputError(f"runs {run_a.name!r} and {run_b.name!r} share no decisions; import the same tokens")
    table["share_differing"] = table["tokens_differing"] / table["tokens"]
    table["share_decisions"] = table["decisions_differing"] / table["decisions"]
    return table[
        [
            *group,
            "tokens",
            "tokens_differing",
            "share_differing",
            "decisions",
            "decisions_differing",
            "share_decisions",
        ]
    ].astype(
        {"tokens": "int64", "tokens_differing": "int64", "decisions": "int64", "decisions_differing": "int64"}
    )
