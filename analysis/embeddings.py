"""Embeddings of routing: 2-D maps of tokens by their router scores, or of experts by what they take.

`embeddings(run, layer, of="tokens")`: one point per routing decision at `layer` — its vector is the full
router probability vector when the run recorded `probs`, else its gate weights spread over the E experts
(k non-zero entries). `of="experts"`: one point per expert — its vector is the distribution of its
assignments over a label's values (`label`, default `token_id` for text and `position` for images),
so experts that take the same tokens land together. Reduced to 2-D by PCA (scikit-learn, exact and
deterministic) or UMAP (umap-learn, `seed` fixes it). Large runs are sampled to `max_points` decisions by
a seeded hash of their keys, so the same seed gives the same points.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .engine import quote_path
from .frames import label_join, sql

METHODS = ("pca", "umap")


def _reduce(vectors: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method not in METHODS:
        raise InputError(f"unknown embedding method {method!r}; choose from {', '.join(METHODS)}")
    if len(vectors) < 3:
        raise InputError(f"an embedding needs at least 3 points, got {len(vectors)}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(vectors)
    import umap  # numba compiles on import: only pay for it when asked

    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(vectors) - 1), random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(vectors))


def _check_layer(run: Run, layer: int) -> int:
    routers = [r for r in run.info.routers if r.layer == int(layer)]
    if not routers:
        layers = ", ".join(sorted({str(r.layer) for r in run.info.routers}))
        raise InputError(f"run {run.name!r} has no router at layer {layer}; layers: {layers}")
    return max(r.n_experts for r in routers)


def embeddings(
    run: Run,
    layer: int,
    of: Literal["tokens", "experts"] = "tokens",
    method: str = "pca",
    label: str | None = None,
    max_points: int = 5000,
    seed: int = 0,
) -> pd.DataFrame:
    """`x, y` plus identifying columns: for tokens `sample, position, step, call, top_expert` and the
    run's token and sample labels; for experts `layer, expert, count, load`."""
    n_experts = _check_layer(run, layer)
    if of == "experts":
        return _expert_embedding(run, int(layer), n_experts, method, label, seed)
    if of != "tokens":
        raise InputError(f"of must be 'tokens' or 'experts', not {of!r}")
    if max_points < 3:
        raise InputError("max_points must be ≥ 3")
    keys = "sample, position, step, call"
    chosen = f"""SELECT {keys} FROM decisions WHERE layer = {int(layer)}
                 ORDER BY hash(sample, position, step, call, {int(seed)}), {keys} LIMIT {int(max_points)}"""
    probs = run.info.probs
    vectors_sql = (
        f"SELECT {keys}, d.probs FROM decisions d JOIN c USING ({keys}) WHERE d.layer = {int(layer)}"
        if probs
        else f"""SELECT {keys}, list(expert ORDER BY rank) AS experts, list(weight ORDER BY rank) AS weights
                 FROM assignments a JOIN c USING ({keys}) WHERE a.layer = {int(layer)} AND NOT a.dropped
                 GROUP BY ALL"""
    )
    stack = next(r.stack for r in run.info.routers if r.layer == int(layer))
    labels = "".join(f', s."{column}"' for column in run.label_columns)
    points = sql(  # one pass: the sampled decisions' vectors, top-1 expert, token and sample labels
        run,
        f"""WITH c AS ({chosen}),
                 v AS ({vectors_sql}),
                 top AS (SELECT {keys}, expert AS top_expert FROM assignments a JOIN c USING ({keys})
                         WHERE a.layer = {int(layer)} AND a.rank = 0)
            SELECT v.*, top.top_expert, t.* EXCLUDE (sample, position, stack){labels}
            FROM v LEFT JOIN top USING ({keys})
            LEFT JOIN tokens t ON t.sample = v.sample AND t.position = v.position
                               AND t.stack = {quote_path(stack)}
            LEFT JOIN samples s ON s.sample = v.sample
            ORDER BY {", ".join(f"v.{k}" for k in keys.split(", "))}""",
    )
    if probs:
        vectors = np.stack(points.pop("probs").map(np.asarray).to_list()).astype(np.float64)
    else:
        vectors = np.zeros((len(points), n_experts))
        for i, (experts, weights) in enumerate(
            zip(points.pop("experts"), points.pop("weights"), strict=True)
        ):
            vectors[i, np.asarray(experts, dtype=int)] = weights
    token_columns = [c for c in points.columns if c in ("row", "col", "token_id", "token", "generated")]
    points = points.drop(columns=[c for c in token_columns if points[c].isna().all()])
    coordinates = _reduce(vectors, method, seed)
    points.insert(0, "y", coordinates[:, 1])
    points.insert(0, "x", coordinates[:, 0])
    return points


def _expert_embedding(
    run: Run, layer: int, n_experts: int, method: str, label: str | None, seed: int
) -> pd.DataFrame:
    is_image = run.info.is_diffusion
    label = label or ("position" if is_image else "token_id")
    join, expr = label_join(run, label)
    counts = sql(
        run,
        f"""SELECT a.expert, {expr} AS value, count(*) AS n FROM assignments a {join}
            WHERE a.layer = {layer} AND NOT a.dropped GROUP BY ALL""",
    )
    profile = counts.pivot_table(index="expert", columns="value", values="n", aggfunc="sum", fill_value=0)
    profile = profile.reindex(range(n_experts), fill_value=0)
    totals = profile.sum(axis=1).to_numpy(dtype=float)
    vectors = profile.to_numpy(dtype=float) / np.maximum(totals, 1)[:, None]
    coordinates = _reduce(vectors, method, seed)
    return pd.DataFrame(
        {
            "x": coordinates[:, 0],
            "y": coordinates[:, 1],
            "layer": layer,
            "expert": np.arange(n_experts),
            "count": totals.astype(np.int64),
            "load": totals / max(totals.sum(), 1),
        }
    )
