"""Bootstrap confidence intervals over units of independence for the headline scores.

The resampled unit is the run's unit of independence (`units.py`): the input sequence for text runs and
the generated image — both classifier-free-guidance branches together, the `pair` label — for diffusion
runs, or a unit the caller names (`unit="document"`). Tokens of one sequence are not independent, nor are
the two branches of one image: resampling them apart makes intervals too narrow. `bootstrap_ci` aggregates
per-sample sufficient statistics once in DuckDB (expert counts, label × expert counts, entropy sums,
repeat counts), sums them per unit, then draws `n_boot` resamples of the units with replacement as
multinomial weight vectors and recomputes the metric from the weighted sums — no second pass over the
data. `estimate` is the metric on the run itself, equal to the matching analysis
function's value; `bias` = mean of the resampled values − estimate. The interval at `level` is the
percentile interval (Efron & Tibshirani 1993, §13.3) or, with `method="basic"`, the basic interval
[2·estimate − q_hi, 2·estimate − q_lo], which corrects a bias the resampling itself adds: plug-in mutual
information grows when samples repeat, so NMI over a many-valued label (token_id) can have its estimate
below the percentile interval — read `bias` and use `basic` there.

Kinds and metrics: `balance` → max_over_mean, cv, norm_entropy, gini (and aux_loss on runs recorded
with probabilities); `nmi` (needs `label`) → nmi;
`uncertainty` → mean_entropy, mean_margin, uncertain_share (normalised-entropy `threshold`); `repeat` →
top1_repeat (the neighbouring tokens `repeat_rate` pairs: `sequence.neighbour_pairs_sql`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .frames import label_join, load_entropy, norm_entropy_sql, sql
from .information import nmi as nmi_of
from .sequence import neighbour_pairs_sql
from .uncertainty import DEFAULT_THRESHOLD
from .units import unit_codes, unit_name

KINDS = ("balance", "nmi", "uncertainty", "repeat")
COLUMNS = ["layer", "metric", "estimate", "lo", "hi", "bias", "n_boot", "level", "unit", "n_units"]
METHODS = ("percentile", "basic")
BATCH = 64
"""Resamples evaluated at once: bounds memory to BATCH × (statistics per sample) floats."""


def _balance_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Balance metrics of each row of `[B, E]` expert counts (as in `balance`)."""
    n = counts.shape[1]
    total = counts.sum(axis=1, keepdims=True)
    load = counts / np.maximum(total, 1e-300)
    mean = counts.mean(axis=1)
    gini = np.abs(counts[:, :, None] - counts[:, None, :]).sum(axis=(1, 2)) / (
        2 * n**2 * np.maximum(mean, 1e-300)
    )
    return {
        "max_over_mean": load.max(axis=1) * n,
        "cv": counts.std(axis=1) / np.maximum(mean, 1e-300),
        "norm_entropy": load_entropy(load, axis=1),
        "gini": gini,
    }


def _nmi_rows(joint: np.ndarray, n_labels: int) -> dict[str, np.ndarray]:
    """NMI (arithmetic normalisation) of each row of `[B, L·E]` label × expert counts."""
    return {"nmi": nmi_of(joint.reshape(len(joint), n_labels, -1))}


def _ratio_metrics(names: dict[str, tuple[int, int]]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Metrics that are a ratio of two summed statistics: name → (numerator column, denominator column)."""

    def metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
        return {name: sums[:, a] / np.maximum(sums[:, b], 1e-300) for name, (a, b) in names.items()}

    return metrics


def _per_sample(run: Run, kind: str, label: str | None, threshold: float) -> tuple[pd.DataFrame, int, int]:
    """Per-sample sufficient statistics as a long table `layer, sample, stat, value`, the number of
    statistics per sample (`stat` < it) and, for nmi, the number of label values."""
    n_experts = max(r.n_experts for r in run.info.routers)
    if kind == "balance":
        table = sql(
            run,
            """SELECT layer, sample, expert AS stat, count(*) AS value FROM assignments
               WHERE NOT dropped GROUP BY ALL""",
        )
        if not run.info.probs:
            return table, n_experts, 1
        probs = sql(  # per sample: Σ probabilities per expert (columns E … 2E−1) and decisions (column 2E)
            run,
            """SELECT layer, sample, expert, sum(p) AS value, count(*) AS n FROM (
                   SELECT layer, sample, unnest(range(len(probs))) AS expert, unnest(probs) AS p
                   FROM decisions) GROUP BY ALL""",
        )
        decisions = probs[probs["expert"] == 0][["layer", "sample", "n"]].rename(columns={"n": "value"})
        return (
            pd.concat(
                [
                    table,
                    probs.assign(stat=probs["expert"] + n_experts)[["layer", "sample", "stat", "value"]],
                    decisions.assign(stat=2 * n_experts),
                ],
                ignore_index=True,
            ),
            2 * n_experts + 1,
            1,
        )
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
                       sum(CASE WHEN {norm_entropy_sql()} >= {float(threshold)} THEN 1 ELSE 0 END)
                           AS uncertain
                FROM decisions d JOIN routers r ON r.id = d.router GROUP BY ALL""",
        )
        long = table.melt(id_vars=["layer", "sample"], var_name="stat_name", value_name="value")
        codes = {"n": 0, "entropy": 1, "margin": 2, "uncertain": 3}
        return long.assign(stat=long["stat_name"].map(codes)), len(codes), 1
    if kind == "repeat":
        pairs, _ = neighbour_pairs_sql(run)
        table = sql(
            run,
            f"""WITH {pairs}
               SELECT layer, sample, count(*) AS pairs,
                      sum(CASE WHEN expert_a = expert_b THEN 1 ELSE 0 END) AS repeats
               FROM pairs GROUP BY ALL""",
        )
        long = table.melt(id_vars=["layer", "sample"], var_name="stat_name", value_name="value")
        codes = {"pairs": 0, "repeats": 1}
        return long.assign(stat=long["stat_name"].map(codes)), len(codes), 1
    raise InputError(f"no bootstrap for {kind!r}; choose from {', '.join(KINDS)}")


def _balance_with_aux(n_experts: int) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Balance metrics of the count columns, and the Switch auxiliary loss E · Σ_e load_e · P_e from the
    probability sums and decision counts that follow them."""

    def metrics(stats: np.ndarray) -> dict[str, np.ndarray]:
        counts = stats[:, :n_experts]
        out = _balance_metrics(counts)
        load = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-300)
        mean_prob = stats[:, n_experts : 2 * n_experts] / np.maximum(
            stats[:, 2 * n_experts : 2 * n_experts + 1], 1
        )
        out["aux_loss"] = n_experts * (load * mean_prob).sum(axis=1)
        return out

    return metrics


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
    unit: str | None = None,
) -> pd.DataFrame:
    """`layer, metric, estimate, lo, hi, bias, n_boot, level, unit, n_units`: bootstrap intervals over the
    run's units of independence (`unit` overrides the run's own)."""
    if method not in METHODS:
        raise InputError(f"unknown interval method {method!r}; choose from {', '.join(METHODS)}")
    if kind not in KINDS:
        raise InputError(f"no bootstrap for {kind!r}; choose from {', '.join(KINDS)}")
    if n_boot < 10 or not 0 < level < 1:
        raise InputError("n_boot must be ≥ 10 and level between 0 and 1 (e.g. 0.95)")
    stats, width, n_labels = _per_sample(run, kind, label, threshold)
    unit_label = unit_name(run, unit)
    codes = unit_codes(run, unit_label)
    stats["unit"] = stats["sample"].map(dict(zip(codes["sample"], codes["unit"], strict=True)))
    rng = np.random.default_rng(seed)
    units = np.sort(stats["unit"].unique())
    weights = rng.multinomial(len(units), np.full(len(units), 1 / len(units)), size=n_boot)
    rows = []
    for layer, part in stats.groupby("layer", sort=True):
        matrix = np.zeros((len(units), width))
        index = np.searchsorted(units, part["unit"].to_numpy())
        np.add.at(matrix, (index, part["stat"].to_numpy(dtype=int)), part["value"].to_numpy(dtype=float))
        metric = _metric_function(kind, n_labels)
        if kind == "balance":
            n_experts = max(r.n_experts for r in run.info.routers if r.layer == int(layer))
            if width > n_experts + 1:  # probability sums follow the counts: aux loss too
                full = width // 2
                matrix = np.concatenate(
                    [matrix[:, :n_experts], matrix[:, full : full + n_experts], matrix[:, 2 * full :]], axis=1
                )
                metric = _balance_with_aux(n_experts)
            else:
                matrix = matrix[:, :n_experts]
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
                    "unit": unit_label,
                    "n_units": len(units),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def unit_interval(
    per_unit: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, lo, hi): a percentile bootstrap interval of `statistic` over units. `per_unit` is a
    `[U, C]` matrix of additive per-unit statistics (counts, sums); `statistic` maps a `[B, C]` batch of
    their (weighted) sums to `[B]` values. Units are resampled with replacement as multinomial weights."""
    if n_boot < 10 or not 0 < level < 1:
        raise InputError("n_boot must be ≥ 10 and level between 0 and 1 (e.g. 0.95)")
    per_unit = np.asarray(per_unit, dtype=np.float64)
    n_units = len(per_unit)
    estimate = float(statistic(per_unit.sum(axis=0, keepdims=True))[0])
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=n_boot).astype(np.float64)
    draws = np.concatenate([statistic(weights[s : s + BATCH] @ per_unit) for s in range(0, n_boot, BATCH)])
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return estimate, float(lo), float(hi)
