"""An expert's favourite tokens, with the context of one occurrence each (the expert card's table).

For `layer` and `expert`: every token id the expert was chosen for (any rank), with `count` (its
assignments to the expert), `share` = count / the token's occurrences at that layer (how reliably the
token goes to this expert), and `example`: the text of the first occurrence's sequence around it, the
token itself marked as `[[token]]`.
"""

from __future__ import annotations

import pandas as pd

from routescope.store import InputError, Run

from .frames import label_join, sql


def top_tokens(run: Run, layer: int, expert: int, n: int = 20, context: int = 4) -> pd.DataFrame:
    """`token_id, token, count, share, example` for the `n` tokens most often routed to `expert`."""
    if n < 1 or context < 0:
        raise InputError("n must be ≥ 1 and context ≥ 0")
    top = sql(
        run,
        f"""WITH a AS (SELECT a.sample, a.position, a.expert, t.token_id, t.stack
                       FROM assignments a JOIN routers r ON r.id = a.router
                       JOIN tokens t ON t.sample = a.sample AND t.position = a.position AND t.stack = r.stack
                       WHERE a.layer = {int(layer)} AND NOT a.dropped),
                occurrences AS (SELECT token_id, count(DISTINCT (sample, position)) AS seen
                                FROM a GROUP BY ALL)
            SELECT a.token_id, count(*) AS count, any_value(o.seen) AS seen,
                   arg_min(a.sample, a.sample::BIGINT * 4294967296 + a.position) AS sample,
                   arg_min(a.position, a.sample::BIGINT * 4294967296 + a.position) AS position,
                   arg_min(a.stack, a.sample::BIGINT * 4294967296 + a.position) AS stack
            FROM a JOIN occurrences o USING (token_id) WHERE a.expert = {int(expert)}
            GROUP BY a.token_id ORDER BY count DESC, a.token_id LIMIT {int(n)}""",
    )
    if top.empty:
        return pd.DataFrame(columns=["token_id", "token", "count", "share", "example"])
    windows = sql(
        run,
        "SELECT sample, position, stack, token FROM tokens WHERE "
        + " OR ".join(
            f"(sample = {int(s)} AND stack = '{st}' AND position BETWEEN {int(p) - context} "
            f"AND {int(p) + context})"
            for s, p, st in zip(top["sample"], top["position"], top["stack"], strict=True)
        ),
    )
    examples, texts = [], []
    for sample, position, stack in zip(top["sample"], top["position"], top["stack"], strict=True):
        part = windows[(windows["sample"] == sample) & (windows["stack"] == stack)].sort_values("position")
        part = part[(part["position"] >= position - context) & (part["position"] <= position + context)]
        pieces = [
            f"[[{t}]]" if p == position else str(t)
            for p, t in zip(part["position"], part["token"], strict=True)
        ]
        examples.append("".join(pieces))
        texts.append(str(part.loc[part["position"] == position, "token"].iloc[0]))
    top["token"], top["example"] = texts, examples
    top["share"] = top["count"] / top["seen"]
    return top[["token_id", "token", "count", "share", "example"]]


def expert_tokens(run: Run, *, layer: int, expert: int, n: int = 20) -> pd.DataFrame:
    """`top_tokens(run, layer, expert, n)` with `lift` = P(token → expert) / P(any token → expert) on
    assignments (not dropped) at `layer`: the token's share of its assignments that go to `expert`, over
    the expert's share of the layer's assignments — `specialization(run, "token_id")`'s lift, for these
    tokens only."""
    top = top_tokens(run, int(layer), int(expert), n=n)
    if top.empty:
        return top.assign(lift=pd.Series(dtype=float))
    join, token = label_join(run, "token_id")
    ids = ", ".join(str(int(t)) for t in top["token_id"])
    per_token = sql(
        run,
        f"""SELECT {token} AS token_id, count(*) AS assignments FROM assignments a {join}
            WHERE a.layer = {int(layer)} AND NOT a.dropped AND {token} IN ({ids}) GROUP BY ALL""",
    )
    totals = sql(
        run,
        f"""SELECT count(*) AS total, count(*) FILTER (WHERE expert = {int(expert)}) AS chosen
            FROM assignments WHERE layer = {int(layer)} AND NOT dropped""",
    )
    load = float(totals["chosen"].iloc[0]) / max(float(totals["total"].iloc[0]), 1.0)
    merged = top.merge(per_token, on="token_id", how="left")
    merged["lift"] = merged["count"] / merged["assignments"] / load
    return merged[["token_id", "token", "count", "share", "lift", "example"]]
