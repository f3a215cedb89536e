"""Denoising phases (Switch-DiT): which sampler steps route alike.

`step_similarity(run)`: per layer, the Jensen–Shannon divergence (natural log, in [0, ln 2]) between the
expert-load distributions of every two steps — Switch-DiT's "denoising path" matrix; steps with similar
noise levels share routing. `denoising_phases(run, n_phases)` groups steps per layer by average-linkage
clustering on √JS (a metric), so each step gets a phase label. `sensitivity(run)` puts the NMI of the
expert with each available label side by side (DiT-MoE: position and step, hardly class).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .balance import expert_load
from .specialization import label_nmi

SENSITIVITY_LABELS = ("class", "prompt", "branch", "position", "row", "col", "step", "token_id", "domain")


def _js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (nats) of distribution `p` [E] against each row of `q` [S, E]."""
    m = (p[None, :] + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p[None, :] > 0, p[None, :] * np.log(p[None, :] / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum(axis=1)
    return (kl_p + kl_q) / 2


def step_similarity(run: Run) -> pd.DataFrame:
    """`layer, step_a, step_b, js` for every pair of steps (both orders and the diagonal)."""
    load = expert_load(run, by=("layer", "step"))
    if load["step"].nunique() < 2:
        raise InputError(
            f"run {run.name!r} has a single step; step similarity needs a diffusion or generation run"
        )
    frames = []
    for layer, part in load.groupby("layer"):
        matrix = part.pivot_table(index="step", columns="expert", values="load", fill_value=0.0)
        steps = matrix.index.to_numpy()
        values = matrix.to_numpy(dtype=np.float64)
        js = np.stack([_js_rows(values[i], values) for i in range(len(steps))])
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "step_a": np.repeat(steps, len(steps)).astype(int),
                    "step_b": np.tile(steps, len(steps)).astype(int),
                    "js": js.ravel(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def denoising_phases(run: Run, n_phases: int = 3, similarity: pd.DataFrame | None = None) -> pd.DataFrame:
    """`layer, step, phase`: steps clustered by routing similarity (phase 0 holds the first step);
    pass `similarity` (the `step_similarity` table) to reuse one already computed."""
    table = step_similarity(run) if similarity is None else similarity
    out: list[dict[str, int]] = []
    for layer, part in table.groupby("layer"):
        matrix = part.pivot_table(index="step_a", columns="step_b", values="js").sort_index()
        steps = matrix.index.to_numpy()
        k = min(n_phases, len(steps))
        from sklearn.cluster import AgglomerativeClustering  # scikit-learn loads only when clustering

        labels = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(
            np.sqrt(np.clip(matrix.to_numpy(), 0, None))
        )
        order = {
            label: rank for rank, label in enumerate(dict.fromkeys(labels))
        }  # number phases by first step
        out.extend(
            {"layer": layer, "step": int(s), "phase": order[lab]}
            for s, lab in zip(steps, labels, strict=True)
        )
    return pd.DataFrame(out)


def sensitivity(run: Run) -> pd.DataFrame:
    """`layer, label, nmi` for every label of SENSITIVITY_LABELS the run has (one table to compare them)."""
    token_level = ("position", "row", "col", "step") + (("token_id",) if not run.info.is_diffusion else ())
    available = [label for label in SENSITIVITY_LABELS if label in token_level or label in run.label_columns]
    frames = [
        label_nmi(run, label, n_permutations=None)[["layer", "nmi"]].assign(label=label)
        for label in available
    ]
    return pd.concat(frames, ignore_index=True)[["layer", "label", "nmi"]]
