"""Bootstrap confidence intervals over samples for the headline scores.

Samples (input sequences, or generated images with their CFG pair) are the independent units: tokens of
one sequence are not. `bootstrap_ci` aggregates per-sample sufficient statistics once in DuckDB (expert
counts, label × expert counts, entropy sums, repeat counts), then draws `n_boot` resamples of the samples
with replacement as multinomial weight vectors and recomputes the metric from the weighted sums — no
second pass over the data. `estimate` is the metric on the run itself, equal to the matching analysis
function's value; `bias` = mean of the resampled values − estimate. The interval at `level` is the
percentile interval (Efron & Tibshirani 1993, §13.3) or, with `method="basic"`, the basic interval
[2·estimate − q_hi, 2·estimate − q_lo], which corrects a bias the resampling itself adds: plug-in mutual
information grows when samples repeat, so NMI over a many-valued label (token_id) can have its estimate
below the percentile interval — read `bias` and use `basic` there.

Kinds and metrics: `balance` → max_over_mean, cv, norm_entropy, gini; `nmi` (needs `label`) → nmi;
`uncertainty` → mean_entropy, mean_margin, uncertain_share (normalised-entropy `threshold`); `repeat` →
top1_repeat.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from routescope.hooks import InputError, Run

from .frames import label_join, sql
from .uncertainty import DEFAULT_THRESHOLD

KINDS = ("balance", "nmi", "uncertainty", "repeat")
COLUMNS = ["layer", "metric", "estimate", "lo", "hi", "bias", "n_boot", "level"]
METHODS = ("percentile", "basic")
BATCH = 64
"""Resamples evaluated at once: bounds memory to BATCH × (statistics per sample) floats."""


def _balance_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Balance metrics of each row of `[B, E]` expert counts (as in `balance`)."""
    n = counts.shape[1]
    total = counts.sum(axis=1, keepdims=True)
    load = counts / np.maximum(total, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(load > 0, load * np.log(load), 0.0).sum(axis=1)
    mean = counts.mean(axis=1)
    gini = np.abs(counts[:, :, None] - counts[:, None, :]).sum(axis=(1, 2)) / (
        2 * n**2 * np.maximum(mean, 1e-300)
    )
    return {
        "max_over_mean": load.max(axis=1) * n,
        "cv": counts.std(axis=1) / np.maximum(mean, 1e-300),
        "norm_entropy": entropy / np.log(n) if n > 1 else np.ones(len(counts)),
        "gini": gini,
    }


def _nmi_rows(joint: np.ndarray, n_labels: int) -> dict[str, np.ndarray]:
    """NMI (arithmetic normalisation) of each row of `[B, L·E]` label × expert counts."""
    counts = joint.reshape(len(joint), n_labels, -1)
    p = counts / np.maximum(counts.sum(axis=(1, 2), keepdims=True), 1e-300)
    p_label, p_expert = p.sum(axis=2), p.sum(axis=1)
    outer = p_label[:, :, None] * p_expert[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        mutual = np.where(p > 0, p * np.log(p / outer), 0.0).sum(axis=(1, 2))
        h_label = -np.where(p_label > 0, p_label * np.log(p_label), 0.0).sum(axis=1)
        h_expert = -np.where(p_expert > 0, p_expert * np.log(p_expert), 0.0).sum(axis=1)
    denominator = (h_label + h_expert) / 2
    return {"nmi": np.where(denominator > 0, mutual / np.maximum(denominator, 1e-300), 0.0)}


def _ratio_metrics(names: dict[str, tuple[int, int]]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Metrics that are a ratio of two summed statistics: name → (numerator column, denominator column)."""

    def metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
        return {name: sums[:, a] / np.maximum(sums[:, b], 1e-300) for name, (a, b) in names.items()}

    return metrics


def _per_sample(run: Run, kind: str, label: str | None, threshold: float) -> tuple[pd.DataFrame, int, int]:
    """Per-sample sufficient statistics as a long table `layer, sample, stat, value`, the number of
    statistics per sample (`stat` < it) and, for nmi, the number of label values."""
    n_experts = max(int(r["n_experts"]) for r in run.routers)
    if kind == "balance":
        table = sql(
            run,
            """SELECT layer, sample, expert AS stat, count(*) AS value FROM assignments
               WHERE NOT dropped GROUP BY ALL""",
        )
        return table, n_experts, 1
    if kind == "nmi":
        if not label:
            raise InputError("bootstrap of nmi needs a label (e.g. domain, class, token_id)")
        join, expr = label_join(run, label)
        table = sql(
            run,
            f"""SELECT a.layer, a.sample, CAST({expr} AS VARCHAR) AS value_label, a.expert,
                       count(*) AS value FROM assignments a {join} WHERE NOT a.dropped GROUP BY ALL""",
        )
        codes = {v: i for i, v in enumerate(sorted(table["value_label"].astype(str).unique()))}
        table["stat"] = table["value_label"].astype(str).map(codes) * n_experts + table["expert"]
        return table[["layer", "sample", "stat", "value"]], len(codes) * n_experts, len(codes)
    if kind == "uncertainty":
        table = sql(
            run,
            f"""SELECT d.layer, d.sample, count(*) AS n, sum(d.entropy) AS entropy, sum(d.margin) AS margin,
                       sum(CASE WHEN d.entropy / ln(r.n_experts) >= {float(threshold)} THEN 1 ELSE 0 END)
                           AS uncertain
                FROM decisions d JOIN routers r ON r.id = d.router GROUP BY ALL""",
        )
        long = table.melt(id_vars=["layer", "sample"], var_name="stat_name", value_name="value")
        codes = {"n": 0, "entropy": 1, "margin": 2, "uncertain": 3}
        return long.assign(stat=long["stat_name"].map(codes)), len(codes), 1
    if kind == "repeat":
        table = sql(
            run,
            """WITH top AS (SELECT sample, position, router, call, layer, expert FROM assignments
                            WHERE rank = 0 AND NOT dropped)
               SELECT a.layer, a.sample, count(*) AS pairs,
                      sum(CASE WHEN a.expert = b.expert THEN 1 ELSE 0 END) AS repeats
               FROM top a JOIN top b ON b.sample = a.sample AND b.router = a.router AND b.call = a.call
                                     AND b.position = a.position + 1
               GROUP BY ALL""",
        )
        long = table.melt(id_vars=["layer", "sample"], var_name="stat_name", value_name="value")
        codes = {"pairs": 0, "repeats": 1}
        return long.assign(stat=long["stat_name"].map(codes)), len(codes), 1
    raise InputError(f"no bootstrap for {kind!r}; choose from {', '.join(KINDS)}")


def _metric_function(kind: str, n_labels: int) -> Callable[[np.ndarray], dict]:
    if kind == "balance":
        return _balance_metrics
    if kind == "nmi":
        return lambda joint: _nmi_rows(joint, n_labels)
    if kind == "uncertainty":
        return _ratio_metrics({"mean_entropy": (1, 0), "mean_margin": (2, 0), "uncertain_share": (3, 0)})
    return _ratio_metrics({"top1_repeat": (1, 0)})


def bootstrap_ci(
    run: Run,
    kind: str,
    label: str | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    method: str = "percentile",
) -> pd.DataFrame:
    """`layer, metric, estimate, lo, hi, bias, n_boot, level`: bootstrap intervals over samples."""
    if method not in METHODS:
        raise InputError(f"unknown interval method {method!r}; choose from {', '.join(METHODS)}")
    if kind not in KINDS:
        raise InputError(f"no bootstrap for {kind!r}; choose from {', '.join(KINDS)}")
    if n_boot < 10 or not 0 < level < 1:
        raise InputError("n_boot must be ≥ 10 and level between 0 and 1 (e.g. 0.95)")
    stats, width, n_labels = _per_sample(run, kind, label, threshold)
    rng = np.random.default_rng(seed)
    samples = np.sort(stats["sample"].unique())
    weights = rng.multinomial(len(samples), np.full(len(samples), 1 / len(samples)), size=n_boot)
    rows = []
    for layer, part in stats.groupby("layer", sort=True):
        matrix = np.zeros((len(samples), width))
        index = np.searchsorted(samples, part["sample"].to_numpy())
        np.add.at(matrix, (index, part["stat"].to_numpy(dtype=int)), part["value"].to_numpy(dtype=float))
        if kind == "balance":
            n_experts = max(int(r["n_experts"]) for r in run.routers if int(r["layer"]) == int(layer))
            matrix = matrix[:, :n_experts]
        metric = _metric_function(kind, n_labels)
        estimate = metric(matrix.sum(axis=0, keepdims=True))
        draws: dict[str, list[np.ndarray]] = {name: [] for name in estimate}
        for start in range(0, n_boot, BATCH):
            for name, values in metric(weights[start : start + BATCH] @ matrix).items():
                draws[name].append(values)
        for name, value in estimate.items():
            values = np.concatenate(draws[name])
            lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
            if method == "basic":
                lo, hi = 2 * value[0] - hi, 2 * value[0] - lo
            rows.append(
                {
                    "layer": int(layer),
                    "metric": name,
                    "estimate": float(value[0]),
                    "lo": float(lo),
                    "hi": float(hi),
                    "bias": float(values.mean() - value[0]),
                    "n_boot": n_boot,
                    "level": level,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)
