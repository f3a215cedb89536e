"""Vocabulary specialization (OLMoE): is routing driven by the token id?

For every token id, per layer, on the routers' top-1 choices (`rank` 0): `count` = occurrences,
`top_expert` = the expert that most often takes it first, `share` = the share of its occurrences routed
first to `top_expert` (1 = context-independent routing; a uniform router gives about 1/E for frequent
tokens). `target="input"` keys on the token itself, `target="next"` on the token that follows it in the
same sequence (OLMoE's ground-truth next-token view). Average `share` over token ids per layer for the
headline number; OLMoE's normalised form is (share − 1/E) / (1 − 1/E) with k = 1.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from routescope.hooks import InputError, Run

from .frames import sql


def vocabulary_specialization(run: Run, target: Literal["input", "next"] = "input") -> pd.DataFrame:
    """`layer, token_id, count, top_expert, share` on top-1 choices."""
    if target not in ("input", "next"):
        raise InputError(f"target must be 'input' or 'next', not {target!r}")
    offset = 0 if target == "input" else 1
    counts = sql(
        run,
        f"""SELECT a.layer, t.token_id, a.expert, count(*) AS n
        FROM assignments a JOIN routers r ON r.id = a.router
        JOIN tokens t ON t.sample = a.sample AND t.position = a.position + {offset} AND t.stack = r.stack
        WHERE a.rank = 0 AND NOT a.dropped GROUP BY ALL""",
    )
    if counts.empty:
        return pd.DataFrame(columns=["layer", "token_id", "count", "top_expert", "share"])
    counts = counts.sort_values(["layer", "token_id", "n", "expert"], ascending=[True, True, False, True])
    total = counts.groupby(["layer", "token_id"])["n"].sum().rename("count")
    top = counts.groupby(["layer", "token_id"]).head(1).set_index(["layer", "token_id"])
    table = top.join(total).reset_index().rename(columns={"expert": "top_expert"})
    table["share"] = table["n"] / table["count"]
    return table[["layer", "token_id", "count", "top_expert", "share"]]
