"""Load balance: how evenly each layer's routed assignments spread over its experts.

Definitions (all on routed, non-dropped assignments to experts that compute; `count_e` = assignments to
expert e in the group, E = the layer's number of computing experts, `load_e = count_e / Σ count`).
Assignments to zero-computation experts (manifest `routers[].zero_experts`: LongCat-Flash's identity
experts) are left out and those experts are not among the E: they take no compute to balance. Nothing
below assumes a fixed k: a decision contributes its assignments, however many (expert choice, top-p, zero
experts), so T·k in `overflow` is the group's observed assignment count.
- `max_over_mean` = max_e load_e / (1/E): 1 for a perfectly even layer, E when one expert takes all.
- `cv` = std(count) / mean(count) over the E experts (population std), 0 when even.
- `norm_entropy` = −Σ load_e ln load_e / ln E: 1 when even, 0 when one expert takes all. This is the
  entropy of the *load*, not the mean per-token router entropy (see `uncertainty`).
- `gini` = Σ_i Σ_j |count_i − count_j| / (2 E² mean(count)): 0 when even, (E−1)/E when one takes all.
- `dead_experts` = experts with no assignment in the group.
- `aux_loss` (runs recorded with probabilities) = E · Σ_e load_e · P_e, P_e = mean router probability of
  e over the group's decisions — the Switch/GShard auxiliary loss (Fedus et al. 2021, eq. 4; DiT-MoE uses
  the same expert-level form). 1 for uniform routing.
- `overflow` (with `capacity_factor` c) = the share of assignments an expert-capacity limit would drop:
  capacity groups are one sequence at one step and call (GShard/Switch group the tokens of a batch; a
  sequence is the smallest such group), each expert takes at most C = ⌈c · T·k / E⌉ of a group's T·k
  assignments, and overflow = Σ_groups Σ_e max(0, count_e − C) / Σ count. 0 for perfectly even routing at
  c ≥ 1; Switch Transformer trains with c = 1.0–1.25.
- Counts-only imports (llama.cpp, SGLang `stat` dumps) store one assignment row per (step, layer,
  expert) whose `weight` is the count (docs/import.md); `expert_load` sums it, so every metric above holds.
- `expert_size` (e.g. parameter counts, for models whose experts differ in size) weights every count by its
  expert's size before the metrics above, so they measure the balance of compute rather than of tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .frames import check_by, computing_ids, computing_sql, counting, counting_label, load_entropy, sql


def expert_load(
    run: Run, by: Sequence[str] = ("layer",), *, ranks: str = "all", weight: str = "count"
) -> pd.DataFrame:
    """`<by>, expert, count, load`: routed assignments per expert, zero-filled, and their share in the group;
    `ranks="top1"` counts first choices only, `weight="gate"` sums gate weights (`frames.counting`).

    >>> expert_load(run).query("layer == 0").load.sum()  # doctest: +SKIP
    1.0
    """
    columns = check_by(by)
    keys = ", ".join(f"a.{c}" for c in columns)
    where, measure = counting(ranks, weight)
    where += computing_sql(run)
    if "counts" in run.info.caps:  # a counts-only import: one row per expert and group, `weight` its count
        if ranks != "all" or weight != "count":
            raise InputError(f"run {run.name!r} has expert counts only: count all ranks, unweighted")
        measure = "sum(a.weight)"
    counts = sql(
        run,
        f"SELECT {keys}, a.expert, {measure} AS count FROM assignments a WHERE NOT a.dropped{where} "
        f"GROUP BY {keys}, a.expert",
    )
    if counts.empty:
        return pd.DataFrame(columns=[*columns, "expert", "count", "load"])
    ids = computing_ids(run, columns)
    groups = counts[columns].drop_duplicates().sort_values(columns, ignore_index=True)
    if isinstance(ids, list):
        experts = [ids] * len(groups)
    else:
        experts = [ids[int(key)] for key in groups["router" if "router" in columns else "layer"]]
    full = groups.loc[groups.index.repeat([len(e) for e in experts])].reset_index(drop=True)
    full["expert"] = np.concatenate([np.asarray(e, dtype=np.int64) for e in experts])  # computing experts
    full = full.merge(counts, on=[*columns, "expert"], how="left").fillna({"count": 0})
    if weight == "count":
        full["count"] = full["count"].round().astype(np.int64)
    full["load"] = full["count"] / full.groupby(columns, sort=False)["count"].transform("sum").clip(lower=1)
    full = full[[*columns, "expert", "count", "load"]]
    full.attrs["counting"] = counting_label(ranks, weight)
    return full


def _gini(counts: np.ndarray) -> float:
    mean = counts.mean()
    if mean == 0:
        return 0.0
    return float(np.abs(counts[:, None] - counts[None, :]).sum() / (2 * len(counts) ** 2 * mean))


def balance(
    run: Run,
    by: Sequence[str] = ("layer",),
    capacity_factor: float | None = None,
    expert_size: Mapping[int, float] | None = None,
) -> pd.DataFrame:
    """`<by>, n_experts, max_over_mean, cv, norm_entropy, gini, dead_experts[, aux_loss][, overflow]`
    (see the module docstring for each, `capacity_factor` and `expert_size`)."""
    columns = check_by(by)
    if capacity_factor is not None and capacity_factor <= 0:
        raise InputError(f"capacity_factor must be > 0, got {capacity_factor}")
    if capacity_factor is not None and "counts" in run.info.caps:
        raise InputError(f"run {run.name!r} has expert counts only; overflow needs its decisions")
    load = raw_load = expert_load(run, columns)
    if expert_size is not None:
        sizes = load["expert"].map(lambda e: float(expert_size.get(int(e), float("nan"))))
        if sizes.isna().any() or (sizes <= 0).any():
            raise InputError("expert_size needs a positive size for every expert of the run")
        load = load.assign(count=load["count"] * sizes)
        load["load"] = load["count"] / load.groupby(columns)["count"].transform("sum").clip(lower=1e-300)
    rows = []
    for group, part in load.groupby(columns, sort=True):
        counts = part["count"].to_numpy(dtype=float)
        share = part["load"].to_numpy()
        n = len(counts)
        rows.append(
            {
                **dict(zip(columns, group if isinstance(group, tuple) else (group,), strict=True)),
                "n_experts": n,
                "max_over_mean": float(share.max() * n),
                "cv": float(counts.std() / counts.mean()) if counts.mean() > 0 else 0.0,
                "norm_entropy": float(load_entropy(share)),
                "gini": _gini(counts),
                "dead_experts": int((counts == 0).sum()),
            }
        )
    table = pd.DataFrame(rows)
    if run.info.probs and not table.empty:
        table = table.merge(_aux_loss(run, columns, raw_load), on=columns, how="left")
    if capacity_factor is not None and not table.empty:
        table = table.merge(_overflow(run, columns, capacity_factor), on=columns, how="left")
    return table


def _overflow(run: Run, columns: list[str], capacity_factor: float) -> pd.DataFrame:
    groups = ", ".join(dict.fromkeys([*columns, "sample", "step", "call", "router"]))
    cases = " ".join(f"WHEN {r.id} THEN {r.computing_experts}" for r in run.info.routers if r.zero_experts)
    computing = f"(CASE g.router {cases} ELSE r.n_experts END)" if cases else "r.n_experts"
    return sql(
        run,
        f"""WITH c AS (SELECT {groups}, expert, count(*) AS n FROM assignments a
                       WHERE NOT dropped{computing_sql(run)} GROUP BY ALL),
                g AS (SELECT *, sum(n) OVER (PARTITION BY {groups}) AS total FROM c)
            SELECT {", ".join(f"g.{c}" for c in columns)},
                   sum(greatest(n - ceil({float(capacity_factor)} * total / {computing}), 0)) / sum(n)
                       AS overflow
            FROM g JOIN routers r ON r.id = g.router GROUP BY {", ".join(f"g.{c}" for c in columns)}""",
    ).sort_values(columns, ignore_index=True)


def _aux_loss(run: Run, columns: list[str], load: pd.DataFrame) -> pd.DataFrame:
    keys = ", ".join(columns)
    mean_prob = sql(
        run,
        f"SELECT {keys}, expert, avg(p) AS mean_prob FROM (SELECT {keys}, "
        "unnest(range(len(probs))) AS expert, unnest(probs) AS p FROM decisions) GROUP BY ALL",
    )
    merged = load.merge(mean_prob, on=[*columns, "expert"], how="left").fillna({"mean_prob": 0.0})
    merged["term"] = merged["load"] * merged["mean_prob"]
    aux = merged.groupby(columns, sort=True).agg(term=("term", "sum"), n=("expert", "size")).reset_index()
    aux["aux_loss"] = aux["term"] * aux["n"]
    return aux[[*columns, "aux_loss"]]
