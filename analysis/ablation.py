"""Ablation tables: how much worse the model is with experts disabled, against random ablations.

DeepSeekMoE tests specialisation causally: disable the top-ranked routed experts and the loss rises more
than when the same number of random experts is disabled. The probe runs (`routescope.probes.
ablation_study`) carry the model's quality under their edit; these functions line the variants up.

- `ablation_loss`: next-token loss in nats per predicted token, per label value and over all inputs:
  loss(group) = Σ NLL / Σ predicted tokens over the group's inputs (token-weighted, as a language-model
  loss is), for the base run, the ablation, and the random ablations (mean, sample standard deviation
  over seeds, min and max); `ablated_delta` = ablated − base, `random_delta` = random mean − base.
- `ablation_denoising`: the bundled DiT's ε-prediction MSE per timestep bucket, the same columns.
- `ablation_accuracy`: the share of generated digits recognised as the requested class, per class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

ALL = "(all)"
"""The label value of the row over all inputs."""


def _metrics(run: Run, key: str) -> Mapping[str, Any]:
    entry = run.probe
    found = (entry or {}).get("metrics", {}).get(key)
    if found is None:
        raise InputError(
            f"run {run.name!r} carries no {key!r} metrics; record it with a probe "
            "(routescope probe ablate, or routescope.probes.ablation_study)"
        )
    return found


def _spread(table: pd.DataFrame, columns: Sequence[str], base: str) -> pd.DataFrame:
    """Random mean / sd / min / max over the seed columns, and the deltas against the base column."""
    values = table[list(columns)] if columns else pd.DataFrame(index=table.index)
    table["random_mean"] = values.mean(axis=1) if columns else np.nan
    table["random_sd"] = values.std(axis=1, ddof=1) if len(columns) > 1 else np.nan
    table["random_min"] = values.min(axis=1) if columns else np.nan
    table["random_max"] = values.max(axis=1) if columns else np.nan
    table["n_random"] = len(columns)
    table["ablated_delta"] = table["ablated"] - table[base]
    table["random_delta"] = table["random_mean"] - table[base]
    return table.drop(columns=list(columns))


def ablation_loss(base: Run, ablated: Run, random: Sequence[Run] = (), by: str | None = None) -> pd.DataFrame:
    """`<by>, inputs, tokens, base, ablated, random_mean, random_sd, random_min, random_max, n_random,
    ablated_delta, random_delta`: one row per value of label `by` (sorted) and a last row `(all)`."""
    runs = {"base": base, "ablated": ablated, **{f"random {i}": r for i, r in enumerate(random)}}
    losses = {key: _metrics(run, "loss") for key, run in runs.items()}
    n_inputs = {len(loss["nll"]) for loss in losses.values()}
    tokens = {tuple(loss["tokens"]) for loss in losses.values()}
    if len(n_inputs) != 1 or len(tokens) != 1:
        raise InputError("the runs were not recorded on the same inputs; run one ablation study")
    column = by or "group"
    frame = pd.DataFrame({key: np.asarray(loss["nll"], dtype=float) for key, loss in losses.items()})
    frame["tokens"] = np.asarray(losses["base"]["tokens"], dtype=float)
    if by is None:
        frame[column] = ALL
    else:
        if by not in base.label_columns:
            raise InputError(
                f"run {base.name!r} has no label {by!r}; labels: {', '.join(base.label_columns)}"
            )
        frame[column] = base.samples(columns=["sample", by]).sort_values("sample")[by].to_numpy()
    frame["inputs"] = 1
    groups = [frame.groupby(column, sort=True).sum(numeric_only=True)]
    if by is not None:
        groups.append(frame.drop(columns=[column]).sum(numeric_only=True).to_frame(ALL).T)
    table = pd.concat(groups)
    for key in runs:
        table[key] = table[key] / table["tokens"]
    table.index.name = column
    table = table.reset_index()
    table["tokens"] = table["tokens"].astype("int64")
    table["inputs"] = table["inputs"].astype("int64")
    table = table[[column, "inputs", "tokens", *runs]]
    return _spread(table, [k for k in runs if k.startswith("random")], "base")


def _per_variant(
    base: Run, ablated: Run, random: Sequence[Run], pick: str
) -> tuple[dict[str, Mapping[str, Any]], list[str]]:
    runs = {"base": base, "ablated": ablated, **{f"random {i}": r for i, r in enumerate(random)}}
    return {key: _metrics(run, pick) for key, run in runs.items()}, [
        f"random {i}" for i in range(len(random))
    ]


def ablation_denoising(base: Run, ablated: Run, random: Sequence[Run] = ()) -> pd.DataFrame:
    """`bucket, t_low, t_high, images, base, ablated, random_mean, random_sd, random_min, random_max,
    n_random, ablated_delta, random_delta`: ε-MSE per timestep bucket (t_low..t_high inclusive)."""
    found, randoms = _per_variant(base, ablated, random, "denoising")
    buckets = [tuple(b) for b in found["base"]["buckets"]]
    if any([tuple(b) for b in m["buckets"]] != buckets for m in found.values()):
        raise InputError("the runs measured different timestep buckets; run one ablation study")
    table = pd.DataFrame(
        {
            "bucket": range(len(buckets)),
            "t_low": [b[0] for b in buckets],
            "t_high": [b[1] for b in buckets],
            "images": int(found["base"]["images"]),
            **{key: np.asarray(m["mse"], dtype=float) for key, m in found.items()},
        }
    )
    return _spread(table, randoms, "base")


def ablation_accuracy(base: Run, ablated: Run, random: Sequence[Run] = ()) -> pd.DataFrame:
    """`class, base, ablated, random_mean, random_sd, random_min, random_max, n_random, ablated_delta,
    random_delta`: the share of generated digits classified as requested, per class and `(all)`."""
    found, randoms = _per_variant(base, ablated, random, "classes")
    classes = list(found["base"]["per_class"])
    rows = [[c, *(float(m["per_class"][c]) for m in found.values())] for c in classes]
    rows.append([ALL, *(float(m["accuracy"]) for m in found.values())])
    table = pd.DataFrame(rows, columns=["class", *found])
    return _spread(table, randoms, "base")
