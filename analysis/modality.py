"""Routing by modality: do a vision-language MoE's experts split image tokens from text tokens?

Runs recorded with images (`record(images=...)`, hooks/vision.py) label every token `text`, `image` or
`video` (`tokens.modality`). Two tables, per layer, on routed, non-dropped assignments:

`modality_load` — each expert's load by modality: `count` of assignments (all ranks) of that modality's
tokens to expert e, `share` = count / the modality's assignments at the layer (P(e | modality), sums to 1
over experts) and `lift` = share / e's overall load share (1: no preference).

`modality_specialization` — one number per layer and its test. The statistic is the total-variation
distance between the top-1 expert distributions of visual (image or video) and text tokens,

    TVD = ½ Σ_e | P(top-1 = e | visual) − P(top-1 = e | text) |,

0 when both modalities use the experts alike and 1 when they share none. Unit of independence: the input
(`sample`, analysis/units.py). The null keeps each input's routing and its number of image tokens and
shuffles the modality labels among the tokens *of that input* (`permutation.py`, scope `within`), so
what an input shares (its topic, its image) is kept and only the link between a token's modality and its
expert is broken. Inputs with one modality only cannot move under the shuffle and only dilute the
statistic. Caution: image tokens also sit at other positions than text (usually first), so a position
effect can read as a modality effect; the test says the routing is not exchangeable between modalities
within an input, not why.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .frames import sql
from .permutation import DEFAULT_PERMUTATIONS, check_permutations, permutation_null
from .units import SEQUENCE

LOAD_COLUMNS = ["layer", "modality", "expert", "count", "share", "lift"]
TEST_COLUMNS = [
    "layer",
    "tvd",
    "p_value",
    "null_mean",
    "n_permutations",
    "method",
    "unit",
    "n_units",
    "visual_tokens",
    "text_tokens",
]


def _check(run: Run) -> None:
    if not run.info.modality:
        raise InputError(
            f"run {run.name!r} has no token modality; record a vision-language model with images",
            field="images",
        )


def modality_load(run: Run, layer: int | None = None) -> pd.DataFrame:
    """`layer, modality, expert, count, share, lift` (see the module docstring); all layers unless `layer`."""
    _check(run)
    where = "" if layer is None else f"AND a.layer = {int(layer)}"
    table = sql(
        run,
        f"""SELECT a.layer, t.modality, a.expert, count(*) AS count
            FROM assignments a JOIN routers r ON r.id = a.router
            JOIN tokens t ON t.sample = a.sample AND t.position = a.position AND t.stack = r.stack
            WHERE NOT a.dropped AND t.modality IS NOT NULL {where} GROUP BY ALL ORDER BY ALL""",
    )
    if table.empty:
        raise InputError(f"run {run.name!r} has no assignments at layer {layer}")
    per_modality = table.groupby(["layer", "modality"])["count"].transform("sum")
    per_expert = table.groupby(["layer", "expert"])["count"].transform("sum")
    per_layer = table.groupby("layer")["count"].transform("sum")
    table["share"] = table["count"] / per_modality
    table["lift"] = table["share"] / (per_expert / per_layer)
    return table[LOAD_COLUMNS]


def _tvd(experts: np.ndarray, n_experts: int) -> Callable[[np.ndarray], np.ndarray]:
    """The TVD of a `[B, n]` batch of visual flags (1 visual, 0 text) for these top-1 `experts`."""
    onehot = np.zeros((len(experts), n_experts))
    onehot[np.arange(len(experts)), experts] = 1.0
    totals = onehot.sum(axis=0)

    def statistic(labels: np.ndarray) -> np.ndarray:
        visual = labels.astype(np.float64) @ onehot  # [B, E] visual tokens per top-1 expert
        n_visual = labels.sum(axis=1, keepdims=True)
        text = totals[None, :] - visual
        n_text = len(experts) - n_visual
        return 0.5 * np.abs(visual / n_visual - text / n_text).sum(axis=1)

    return statistic


def modality_specialization(
    run: Run, *, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0
) -> pd.DataFrame:
    """`layer, tvd, p_value, null_mean, n_permutations, method, unit, n_units, visual_tokens, text_tokens`:
    per layer, the TVD between visual and text tokens' top-1 experts and its within-input permutation
    p-value (see the module docstring)."""
    _check(run)
    n_permutations = check_permutations(n_permutations)
    frame = sql(
        run,
        """SELECT a.layer, a.router, a.sample, a.position, a.expert, t.modality <> 'text' AS visual
           FROM assignments a JOIN routers r ON r.id = a.router
           JOIN tokens t ON t.sample = a.sample AND t.position = a.position AND t.stack = r.stack
           WHERE a.rank = 0 AND NOT a.dropped AND t.modality IS NOT NULL
           ORDER BY a.layer, a.router, a.sample, a.position""",
    )
    n_experts = {r.layer: r.n_experts for r in run.info.routers}
    rows = []
    for layer, part in frame.groupby("layer", sort=True):
        visual = part["visual"].to_numpy(bool)
        n_visual = int(visual.sum())
        row = {
            "layer": int(layer),
            "unit": SEQUENCE,
            "n_units": int(part["sample"].nunique()),
            "visual_tokens": n_visual,
            "text_tokens": len(visual) - n_visual,
        }
        if n_visual == 0 or n_visual == len(visual):
            rows.append(
                {
                    **row,
                    "tvd": np.nan,
                    "p_value": np.nan,
                    "null_mean": np.nan,
                    "n_permutations": 0,
                    "method": "one modality at this layer: nothing to compare",
                }
            )
            continue
        groups = pd.factorize(part["sample"].astype(str) + ":" + part["router"].astype(str))[0]
        null = permutation_null(
            _tvd(part["expert"].to_numpy(np.int64), int(n_experts[int(layer)])),
            visual.astype(np.int8),
            groups=groups,
            scope="within",
            unit=SEQUENCE,
            n_permutations=n_permutations,
            seed=seed,
        )
        rows.append(
            {
                **row,
                "tvd": null.observed,
                "p_value": null.p_value,
                "null_mean": null.null_mean,
                "n_permutations": null.n_permutations,
                "method": null.method,
            }
        )
    if not rows:
        raise InputError(f"run {run.name!r} has no top-1 assignments with a modality")
    return pd.DataFrame(rows, columns=TEST_COLUMNS)
