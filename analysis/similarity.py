"""Expert similarity and merge groups (MC-SMoE, "Merge, Then Compress").

MC-SMoE groups redundant experts by router-logit similarity: the cosine between two experts' columns of
router logits over calibration tokens, mapped to (cos + 1) / 2. `basis="router"` (the default) does exactly
that on the recorded `logits` column (the raw scores before softmax, or before sigmoid for sigmoid routers),
so runs must be recorded with `probs=True` / `--probs` (which stores `logits` too). `basis="probs"` takes
the cosine of the recorded `probs` columns instead (the normalised distribution; the only router basis of
runs recorded before `logits` was stored).

`merge_groups(method="mc-smoe")` (the default) is MC-SMoE's grouping: `usage` is each expert's share of
all router choices over every one of the k slots (MC-SMoE counts the top-k of the logits for Mixtral, the
top-1 for Switch, which is the same count for k = 1); the `n_groups` most used experts are the group cores
("dominant experts"), and every other expert joins the core it is most similar to. `keep` marks the core.
Ties: usage ties are broken by the lower expert id (a stable sort on descending usage); an expert equally
similar to several cores joins the most used of them (then the lower id). Group labels number the cores by
usage rank (group 0 = the most used expert). `method="average"` instead clusters experts (average linkage
on 1 − similarity) into `n_groups` and keeps each group's most used expert (lower id on ties).

`basis="outputs"` compares what the experts compute rather than how the router scores them (the output
side of HC-SMoE-style merging): (cos + 1) / 2 between the experts' mean output vectors over the same
calibration tokens — every real token of the run through every expert of the layer, before any gate
(`record(expert_means=True)`, the `expert_means` table: mean = Σ output_sum / Σ tokens over its rows). The
same (cos + 1) / 2 map as the router basis keeps one scale for the `similarity` kind.

`basis="coactivation"` needs no probabilities: the similarity of a and b is the cosine of their
chosen/not-chosen indicators over the layer's decisions, count(a, b) / √(count(a) · count(b)) (the Ochiai
coefficient; 1 on the diagonal), built from the same counts as `coactivation`. Experts that are chosen
together are candidates to merge in the other sense: they duplicate each other's slot in the top-k.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from routescope.store import InputError, Run
from routescope.store.capabilities import require_recorded

from .coactivation import coactivation
from .frames import sql

Basis = Literal["router", "probs", "outputs", "coactivation"]
Method = Literal["mc-smoe", "average"]
BASES: tuple[Basis, ...] = ("router", "probs", "outputs", "coactivation")
METHODS: tuple[Method, ...] = ("mc-smoe", "average")

MAX_DECISIONS = 200_000


def _score_columns(run: Run, layer: int, column: str, max_decisions: int) -> np.ndarray:
    """[decisions, E] of the recorded `probs` or `logits` at `layer` (the first `max_decisions` rows)."""
    if not run.info.probs:
        raise InputError(
            f"run {run.name!r} was recorded without probabilities; re-record it with them "
            '(or use basis="coactivation")',
            field="probs",
        )
    if column == "logits" and not run.info.logits:
        raise InputError(
            f"run {run.name!r} has no router logits (recorded before RouteScope stored them); re-record it "
            'with probabilities, or use basis="probs" for the similarity of its probabilities',
            field="probs",
        )
    frame = sql(
        run,
        f"SELECT {column} FROM decisions WHERE layer = {int(layer)} AND {column} IS NOT NULL "
        f"LIMIT {int(max_decisions)}",
    )
    if frame.empty:
        raise InputError(f"run {run.name!r} has no decisions with {column} at layer {layer}")
    return np.stack(frame[column].to_numpy()).astype(np.float64)


def _cosine_similarity(columns: np.ndarray) -> np.ndarray:
    """(cos + 1) / 2 between the columns of a [decisions, E] matrix (MC-SMoE's similarity map)."""
    norms = np.linalg.norm(columns, axis=0)
    return ((columns.T @ columns) / np.outer(norms, norms).clip(min=1e-30) + 1) / 2


def similarity_needs(params: dict[str, object]) -> tuple[str, ...]:
    """What `similarity` and `merge-groups` need: mean expert outputs for `basis="outputs"`, else ids."""
    return ("ids", "expert_means") if params.get("basis") == "outputs" else ("ids",)


def mean_outputs(run: Run, layer: int) -> np.ndarray:
    """`[E, H]` float64: each expert's mean output at `layer` over the run's tokens (Σ output_sum / Σ tokens
    over the `expert_means` rows of the layer's routers)."""
    require_recorded(run.info.caps, ("expert_means",))
    frame = run.expert_means()
    frame = frame[frame["layer"] == int(layer)]
    if frame.empty:
        raise InputError(f"run {run.name!r} has no mean expert outputs at layer {layer}")
    n_experts = _n_experts(run, layer)
    sums = np.zeros((n_experts, len(frame["output_sum"].iloc[0])))
    tokens = np.zeros(n_experts)
    for expert, count, total in zip(frame["expert"], frame["tokens"], frame["output_sum"], strict=True):
        sums[int(expert)] += np.asarray(total, dtype=np.float64)
        tokens[int(expert)] += int(count)
    return sums / tokens.clip(min=1)[:, None]


def _coactivation_similarity(run: Run, layer: int) -> np.ndarray:
    pairs = coactivation(run, layer)
    n_experts = _n_experts(run, layer)
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


def _n_experts(run: Run, layer: int) -> int:
    sizes = [r.n_experts for r in run.info.routers if r.layer == int(layer)]
    if not sizes:
        raise InputError(f"run {run.name!r} has no router at layer {layer}")
    return max(sizes)


def _similarity_matrix(run: Run, layer: int, basis: str, max_decisions: int) -> np.ndarray:
    if basis not in BASES:
        raise InputError(f"unknown similarity basis {basis!r}; choose from {', '.join(BASES)}")
    if basis == "coactivation":
        return _coactivation_similarity(run, layer)
    if basis == "outputs":
        return _cosine_similarity(mean_outputs(run, layer).T)
    column = "logits" if basis == "router" else "probs"
    return _cosine_similarity(_score_columns(run, layer, column, max_decisions))


def expert_similarity(
    run: Run, layer: int, basis: Basis = "router", max_decisions: int = MAX_DECISIONS
) -> pd.DataFrame:
    """`expert_a, expert_b, similarity` at `layer`: with `basis="router"` (cos + 1) / 2 of the experts'
    router-logit columns over the first `max_decisions` decisions (MC-SMoE; needs `logits`, stored by
    `--probs`); `basis="probs"` the same on the `probs` columns; `basis="outputs"` (cos + 1) / 2 of their
    mean outputs on the same tokens (needs `expert_means`); `basis="coactivation"` the Ochiai coefficient
    of their co-activation (see the module docstring)."""
    similarity = _similarity_matrix(run, layer, basis, max_decisions)
    a, b = np.meshgrid(np.arange(similarity.shape[0]), np.arange(similarity.shape[0]), indexing="ij")
    return pd.DataFrame({"expert_a": a.ravel(), "expert_b": b.ravel(), "similarity": similarity.ravel()})


def _usage(run: Run, layer: int, n_experts: int) -> np.ndarray:
    """Each expert's share of the router's choices at `layer`, over all k slots (dropped tokens count:
    the router chose the expert), as MC-SMoE counts the top-k of the router logits."""
    counts = sql(
        run, f"SELECT expert, count(*) AS n FROM assignments WHERE layer = {int(layer)} GROUP BY expert"
    )
    usage = np.zeros(n_experts)
    usage[counts["expert"].to_numpy()] = counts["n"].to_numpy()
    return usage / max(usage.sum(), 1)


def mc_smoe_groups(usage: np.ndarray, similarity: np.ndarray, n_groups: int) -> np.ndarray:
    """MC-SMoE's grouping: the `n_groups` most used experts are the cores (group i = the i-th most used,
    usage ties to the lower id); every other expert joins its most similar core (ties to the more used
    core). Returns each expert's group label."""
    order = np.argsort(-usage, kind="stable")
    cores = order[:n_groups]
    groups = np.empty(len(usage), dtype=np.int64)
    groups[cores] = np.arange(n_groups)
    others = order[n_groups:]
    if len(others):
        groups[others] = np.argmax(similarity[np.ix_(others, cores)], axis=1)  # first max = more used core
    return groups


def _average_groups(similarity: np.ndarray, n_groups: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering  # scikit-learn loads only when clustering

    return AgglomerativeClustering(n_clusters=n_groups, metric="precomputed", linkage="average").fit_predict(
        1.0 - similarity
    )


def merge_groups(
    run: Run,
    layer: int,
    n_groups: int,
    basis: Basis = "router",
    max_decisions: int = MAX_DECISIONS,
    method: Method = "mc-smoe",
) -> pd.DataFrame:
    """`expert, usage, group, keep`: experts grouped by similarity (`basis` as in `expert_similarity`).
    `method="mc-smoe"`: the `n_groups` most used experts are the cores and every other expert joins its most
    similar core; `method="average"`: average-linkage clustering on 1 − similarity. `keep` marks the expert
    MC-SMoE merges the others of its group into (the core; for `average` the group's most used expert).
    Tie rules in the module docstring."""
    if method not in METHODS:
        raise InputError(f"unknown merge method {method!r}; choose from {', '.join(METHODS)}")
    similarity = _similarity_matrix(run, layer, basis, max_decisions)
    n_experts = similarity.shape[0]
    if not 1 <= n_groups <= n_experts:
        raise InputError(f"n_groups must be between 1 and {n_experts}")
    usage = _usage(run, layer, n_experts)
    if method == "mc-smoe":
        groups = mc_smoe_groups(usage, similarity, n_groups)
        keep = np.zeros(n_experts, dtype=bool)
        keep[np.argsort(-usage, kind="stable")[:n_groups]] = True
        return pd.DataFrame({"expert": np.arange(n_experts), "usage": usage, "group": groups, "keep": keep})
    groups = _average_groups(similarity, n_groups)
    out = pd.DataFrame({"expert": np.arange(n_experts), "usage": usage, "group": groups})
    out["keep"] = out["usage"] == out.groupby("group")["usage"].transform("max")
    out["keep"] &= ~out.duplicated(["group", "keep"]) | ~out["keep"]  # one keeper per group on ties
    return out


def merge_budget(run: Run, average_groups: int) -> dict[int, int]:
    """Groups per layer when the model keeps `average_groups` experts per layer on average and the budget
    is shared across layers, as MC-SMoE's global grouping does (its default for Mixtral and for T5 with
    `--globally_group`): every layer's most used expert counts as usage 1.0 (each layer keeps one group at
    least), all layers' usages are pooled and sorted, the value at rank `average_groups × L` (the last one
    when that is every expert) is the threshold, and a layer gets as many groups as it has experts whose
    usage is strictly above it. Pass each layer's number to `merge_groups(run, layer, n_groups=...)`.
    With the budget fixed per layer instead (`n_groups` the same everywhere), MC-SMoE's uniform mode."""
    layers = sorted({r.layer for r in run.info.routers})
    usages = {}
    for layer in layers:
        usage = _usage(run, layer, _n_experts(run, layer))
        usage[int(np.argmax(usage))] = 1.0
        usages[layer] = usage
    pooled = np.sort(np.concatenate(list(usages.values())))[::-1]
    if not 1 <= average_groups <= max(len(u) for u in usages.values()):
        raise InputError(f"average_groups must be between 1 and the number of experts, got {average_groups}")
    threshold = pooled[min(average_groups * len(layers), len(pooled) - 1)]
    return {layer: max(1, int((usage > threshold).sum())) for layer, usage in usages.items()}
