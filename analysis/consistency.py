"""Consistency between two runs on the same inputs, beyond top-1 agreement and top-k overlap.

Two runs (checkpoints, quantised and full-precision weights, two engines) are matched decision by
decision exactly as `stability.decision_changes` matches them (same sample, position, step, router and
call); that function also says whether the decision's expert *set* changed. On top of it:

- `rank_consistency` (kind `rank-consistency`): per layer, the mean Kendall τ-b between the two runs'
  router score vectors over the E experts of the same decision (`probs`, or the raw `logits`), and the
  share of decisions whose top-k expert set is identical. τ = 1: the runs order every expert alike;
  τ = −1: one run's order is the other's reversed. A decision whose scores are all tied in either run has
  no τ and is left out of the mean (`tau_decisions` counts the rest).
- `boundary_flips` (kind `boundary-flips`): every decision of the first run has a distance to its top-k
  boundary, `boundary_margin` = p₍k₎ − p₍k+1₎ (its k-th largest minus its (k+1)-th largest probability,
  k = the router's top-k; routers with k ≥ E have no boundary and drop out). Decisions are put in
  quantile bins of that margin (`bins`, equal counts where ties allow) and each bin reports the share
  whose expert set differs in the second run (`flip_share`). `spearman` (on every row, also in
  `table.attrs`) is the Spearman rank correlation across bins between mean margin and flip share: −1
  when a larger margin always means fewer flips, i.e. the margin predicts flips perfectly.

The share of tokens whose expert set differs in any layer is `replay` (`replay.routing_replay`, over the
run) and `replay-samples` (`replay.replay_by_sample`, per sample), not repeated here.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .frames import sql
from .stability import KEYS, decision_changes

Score = Literal["probs", "logits"]
CHUNK = 4096
"""Decisions per block when forming the [decisions, E, E] pair signs of Kendall's τ."""


def score_needs(params: dict[str, Any]) -> tuple[str, ...]:
    """Capabilities `rank-consistency` needs: expert ids and the score vectors it compares."""
    return ("ids", str(params.get("score", "probs")))


def kendall_tau(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall τ-b between the rows of `x` and `y` (both [decisions, E]), as `scipy.stats.kendalltau`
    computes it for one pair of vectors; NaN where a row of either is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 2:
        raise InputError(f"score vectors differ in shape: {x.shape} and {y.shape}")
    n = x.shape[1]
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    pairs = n * (n - 1) / 2
    out = np.empty(len(x))
    for start in range(0, len(x), CHUNK):
        sx = np.sign(x[start : start + CHUNK, :, None] - x[start : start + CHUNK, None, :])[:, upper]
        sy = np.sign(y[start : start + CHUNK, :, None] - y[start : start + CHUNK, None, :])[:, upper]
        concordance = (sx * sy).sum(axis=1)
        untied_x = pairs - (sx == 0).sum(axis=1)
        untied_y = pairs - (sy == 0).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = concordance / np.sqrt(untied_x * untied_y)
        out[start : start + CHUNK] = np.where((untied_x > 0) & (untied_y > 0), tau, np.nan)
    return out


def paired_scores(run_a: Run, run_b: Run, score: Score = "probs") -> pd.DataFrame:
    """One row per decision both runs recorded: the keys, `layer`, `score_a` and `score_b` (the two runs'
    `score` vectors), joined to `decision_changes`' `set_changed`."""
    if score not in ("probs", "logits"):
        raise InputError(f"score must be probs or logits, not {score!r}", field="score")
    for run in (run_a, run_b):
        if score not in run.info.caps:
            raise InputError(f"run {run.name!r} has no {score}; record it with probs", field="probs")
    keys = ", ".join(KEYS)
    vectors = sql(
        run_a,
        f"""SELECT {", ".join(f"a.{k}" for k in KEYS)}, a.layer, a.{score} AS score_a, b.{score} AS score_b
            FROM decisions a JOIN other b ON {" AND ".join(f"a.{k} = b.{k}" for k in KEYS)}
            WHERE a.{score} IS NOT NULL AND b.{score} IS NOT NULL ORDER BY {keys}""",
        views={"other": run_b.table_path("decisions")},
    )
    changes = decision_changes(run_a, run_b)[[*KEYS, "set_changed"]]
    table = vectors.merge(changes, on=list(KEYS), how="inner")
    if table.empty:
        raise InputError(f"runs {run_a.name!r} and {run_b.name!r} share no decisions with {score}")
    return table


def _matrix(column: pd.Series) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=float) for v in column]) if len(column) else np.empty((0, 0))


def rank_consistency(run_a: Run, run_b: Run, *, score: Score = "probs") -> pd.DataFrame:
    """`layer, decisions, tau_decisions, mean_tau, min_tau, share_same_set` per layer (see the module
    docstring)."""
    table = paired_scores(run_a, run_b, score)
    rows = []
    for layer, part in table.groupby("layer"):
        a, b = _matrix(part["score_a"]), _matrix(part["score_b"])
        if a.shape != b.shape:
            raise InputError(f"layer {layer}: the runs' {score} vectors have different lengths")
        tau = kendall_tau(a, b)
        valid = tau[~np.isnan(tau)]
        rows.append(
            {
                "layer": int(layer),
                "decisions": len(part),
                "tau_decisions": len(valid),
                "mean_tau": float(valid.mean()) if len(valid) else float("nan"),
                "min_tau": float(valid.min()) if len(valid) else float("nan"),
                "share_same_set": float(1.0 - part["set_changed"].astype(float).mean()),
            }
        )
    return pd.DataFrame(rows)


def boundary_margins(run: Run, scores: pd.DataFrame) -> np.ndarray:
    """p₍k₎ − p₍k+1₎ of each row of `scores` (`router`, `score_a` columns), k the router's top-k; NaN where
    the router has no (k+1)-th expert."""
    top_k = {r.id: r.top_k for r in run.info.routers}
    out = np.full(len(scores), np.nan)
    routers = scores["router"].to_numpy()
    for router in np.unique(routers):
        rows = np.flatnonzero(routers == router)
        p = -np.sort(-_matrix(scores["score_a"].iloc[rows]), axis=1)
        k = top_k.get(int(router), 0)
        if 0 < k < p.shape[1]:
            out[rows] = p[:, k - 1] - p[:, k]
    return out


def boundary_flips(run_a: Run, run_b: Run, *, bins: int = 5, by_layer: bool = False) -> pd.DataFrame:
    """`[layer,] bin, margin_low, margin_high, decisions, mean_margin, flips, flip_share, spearman` per
    quantile bin of the first run's top-k boundary margin (see the module docstring)."""
    if bins < 1:
        raise InputError(f"bins must be at least 1, not {bins}", field="bins")
    table = paired_scores(run_a, run_b, "probs")
    table["margin"] = boundary_margins(run_a, table)
    table = table.dropna(subset=["margin"])
    if table.empty:
        raise InputError("no decision has a top-k boundary (every router chooses all its experts)")
    groups = [(int(layer), part) for layer, part in table.groupby("layer")] if by_layer else [(None, table)]
    parts = []
    for layer, part in groups:
        binned = _bin(part, bins)
        if layer is not None:
            binned.insert(0, "layer", layer)
        parts.append(binned)
    out = pd.concat(parts, ignore_index=True)
    if not by_layer:
        out.attrs["spearman"] = float(out["spearman"].iloc[0])
    return out


def _bin(part: pd.DataFrame, bins: int) -> pd.DataFrame:
    codes, edges = pd.qcut(part["margin"], q=bins, labels=False, retbins=True, duplicates="drop")
    if len(edges) < 2:  # every margin equal: one bin
        codes, edges = pd.Series(0, index=part.index), np.array([edges[0], edges[0]])
    grouped = (
        part.assign(bin=codes.to_numpy(dtype=int), flip=part["set_changed"].astype(float))
        .groupby("bin")
        .agg(decisions=("flip", "size"), mean_margin=("margin", "mean"), flips=("flip", "sum"))
        .reset_index()
    )
    grouped.insert(1, "margin_low", edges[grouped["bin"].to_numpy()])
    grouped.insert(2, "margin_high", edges[grouped["bin"].to_numpy() + 1])
    grouped["flips"] = grouped["flips"].astype("int64")
    grouped["flip_share"] = grouped["flips"] / grouped["decisions"]
    grouped["spearman"] = _spearman(grouped["mean_margin"].to_numpy(), grouped["flip_share"].to_numpy())
    return grouped


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    from scipy.stats import spearmanr  # here, so that importing the analyses stays free of scipy

    return float(spearmanr(x, y).statistic)
