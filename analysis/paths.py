"""Expert paths through depth: the sequence of top-1 experts a token takes from the first MoE layer to the
last (of one stack), and how often each sequence occurs.

A token's path is its top-1 expert at every MoE layer of its stack within one forward pass (same sample,
position and sampler `step`: a diffusion run has one path per patch and step), in depth order. Depth order
is call, then layer: a router run several times per forward pass (a layer shared across depth, `call`
0, 1, ...) is met once per pass through the shared stack, so a looped stack A, B reads A₀ B₀ A₁ B₁ (exact
when the whole stack is looped, or only layers before the loop are unshared; two routers at one layer go
by router id). `count` = tokens (× steps) that took the path, `share` = count / all paths of the stack,
`baseline_share` = the share expected if each layer chose independently with its own load: Π_l
load_l(e_l) (NaN for a path cut short by a dropped token). `lift` = share / baseline_share: paths far
above 1 are routes through depth the model keeps reusing (the cross-layer structure behind
`transitions`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .frames import sql

COLUMNS = ["stack", "path", "count", "share", "baseline_share", "lift"]


def expert_paths(run: Run, top: int = 20) -> pd.DataFrame:
    """`stack, path, count, share, baseline_share, lift`: the `top` most frequent top-1 paths per stack;
    `path` reads like `3>7>1>0`, one expert per MoE layer (and call) in depth order."""
    if top < 1:
        raise InputError("top must be ≥ 1")
    paths = sql(
        run,
        """WITH top AS (SELECT a.sample, a.position, a.step, r.stack, a.layer, a.call, a.router, a.expert
                        FROM assignments a JOIN routers r ON r.id = a.router
                        WHERE a.rank = 0 AND NOT a.dropped)
           SELECT stack, path, count(*) AS count FROM (
               SELECT stack, string_agg(CAST(expert AS VARCHAR), '>' ORDER BY call, layer, router) AS path
               FROM top GROUP BY sample, position, step, stack)
           GROUP BY ALL""",
    )
    if paths.empty:
        return pd.DataFrame(columns=COLUMNS)
    loads = sql(
        run,
        """SELECT r.stack, a.layer, a.call, a.expert, count(*) AS n
           FROM assignments a JOIN routers r ON r.id = a.router WHERE a.rank = 0 AND NOT a.dropped
           GROUP BY ALL""",
    )
    frames = []
    for stack, part in paths.groupby("stack"):
        hops = loads[loads["stack"] == stack]
        order = sorted(
            {(int(call), int(layer)) for layer, call in zip(hops["layer"], hops["call"], strict=True)}
        )
        shares = []
        for call, layer in order:
            level = hops[(hops["layer"] == layer) & (hops["call"] == call)]
            shares.append(dict(zip(level["expert"].astype(int), level["n"] / level["n"].sum(), strict=True)))
        part = part.sort_values(["count", "path"], ascending=[False, True]).head(top).copy()
        part["share"] = part["count"] / paths.loc[paths["stack"] == stack, "count"].sum()
        part["baseline_share"] = [
            float(np.prod([shares[i].get(int(e), 0.0) for i, e in enumerate(path.split(">"))]))
            if len(path.split(">")) == len(shares)
            else np.nan
            for path in part["path"]
        ]
        part["lift"] = part["share"] / part["baseline_share"]
        frames.append(part)
    return pd.concat(frames, ignore_index=True)[COLUMNS]
