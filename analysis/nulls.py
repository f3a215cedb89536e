"""Null distributions for the headline statistics that are not a plain label × expert NMI.

Each function returns, per layer, the observed statistic, its permutation null (`permutation.py`) and the
p-value, so a verdict can say "above chance" only when a shuffle that removes the effect rarely reaches
the observed value. The shuffles keep what the null hypothesis says is irrelevant and break only the link
under test:

- `vocabulary_null`: token ids shuffled among the top-1 decisions of one unit (a token-blind router that
  keeps each sequence's expert mix and each token's frequency). Statistic: the token-weighted mean share
  of a token's occurrences that go to its most frequent expert, over token ids seen ≥ `min_count` times.
- `repeat_null`: top-1 experts shuffled along each sequence (sample, router, call), keeping the
  sequence's own expert mix — so a one-domain sequence that stays on its domain's experts is not counted
  as "consecutive tokens share an expert". Statistic: the share of consecutive positions with the same
  top-1 expert (text runs; raster order).
- `coactivation_null`: per pair of experts, its lift against each rank's experts shuffled among the
  decisions of one unit (independent choice with the observed per-rank loads).
- `uncertainty_null`: the uncertain flags (normalised entropy ≥ `threshold`) shuffled among the decisions
  of one unit. Statistic: the mutual information (nats) between a decision's token id (ids seen ≥
  `min_count` times) and its flag — 0 when uncertainty is spread evenly over tokens.

Columns of each: `layer, statistic, observed, null_mean, null_q99, p_value, n_permutations, seed, method,
unit`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .contingency import UnitTable, unit_tables
from .frames import norm_entropy_sql, sql, stack_of
from .information import mutual_information
from .permutation import DEFAULT_PERMUTATIONS, NullDistribution, permutation_null
from .uncertainty import DEFAULT_THRESHOLD
from .units import unit_codes, unit_name

COLUMNS = [
    "layer",
    "statistic",
    "observed",
    "null_mean",
    "null_q99",
    "p_value",
    "n_permutations",
    "seed",
    "method",
    "unit",
]


def _row(layer: int, statistic: str, null: NullDistribution) -> dict:
    return {
        "layer": int(layer),
        "statistic": statistic,
        "observed": null.observed,
        "null_mean": null.null_mean,
        "null_q99": null.quantile(0.99),
        "p_value": null.p_value,
        "n_permutations": null.n_permutations,
        "seed": null.seed,
        "method": null.method,
        "unit": null.unit,
    }


def vocabulary_share(joint: np.ndarray, min_count: int) -> np.ndarray:
    """Token-weighted share to the top expert of each `[T, E]` token × expert table of a `[B, T, E]`
    batch, over tokens with at least `min_count` occurrences (their count is the same in every table)."""
    totals = joint.sum(axis=2)
    kept = totals >= min_count
    top = np.where(kept, joint.max(axis=2), 0.0).sum(axis=1)
    return top / np.maximum(np.where(kept, totals, 0.0).sum(axis=1), 1e-300)


def vocabulary_null(
    run: Run,
    *,
    min_count: int = 10,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    unit: str | None = None,
) -> pd.DataFrame:
    """Vocabulary specialization against token-blind routing (see the module docstring)."""
    if min_count < 1:
        raise InputError("min_count must be ≥ 1")
    rows = []
    for (layer,), data in unit_tables(run, "token_id", ("layer",), ranks="top1", unit=unit).items():
        null = data.null(
            lambda joint: vocabulary_share(joint, min_count),
            scope="within",
            n_permutations=n_permutations,
            seed=seed,
        )
        rows.append(_row(layer, "top_expert_share", null))
    return pd.DataFrame(rows, columns=COLUMNS)


def repeat_null(
    run: Run, *, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0, unit: str | None = None
) -> pd.DataFrame:
    """Consecutive-token top-1 repeat rate against experts shuffled within each sequence."""
    if run.info.patch_grid:
        raise InputError(
            f"run {run.name!r} is a patch grid; the repeat-rate null shuffles along text sequences only"
        )
    name = unit_name(run, unit)
    top = sql(
        run,
        """SELECT layer, sample, router, call, position, expert FROM assignments
           WHERE rank = 0 AND NOT dropped ORDER BY layer, sample, router, call, position""",
    )
    rows = []
    for layer, part in top.groupby("layer", sort=True):
        keys = part[["sample", "router", "call"]]  # a text position is decided once, at any step
        sequence = pd.factorize(pd.MultiIndex.from_frame(keys))[0]
        position = part["position"].to_numpy()
        follows = np.flatnonzero((sequence[1:] == sequence[:-1]) & (position[1:] == position[:-1] + 1))
        if not len(follows):
            continue

        def statistic(experts: np.ndarray, follows: np.ndarray = follows) -> np.ndarray:
            return (experts[:, follows] == experts[:, follows + 1]).mean(axis=1)

        null = permutation_null(
            statistic,
            part["expert"].to_numpy(),
            groups=sequence,
            scope="within",
            unit=name,
            n_permutations=n_permutations,
            seed=seed,
        )
        rows.append(_row(int(layer), "top1_repeat", null))
    return pd.DataFrame(rows, columns=COLUMNS)


def uncertainty_null(
    run: Run,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_count: int = 20,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    unit: str | None = None,
) -> pd.DataFrame:
    """Mutual information of token id and uncertain flag against flags shuffled within units."""
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} must be between 0 and 1 (a normalised entropy)")
    rows = []
    for layer, data in uncertainty_tables(run, threshold=threshold, min_count=min_count, unit=unit).items():
        null = data.null(mutual_information, scope="within", n_permutations=n_permutations, seed=seed)
        rows.append(_row(layer, "mi_token_uncertain", null))
    return pd.DataFrame(rows, columns=COLUMNS)


def uncertainty_tables(
    run: Run, *, threshold: float = DEFAULT_THRESHOLD, min_count: int = 20, unit: str | None = None
) -> dict[int, UnitTable]:
    """Layer → decisions as rows with their uncertain flag as the label (codes 0/1) and a one-hot of their
    token id (ids seen ≥ `min_count` times at that layer) as counts; layers with one flag value are
    left out."""
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} must be between 0 and 1 (a normalised entropy)")
    name = unit_name(run, unit)
    decisions = sql(
        run,
        f"""SELECT d.layer, d.sample, t.token_id,
                   CASE WHEN {norm_entropy_sql()} >= {float(threshold)} THEN 1 ELSE 0 END AS flag
            FROM decisions d JOIN routers r ON r.id = d.router
            JOIN tokens t ON t.sample = d.sample AND t.position = d.position
                          AND t.stack = {stack_of(run, "d")}
            WHERE t.token_id IS NOT NULL""",
    )
    codes = unit_codes(run, name)
    decisions["unit"] = decisions["sample"].map(dict(zip(codes["sample"], codes["unit"], strict=True)))
    out = {}
    for layer, part in decisions.groupby("layer", sort=True):
        part = part[part.groupby("token_id")["token_id"].transform("size") >= min_count]
        if part.empty or part["flag"].nunique() < 2:
            continue
        token = pd.factorize(part["token_id"])[0]
        counts = np.zeros((len(part), int(token.max()) + 1))
        counts[np.arange(len(part)), token] = 1.0
        out[int(layer)] = UnitTable(
            counts, part["flag"].to_numpy(dtype=np.int64), part["unit"].to_numpy(), ["0", "1"], "within", name
        )
    return out


def coactivation_null(
    run: Run,
    layer: int,
    *,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    unit: str | None = None,
) -> pd.DataFrame:
    """`expert_a, expert_b, count, lift, null_lift, p_value, n_permutations, seed, method, unit`:
    co-activation lift of every pair at `layer` (as `coactivation`) against experts chosen independently
    with the observed loads — each rank's experts (ranks 1 … k−1) shuffled among the decisions of one
    unit, which keeps every rank's load and breaks which experts meet in one decision. A shuffled decision
    that draws the same expert twice counts it once. `p_value` is one-sided (lift at least as large)."""
    name = unit_name(run, unit)
    wide = sql(
        run,
        f"""SELECT sample, position, step, router, call, list(expert ORDER BY rank) AS experts
            FROM assignments WHERE layer = {int(layer)} AND NOT dropped GROUP BY ALL""",
    )
    if wide.empty:
        raise InputError(f"run {run.name!r} has no routed decisions at layer {layer}")
    k = int(wide["experts"].map(len).max())
    if k < 2:
        raise InputError(f"layer {layer} chooses one expert per decision; co-activation needs top-k ≥ 2")
    experts = np.full((len(wide), k), -1, dtype=np.int64)
    for i, chosen in enumerate(wide["experts"]):
        experts[i, : len(chosen)] = chosen
    n_experts = max(r.n_experts for r in run.info.routers if r.layer == int(layer))
    codes = unit_codes(run, name)
    units = wide["sample"].map(dict(zip(codes["sample"], codes["unit"], strict=True))).to_numpy()
    observed = _pair_lift(experts, n_experts)
    rng = np.random.default_rng(seed)
    total = np.zeros_like(observed)
    exceed = np.zeros_like(observed)
    from .permutation import check_permutations, shuffle_within

    n_permutations = check_permutations(n_permutations)
    for _ in range(n_permutations):
        shuffled = experts.copy()
        for rank in range(1, k):
            shuffled[:, rank] = experts[shuffle_within(units, rng, 1)[0], rank]
        lift = _pair_lift(shuffled, n_experts)
        total += lift
        exceed += lift >= observed - 1e-12
    counts = _pair_counts(experts, n_experts)
    a, b = np.nonzero(counts)
    return pd.DataFrame(
        {
            "expert_a": a,
            "expert_b": b,
            "count": counts[a, b].astype(np.int64),
            "lift": observed[a, b],
            "null_lift": total[a, b] / n_permutations,
            "p_value": (1 + exceed[a, b]) / (1 + n_permutations),
            "n_permutations": n_permutations,
            "seed": seed,
            "method": "rank columns shuffled within units",
            "unit": name,
        }
    )


def _pair_counts(experts: np.ndarray, n_experts: int) -> np.ndarray:
    """`[E, E]` decisions that chose both a and b (a ≠ b), from `[D, k]` expert ids (−1 = none)."""
    pairs = np.zeros(n_experts * n_experts)
    k = experts.shape[1]
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            a, b = experts[:, i], experts[:, j]
            keep = (a >= 0) & (b >= 0) & (a != b)
            pairs += np.bincount(a[keep] * n_experts + b[keep], minlength=n_experts * n_experts)
    return pairs.reshape(n_experts, n_experts)


def _pair_lift(experts: np.ndarray, n_experts: int) -> np.ndarray:
    """Lift P(a, b) / (P(a) P(b)) of every pair over the decisions of `[D, k]` expert ids."""
    decisions = len(experts)
    singles = np.zeros(n_experts)
    for column in experts.T:
        singles += np.bincount(column[column >= 0], minlength=n_experts)
    pairs = _pair_counts(experts, n_experts)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = (pairs / decisions) / np.outer(singles / decisions, singles / decisions)
    return np.nan_to_num(lift, nan=0.0)
