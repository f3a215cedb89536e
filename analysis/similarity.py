"""Expert similarity and merge groups (MC-SMoE, "Merge, Then Compress").

MC-SMoE groups redundant experts by router-logit similarity: the cosine between two experts' columns of
router scores over calibration tokens, mapped to (cos + 1) / 2. RouteScope uses the recorded `probs`
columns (the distribution the router chose from; a monotone map of the logits for softmax routers), so
runs must be recorded with `probs=True`. `usage` is each expert's share of top-1 choices (MC-SMoE's usage
frequency); `merge_groups` clusters experts (average linkage on 1 − similarity) into `n_groups` and names
each group's most used expert as the one to keep.

`basis="coactivation"` needs no probabilities: the similarity of a and b is the cosine of their
chosen/not-chosen indicators over the layer's decisions, count(a, b) / √(count(a) · count(b)) (the Ochiai
coefficient; 1 on the diagonal), built from the same counts as `coactivation`. Experts that are chosen
together are candidates to merge in the other sense: they duplicate each other's slot in the top-k.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.hooks import InputError, Run

from .coactivation import coactivation
from .frames import sql

BASES = ("router", "coactivation")

MAX_DECISIONS = 200_000


def _probs(run: Run, layer: int, max_decisions: int) -> np.ndarray:
    if not run.manifest.get("options", {}).get("probs"):
        raise InputError(f"run {run.name!r} was recorded without probabilities; re-record it with --probs")
    frame = sql(run, f"SELECT probs FROM decisions WHERE layer = {int(layer)} LIMIT {int(max_decisions)}")
    if frame.empty:
        raise InputError(f"run {run.name!r} has no decisions at layer {layer}")
    return np.stack(frame["probs"].to_numpy()).astype(np.float64)


def _coactivation_similarity(run: Run, layer: int) -> np.ndarray:
    pairs = coactivation(run, layer)
    n_experts = max(int(r["n_experts"]) for r in run.routers if int(r["layer"]) == int(layer))
    singles = sql(
        run,
        f"SELECT expert, count(*) AS n FROM assignments WHERE layer = {int(layer)} AND NOT dropped "
        "GROUP BY expert",
    )
    count = np.zeros(n_experts)
    count[singles["expert"].to_numpy()] = singles["n"].to_numpy()
    joint = np.zeros((n_experts, n_experts))
    joint[pairs["expert_a"].to_numpy(), pairs["expert_b"].to_numpy()] = pairs["count"].to_numpy()
    similarity = joint / np.sqrt(np.outer(count, count)).clip(min=1e-30)
    np.fill_diagonal(similarity, 1.0)
    return similarity


def expert_similarity(
    run: Run, layer: int, basis: str = "router", max_decisions: int = MAX_DECISIONS
) -> pd.DataFrame:
    """`expert_a, expert_b, similarity` at `layer`: with `basis="router"` (cos + 1) / 2 of the experts'
    router-score columns over the first `max_decisions` decisions (needs `probs`); with
    `basis="coactivation"` the Ochiai coefficient of their co-activation (see the module docstring)."""
    if basis not in BASES:
        raise InputError(f"unknown similarity basis {basis!r}; choose from {', '.join(BASES)}")
    if basis == "coactivation":
        similarity = _coactivation_similarity(run, layer)
    else:
        probs = _probs(run, layer, max_decisions)
        norms = np.linalg.norm(probs, axis=0)
        similarity = ((probs.T @ probs) / np.outer(norms, norms).clip(min=1e-30) + 1) / 2
    a, b = np.meshgrid(np.arange(similarity.shape[0]), np.arange(similarity.shape[0]), indexing="ij")
    return pd.DataFrame({"expert_a": a.ravel(), "expert_b": b.ravel(), "similarity": similarity.ravel()})


def merge_groups(
    run: Run, layer: int, n_groups: int, basis: str = "router", max_decisions: int = MAX_DECISIONS
) -> pd.DataFrame:
    """`expert, usage, group, keep`: experts clustered by similarity (`basis` as in `expert_similarity`);
    `keep` marks each group's most used expert (MC-SMoE merges the others into it)."""
    table = expert_similarity(run, layer, basis, max_decisions)
    n_experts = int(table["expert_a"].max()) + 1
    if not 1 <= n_groups <= n_experts:
        raise InputError(f"n_groups must be between 1 and {n_experts}")
    similarity = table["similarity"].to_numpy().reshape(n_experts, n_experts)
    from sklearn.cluster import AgglomerativeClustering  # scikit-learn loads only when clustering

    groups = AgglomerativeClustering(
        n_clusters=n_groups, metric="precomputed", linkage="average"
    ).fit_predict(1.0 - similarity)
    top1 = sql(
        run,
        f"SELECT expert, count(*) AS n FROM assignments WHERE layer = {int(layer)} AND rank = 0 "
        "AND NOT dropped GROUP BY expert",
    )
    usage = np.zeros(n_experts)
    usage[top1["expert"].to_numpy()] = top1["n"].to_numpy()
    usage = usage / max(usage.sum(), 1)
    out = pd.DataFrame({"expert": np.arange(n_experts), "usage": usage, "group": groups})
    out["keep"] = out["usage"] == out.groupby("group")["usage"].transform("max")
    out["keep"] &= ~out.duplicated(["group", "keep"]) | ~out["keep"]  # one keeper per group on ties
    return out
