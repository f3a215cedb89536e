"""Per-decision uncertainty views: each decision with its normalised entropy, their histograms, and the
most uncertain decisions of a layer.

`uncertainty` and `uncertainty_by_label` average over decisions; figures and the dashboard also draw the
distribution and list the extremes. These are registered views (`registry.VIEWS`), so the CLI's figures
and the dashboard compute them the same way. The histograms and the top-n bin and sort in DuckDB, so a
run of millions of decisions returns a few hundred rows; normalised entropy is `frames.norm_entropy_sql`.
"""

from __future__ import annotations

import pandas as pd

from routescope.store import InputError, Run

from .frames import label_join, norm_entropy, norm_entropy_sql, sql

HISTOGRAM_VALUES = {
    "norm_entropy": norm_entropy_sql(),
    "margin": "d.margin",
    "max_prob": "d.max_prob",
}
"""Per-decision values in [0, 1] that `decision_histogram` bins, as SQL over `decisions d`, `routers r`."""


def _check_layer(run: Run, layer: int) -> None:
    if not any(r.layer == int(layer) for r in run.info.routers):
        layers = ", ".join(sorted({str(r.layer) for r in run.info.routers}))
        raise InputError(f"run {run.name!r} has no router at layer {layer}; layers: {layers}")


def decision_entropy(run: Run, by: str | None = None, layer: int | None = None) -> pd.DataFrame:
    """Every decision (of one `layer` if given): `sample, position, step, router, call, layer, entropy,
    margin, norm_entropy` (= entropy / ln E), with the sample label `by` joined when not a column already."""
    columns = ["sample", "position", "step", "router", "call", "layer", "entropy", "margin"]
    table = run.decisions(columns=columns)
    sizes = {r.id: r.n_experts for r in run.info.routers}
    table["norm_entropy"] = norm_entropy(table["entropy"], table["router"].map(sizes))
    if layer is not None:
        _check_layer(run, layer)
        table = table[table["layer"] == int(layer)]
    if by and by not in table.columns:
        if by not in run.label_columns:
            choices = ", ".join(["layer", "step", "position", *run.label_columns])
            raise InputError(f"run {run.name!r} has no label {by!r} for this figure; labels: {choices}")
        table = table.merge(run.samples(columns=["sample", by]), on="sample", how="left")
    return table


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
    _check_layer(run, layer)
    keys = "sample, position, step, router, call"
    join, token = label_join(run, "token", fact="d")
    labels = "".join(f', s."{c}"' for c in run.label_columns)
    on = " AND ".join(f"top.{k} = d.{k}" for k in keys.split(", "))
    table = sql(
        run,
        f"""WITH d AS (SELECT d.{keys.replace(", ", ", d.")}, {norm_entropy_sql()} AS norm_entropy, d.margin
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
