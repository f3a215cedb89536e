"""Aggregated views the Experts and Balance pages draw that no registered analysis returns as such: each
expert's strongest label preference, an expert's top tokens with their lift, histograms of per-decision
uncertainty binned in DuckDB, and the most uncertain decisions of a layer.

They sit next to the pages (like `views.py`) because no CLI report needs them. The SQL ones aggregate
where the data lives, so a run of millions of decisions returns a few hundred rows; `cache.table` caches
them through `views.TABLES`. `peak_lift` is plain pandas on a cached `specialization` table.
"""

from __future__ import annotations

import pandas as pd

from routescope.analysis import top_tokens
from routescope.analysis.frames import label_join, sql
from routescope.store import InputError, Run

HISTOGRAM_VALUES = {
    "norm_entropy": "d.entropy / ln(greatest(r.n_experts, 2))",
    "margin": "d.margin",
    "max_prob": "d.max_prob",
}
"""Per-decision values in [0, 1] that `decision_histogram` bins, as SQL over `decisions d`, `routers r`."""


def peak_lift(specialization: pd.DataFrame, label: str) -> pd.DataFrame:
    """Per layer and expert, the `label` value it prefers most: `layer, expert, top_value, count, share,
    lift` from the table of `specialization(run, label)` — the row of largest lift (ties: more
    assignments, then the first value in sorted order)."""
    needed = ["layer", "expert", label, "count", "share", "lift"]
    missing = [c for c in needed if c not in specialization.columns]
    if missing:
        raise InputError(f"peak lift needs specialization(run, {label!r}); the table lacks {missing}")
    rows = specialization.dropna(subset=["lift"]).assign(_value=lambda t: t[label].astype(str))
    rows = rows.sort_values(
        ["layer", "expert", "lift", "count", "_value"], ascending=[True, True, False, False, True]
    )
    top = rows.groupby(["layer", "expert"], as_index=False, sort=True).head(1)
    out = top[["layer", "expert", label, "count", "share", "lift"]].rename(columns={label: "top_value"})
    return out.reset_index(drop=True)


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


def decision_histogram(run: Run, *, value: str = "norm_entropy", bins: int = 20) -> pd.DataFrame:
    """Per layer, the share of decisions in each of `bins` equal bins of [0, 1] of `value` (normalised
    entropy H / ln E, top-1 − top-2 margin, or top-1 probability): `layer, bin, bin_low, bin_high, count,
    share`. Bins are [low, high), the last one closed; values are clamped into [0, 1]."""
    if value not in HISTOGRAM_VALUES:
        raise InputError(f"cannot bin {value!r}; choose from {', '.join(HISTOGRAM_VALUES)}")
    if not 2 <= bins <= 1000:
        raise InputError(f"bins must be between 2 and 1000, not {bins}")
    expr = HISTOGRAM_VALUES[value]
    counts = sql(
        run,
        f"""SELECT d.layer, least(greatest(floor({expr} * {int(bins)}), 0), {int(bins) - 1})::INTEGER AS bin,
                   count(*) AS count
            FROM decisions d JOIN routers r ON r.id = d.router WHERE {expr} IS NOT NULL GROUP BY ALL""",
    )
    layers = sorted(int(v) for v in counts["layer"].unique())
    grid = pd.MultiIndex.from_product([layers, range(int(bins))], names=["layer", "bin"])
    table = counts.set_index(["layer", "bin"])["count"].reindex(grid, fill_value=0).reset_index()
    table["count"] = table["count"].astype("int64")
    table["bin_low"] = table["bin"] / bins
    table["bin_high"] = (table["bin"] + 1) / bins
    table["share"] = table["count"] / table.groupby("layer")["count"].transform("sum").clip(lower=1)
    return table[["layer", "bin", "bin_low", "bin_high", "count", "share"]]


def most_uncertain(run: Run, *, layer: int, n: int = 50) -> pd.DataFrame:
    """The `n` decisions at `layer` with the highest normalised entropy (ties: smaller margin): `sample,
    position, step, call, token, top_expert, norm_entropy, margin` and the sample's labels."""
    if n < 1:
        raise InputError(f"n must be ≥ 1, not {n}")
    routers = [r for r in run.info.routers if r.layer == int(layer)]
    if not routers:
        layers = ", ".join(sorted({str(r.layer) for r in run.info.routers}))
        raise InputError(f"run {run.name!r} has no router at layer {layer}; layers: {layers}")
    keys = "sample, position, step, router, call"
    join, token = label_join(run, "token", fact="d")
    labels = "".join(f', s."{c}"' for c in run.label_columns)
    on = " AND ".join(f"top.{k} = d.{k}" for k in keys.split(", "))
    table = sql(
        run,
        f"""WITH d AS (SELECT d.{keys.replace(", ", ", d.")}, d.entropy / ln(greatest(r.n_experts, 2))
                              AS norm_entropy, d.margin
                       FROM decisions d JOIN routers r ON r.id = d.router WHERE d.layer = {int(layer)}
                       ORDER BY norm_entropy DESC, d.margin ASC, d.sample, d.position, d.step, d.call
                       LIMIT {int(n)}),
                top AS (SELECT {keys}, expert AS top_expert FROM assignments
                        WHERE layer = {int(layer)} AND rank = 0)
            SELECT d.sample, d.position, d.step, d.call, {token} AS token, top.top_expert, d.norm_entropy,
                   d.margin{labels}
            FROM d {join.replace("JOIN", "LEFT JOIN", 1)} LEFT JOIN top ON {on}
                 LEFT JOIN samples s ON s.sample = d.sample
            ORDER BY d.norm_entropy DESC, d.margin ASC, d.sample, d.position, d.step, d.call""",
    )
    return table.reset_index(drop=True)
