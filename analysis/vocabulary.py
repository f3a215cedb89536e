"""Vocabulary specialization (OLMoE): is routing driven by the token id?

For every token id, per layer, on the routers' top-1 choices (`rank` 0): `count` = occurrences,
`top_expert` = the expert that most often takes it first, `share` = the share of its occurrences routed
first to `top_expert` (1 = context-independent routing; a uniform router gives about 1/E for frequent
tokens). `target="input"` keys on the token itself, `target="next"` on the token that follows it in the
same sequence (OLMoE's ground-truth next-token view). Average `share` over token ids per layer for the
headline number; OLMoE's normalised form is (share − 1/E) / (1 − 1/E) with k = 1.

The top expert is chosen in SQL, so only one row per (layer, token id) leaves DuckDB: on a 100 M-row run
the (layer, token id, expert) counts are millions of rows (benchmarks/analysis_scale.py).
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from routescope.hooks import InputError, Run

from .frames import sql, stack_of

TIE_SCALE = 1 << 32
"""`n · TIE_SCALE − expert` orders (count, then the smaller expert) in one integer, so the top expert is
picked in SQL with ties going to the smaller id (exact for counts below 2³¹)."""


def vocabulary_specialization(run: Run, target: Literal["input", "next"] = "input") -> pd.DataFrame:
    """`layer, token_id, count, top_expert, share` on top-1 choices."""
    if target not in ("input", "next"):
        raise InputError(f"target must be 'input' or 'next', not {target!r}")
    offset = 0 if target == "input" else 1
    table = sql(
        run,
        f"""WITH counts AS (
            SELECT a.layer, t.token_id, a.expert, count(*) AS n
            FROM assignments a JOIN tokens t
            ON t.sample = a.sample AND t.position = a.position + {offset} AND t.stack = {stack_of(run)}
            WHERE a.rank = 0 AND NOT a.dropped GROUP BY ALL)
        SELECT layer, token_id, CAST(sum(n) AS BIGINT) AS count,
               arg_max(expert, n * {TIE_SCALE} - expert) AS top_expert, max(n) / sum(n) AS share
        FROM counts GROUP BY layer, token_id ORDER BY layer, token_id""",
    )
    if table.empty:
        return pd.DataFrame(columns=["layer", "token_id", "count", "top_expert", "share"])
    return table
