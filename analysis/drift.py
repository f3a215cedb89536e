"""Whether a placement made from one load still fits another: load drift between two runs, and how well
a token's expert at one layer predicts its expert at the next.

A placement (`placement.device_load`, or SGLang EPLB fed an exported `logical_count`) is computed from
one run's load. `load_drift` and `expert_drift` say how far another run's load (another workload, EPLB on
and off, a later checkpoint) has moved from it, per layer and per expert. `layer_predictability` says
how much of a token's top-1 expert at layer l is known from its top-1 at the previous MoE layer — what
pre-fetching or pre-dispatching experts one layer ahead can hope for. Definitions: docs/metrics.md,
"Expert placement". Loads come from `balance.expert_load` and the layer-to-layer counts from
`sequence.transitions` (both aggregated in DuckDB); only the small matrices are finished here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .balance import expert_load
from .sequence import transitions

DRIFT_COLUMNS = [
    "layer",
    "n_experts",
    "assignments_a",
    "assignments_b",
    "tv_distance",
    "js_divergence",
    "max_change",
    "max_change_expert",
]


def expert_drift(run_a: Run, run_b: Run, ranks: str = "all") -> pd.DataFrame:
    """`layer, expert, share_a, share_b, change`: each expert's share of its layer's assignments in both
    runs and `change` = share_b − share_a, for the layers both runs have; a layer whose number of experts
    differs between the runs is a one-line `InputError`."""
    a = expert_load(run_a, ("layer",), ranks=ranks)
    b = expert_load(run_b, ("layer",), ranks=ranks)
    shared = sorted(set(a["layer"]) & set(b["layer"]))
    if not shared:
        raise InputError(f"runs {run_a.name!r} and {run_b.name!r} share no MoE layer")
    for layer in shared:
        size_a, size_b = int((a["layer"] == layer).sum()), int((b["layer"] == layer).sum())
        if size_a != size_b:
            raise InputError(
                f"layer {layer} has {size_a} experts in {run_a.name!r} and {size_b} in {run_b.name!r}"
            )
    merged = a[a["layer"].isin(shared)].merge(b, on=["layer", "expert"], suffixes=("_a", "_b"))
    merged = merged.rename(columns={"load_a": "share_a", "load_b": "share_b"})
    merged["change"] = merged["share_b"] - merged["share_a"]
    return merged[["layer", "expert", "share_a", "share_b", "change"]].reset_index(drop=True)


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def load_drift(run_a: Run, run_b: Run, ranks: str = "all") -> pd.DataFrame:
    """`layer, n_experts, assignments_a, assignments_b, tv_distance, js_divergence, max_change,
    max_change_expert` per layer both runs have: total-variation distance ½ Σ_e |p_e − q_e| between the two
    load distributions, Jensen–Shannon divergence in bits (both in [0, 1]; 0 for the same load), and the
    largest |q_e − p_e| with its expert."""
    table = expert_drift(run_a, run_b, ranks)
    counts_a = expert_load(run_a, ("layer",), ranks=ranks).groupby("layer")["count"].sum()
    counts_b = expert_load(run_b, ("layer",), ranks=ranks).groupby("layer")["count"].sum()
    rows = []
    for layer, part in table.groupby("layer", sort=True):
        p, q = part["share_a"].to_numpy(), part["share_b"].to_numpy()
        m = (p + q) / 2
        change = np.abs(part["change"].to_numpy())
        worst = int(np.argmax(change))
        rows.append(
            {
                "layer": layer,
                "n_experts": len(p),
                "assignments_a": counts_a.get(layer, 0),
                "assignments_b": counts_b.get(layer, 0),
                "tv_distance": float(change.sum() / 2),
                "js_divergence": _entropy_bits(m) - (_entropy_bits(p) + _entropy_bits(q)) / 2,
                "max_change": float(change[worst]),
                "max_change_expert": int(part["expert"].iloc[worst]),
            }
        )
    return pd.DataFrame(rows, columns=DRIFT_COLUMNS)


PREDICTABILITY_COLUMNS = [
    "layer",
    "previous_layer",
    "decisions",
    "accuracy",
    "baseline_majority",
    "baseline_chance",
    "uncertainty_coefficient",
]


def layer_predictability(run: Run) -> pd.DataFrame:
    """`layer, previous_layer, decisions, accuracy, baseline_majority, baseline_chance,
    uncertainty_coefficient` for each MoE layer after the first of its stack.

    Over the tokens routed at both layers in the same forward pass (`transitions`: same sample, position,
    step and call), with n(a, b) the tokens whose top-1 is a at the previous layer and b at this one:
    `accuracy` = Σ_a max_b n(a, b) / N (predicting b by the most frequent successor of a), against
    `baseline_majority` = max_b n(·, b) / N (always predicting this layer's busiest expert) and
    `baseline_chance` = Σ_b p_b² (a guess drawn from this layer's top-1 loads p_b, independent of a);
    `uncertainty_coefficient` = I(A; B) / H(B), the share of this layer's top-1 entropy the previous
    layer's top-1 explains (NaN when this layer always picks one expert)."""
    links = transitions(run)
    rows = []
    for (previous, layer), part in links.groupby(["layer", "next_layer"], sort=True):
        wide = part.pivot_table(index="expert", columns="next_expert", values="count", aggfunc="sum")
        n = wide.fillna(0).to_numpy(dtype=float)
        total = n.sum()
        if total <= 0:
            continue
        joint = n / total
        p_next = joint.sum(axis=0)
        p_first = joint.sum(axis=1)
        h_next = _entropy_bits(p_next)
        mutual = h_next + _entropy_bits(p_first) - _entropy_bits(joint.ravel())
        rows.append(
            {
                "layer": int(layer),
                "previous_layer": int(previous),
                "decisions": int(total),
                "accuracy": float(n.max(axis=1).sum() / total),
                "baseline_majority": float(p_next.max()),
                "baseline_chance": float((p_next**2).sum()),
                "uncertainty_coefficient": max(mutual, 0.0) / h_next if h_next > 0 else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=PREDICTABILITY_COLUMNS)
