"""The standard report written the straightforward pandas way: the baseline of benchmarks/analysis_scale.py.

What a pandas user would write without RouteScope: `pd.read_parquet` of the columns each analysis needs,
`merge` with the dimension tables, `groupby`, and numpy on the small aggregates. It uses the same
definitions as `routescope.analysis` (the docstrings there), so the benchmark can check that both give the
same numbers; co-activation uses the same per-decision bitmask idea (summing `1 << expert` over a
decision's distinct experts equals OR-ing them), with the pairs expanded by a dense matrix product instead
of the analysis' sparse expansion — an independent cross-check of it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd

from routescope.store import Run

UNCERTAIN = 0.9
KEYS = ["sample", "position", "step", "router", "call"]


def _n_experts(run: Run) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for r in run.routers:
        sizes[int(r["layer"])] = max(sizes.get(int(r["layer"]), 0), int(r["n_experts"]))
    return sizes


def _routed(run: Run, columns: list[str], **filters: int) -> pd.DataFrame:
    conditions = [(name, "==", value) for name, value in filters.items()] or None
    frame = pd.read_parquet(run.table_path("assignments"), columns=[*columns, "dropped"], filters=conditions)
    return frame[~frame["dropped"]].drop(columns="dropped")


def balance(run: Run) -> pd.DataFrame:
    """Per layer: n_experts, max_over_mean, cv, norm_entropy, gini, dead_experts."""
    counts = _routed(run, ["layer", "expert"]).groupby(["layer", "expert"]).size()
    rows = []
    for layer, n in _n_experts(run).items():
        c = counts.get(layer, pd.Series(dtype=np.int64)).reindex(range(n), fill_value=0).to_numpy(float)
        share = c / c.sum()
        nonzero = share[share > 0]
        rows.append(
            {
                "layer": layer,
                "n_experts": n,
                "max_over_mean": share.max() * n,
                "cv": c.std() / c.mean(),
                "norm_entropy": -(nonzero * np.log(nonzero)).sum() / np.log(n),
                "gini": np.abs(c[:, None] - c[None, :]).sum() / (2 * n * n * c.mean()),
                "dead_experts": int((c == 0).sum()),
            }
        )
    return pd.DataFrame(rows).sort_values("layer", ignore_index=True)


def _with_tokens(run: Run, frame: pd.DataFrame, offset: int = 0) -> pd.DataFrame:
    """`frame` (sample, position, router, ...) plus the token_id at position + offset (router's stack)."""
    tokens = pd.read_parquet(run.table_path("tokens"), columns=["sample", "position", "stack", "token_id"])
    parts = []
    for stack in sorted({str(r["stack"]) for r in run.routers}):
        ids = [int(r["id"]) for r in run.routers if r["stack"] == stack]
        part = frame[frame["router"].isin(ids)]
        if offset:
            part = part.assign(position=part["position"] + offset)
        mine = tokens.loc[tokens["stack"] == stack, ["sample", "position", "token_id"]]
        parts.append(part.merge(mine, on=["sample", "position"]))
    return pd.concat(parts, ignore_index=True)


def specialization(run: Run, label: str) -> pd.DataFrame:
    """`layer, expert, <label>, count, share, lift, uniform_lift` for `domain` or `token_id`."""
    if label == "token_id":
        routed = _with_tokens(run, _routed(run, ["sample", "position", "router", "layer", "expert"]))
    else:
        samples = pd.read_parquet(run.table_path("samples"), columns=["sample", label])
        routed = _routed(run, ["sample", "layer", "expert"]).merge(samples, on="sample")
    table = routed.groupby(["layer", "expert", label]).size().rename("count").reset_index()
    del routed
    per_label = table.groupby(["layer", label])["count"].transform("sum")
    per_expert = table.groupby(["layer", "expert"])["count"].transform("sum")
    per_layer = table.groupby("layer")["count"].transform("sum")
    table["share"] = table["count"] / per_label
    table["lift"] = table["share"] / (per_expert / per_layer)
    table["uniform_lift"] = table["share"] * table["layer"].map(_n_experts(run))
    return table


def vocabulary(run: Run) -> pd.DataFrame:
    """`layer, token_id, count, top_expert, share` on rank-0 choices (ties: the smaller expert)."""
    first = _routed(run, ["sample", "position", "router", "layer", "expert", "rank"])
    first = _with_tokens(run, first[first["rank"] == 0])
    counts = first.groupby(["layer", "token_id", "expert"]).size().rename("n").reset_index()
    del first
    counts = counts.sort_values(["layer", "token_id", "n", "expert"], ascending=[True, True, False, True])
    top = counts.drop_duplicates(["layer", "token_id"]).set_index(["layer", "token_id"])
    total = counts.groupby(["layer", "token_id"])["n"].sum()
    table = pd.DataFrame({"count": total, "top_expert": top["expert"], "share": top["n"] / total})
    return table.reset_index()


def uncertainty(run: Run) -> pd.DataFrame:
    """`layer, decisions, mean_entropy, mean_norm_entropy, mean_margin, uncertain_share`."""
    d = pd.read_parquet(run.table_path("decisions"), columns=["router", "layer", "entropy", "margin"])
    n_experts = {int(r["id"]): int(r["n_experts"]) for r in run.routers}
    d["entropy"] = d["entropy"].astype(np.float64)
    d["margin"] = d["margin"].astype(np.float64)
    d["norm"] = d["entropy"] / np.log(d["router"].map(n_experts))
    d["uncertain"] = (d["norm"] >= UNCERTAIN).astype(np.float64)
    return (
        d.groupby("layer")
        .agg(
            decisions=("entropy", "size"),
            mean_entropy=("entropy", "mean"),
            mean_norm_entropy=("norm", "mean"),
            mean_margin=("margin", "mean"),
            uncertain_share=("uncertain", "mean"),
        )
        .reset_index()
    )


def coactivation(run: Run, layer: int) -> pd.DataFrame:
    """`expert_a, expert_b, count, p_b_given_a, lift` for one layer (≤ 64 experts)."""
    n = _n_experts(run)[layer]
    routed = _routed(run, [*KEYS, "expert"], layer=layer)
    routed["bit"] = np.left_shift(np.uint64(1), routed["expert"].to_numpy().astype(np.uint64))
    masks = routed.groupby(KEYS)["bit"].sum().value_counts()
    del routed
    bits = (masks.index.to_numpy(np.uint64)[:, None] >> np.arange(n, dtype=np.uint64)) & np.uint64(1)
    bits = bits.astype(np.float64)
    weight = masks.to_numpy(np.float64)
    singles = weight @ bits
    pairs = (bits * weight[:, None]).T @ bits
    np.fill_diagonal(pairs, 0)
    decisions = weight.sum()
    a, b = np.nonzero(pairs)
    count = pairs[a, b]
    return pd.DataFrame(
        {
            "expert_a": a,
            "expert_b": b,
            "count": count.astype(np.int64),
            "p_b_given_a": count / singles[a],
            "lift": (count / decisions) / ((singles[a] / decisions) * (singles[b] / decisions)),
        }
    )


def report(run: Run) -> dict[str, Callable[[], pd.DataFrame]]:
    """The standard report (table name → the call that computes it), then vocabulary specialization."""
    calls: dict[str, Callable[[], pd.DataFrame]] = {
        "balance": lambda: balance(run),
        "specialization_domain": lambda: specialization(run, "domain"),
        "specialization_token_id": lambda: specialization(run, "token_id"),
        "uncertainty": lambda: uncertainty(run),
    }
    for layer in sorted(_n_experts(run)):
        calls[f"coactivation_{layer}"] = partial(coactivation, run, layer)
    calls["vocabulary"] = lambda: vocabulary(run)
    return calls
