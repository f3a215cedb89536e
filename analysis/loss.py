"""Per-token loss against routing: does uncertain, or particular, routing cost loss?

GW-MoE's premise is that tokens whose router is uncertain are prone to wrong expert choices; that matters
only if those tokens pay for it in loss, which a loss per input cannot show. Runs recorded with
`token_loss=True` hold every token's `nll` (−log p(next token), tokens table); these analyses join it to
the routing facts in DuckDB and finish on the small result in pandas:

- `loss_by_uncertainty`: mean nll per bin of normalised router entropy (H / ln E), per layer, with counts;
- `loss_by_expert`: mean nll of the tokens whose top-1 expert is e, per layer, and whether the spread
  between experts (the token-weighted variance of their mean nll) exceeds a permutation null that shuffles
  nll among tokens over units of independence: within each sequence when sequences hold several scored
  tokens (what sequences share — domain, difficulty — stays in the null), across units when each holds one;
- `loss_by_label`: mean nll per label value (a sample label or a token column).

The mean nll of an entropy bin, of an expert and of a label value comes with a percentile bootstrap
interval over the same units (`ci_low`, `ci_high` at `level`; `intervals.mean_intervals`), so a figure can
show how sure the mean
is without treating the tokens of one sequence as independent.

A run without token loss is refused in one line (`field="token_loss"`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from routescope.store import InputError, Run
from routescope.store.capabilities import require_recorded

from .frames import TOKEN_LABELS, norm_entropy_sql, sql, stack_of
from .intervals import DEFAULT_BOOT, DEFAULT_LEVEL, check_bootstrap, mean_intervals
from .permutation import DEFAULT_PERMUTATIONS, permutation_null
from .units import SEQUENCE, unit_codes, unit_name, unit_sql

DEFAULT_BINS = 10
BY_EXPERT_COLUMNS = [
    "layer", "expert", "tokens", "mean_nll", "excess_nll", "spread", "null_mean", "p_value", "method", "unit",
    "n_permutations", "ci_low", "ci_high", "level",
]  # fmt: skip


def require_token_loss(run: Run) -> None:
    """Refuse a run recorded without token loss, in one line naming the option (field `token_loss`)."""
    require_recorded(run.info.caps, ("token_loss",))


def _token_join(run: Run, fact: str) -> str:
    """JOIN the tokens (aliased t) that carry a loss to the fact table aliased `fact`."""
    return (
        f"JOIN tokens t ON t.sample = {fact}.sample AND t.position = {fact}.position "
        f"AND t.stack = {stack_of(run, fact)}"
    )


def loss_by_uncertainty(
    run: Run,
    bins: int = DEFAULT_BINS,
    n_boot: int = DEFAULT_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    unit: str | None = None,
) -> pd.DataFrame:
    """`layer, bin, bin_low, bin_high, tokens, mean_nll, mean_norm_entropy, ci_low, ci_high, level, unit`:
    tokens binned by their router's normalised entropy into `bins` equal bins of [0, 1] (the last bin
    closed); `ci_low`, `ci_high` bound `mean_nll` by a bootstrap over units (`n_boot` resamples, `seed`)."""
    require_token_loss(run)
    if isinstance(bins, bool) or int(bins) != bins or bins < 1:
        raise InputError(f"bins must be a positive integer, got {bins!r}")
    check_bootstrap(n_boot, level)
    bins = int(bins)
    name = unit_name(run, unit)
    unit_join, unit_expr = unit_sql(run, name, fact="d")
    entropy = norm_entropy_sql()
    per_unit = sql(
        run,
        f"""SELECT d.layer, CAST(least(floor({entropy} * {bins}), {bins - 1}) AS INTEGER) AS bin,
                   {unit_expr} AS unit, count(*) AS tokens, sum(t.nll) AS total_nll,
                   sum({entropy}) AS total_entropy
            FROM decisions d JOIN routers r ON r.id = d.router {_token_join(run, "d")} {unit_join}
            WHERE t.nll IS NOT NULL GROUP BY ALL ORDER BY ALL""",
    )
    table = per_unit.groupby(["layer", "bin"], as_index=False)[["tokens", "total_nll", "total_entropy"]].sum()
    table["tokens"] = table["tokens"].astype(np.int64)
    table["mean_nll"] = table["total_nll"] / table["tokens"]
    table["mean_norm_entropy"] = table["total_entropy"] / table["tokens"]
    table.insert(2, "bin_low", table["bin"] / bins)
    table.insert(3, "bin_high", (table["bin"] + 1) / bins)
    table = table.drop(columns=["total_nll", "total_entropy"])
    if table.empty:
        return table.assign(ci_low=np.nan, ci_high=np.nan, level=level, unit=name)
    intervals = mean_intervals(
        per_unit, ["layer", "bin"], total="total_nll", count="tokens", n_boot=n_boot, level=level, seed=seed
    )
    table = table.merge(intervals, on=["layer", "bin"], how="left")
    return table.assign(level=float(level), unit=name)


def _between_spread(onehot: np.ndarray, counts: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """statistic([B, n] nll) → [B] token-weighted variance of the per-expert mean nll."""
    n = counts.sum()

    def statistic(batch: np.ndarray) -> np.ndarray:
        means = (batch @ onehot) / counts
        overall = batch.mean(axis=1, keepdims=True)
        return ((means - overall) ** 2 * counts).sum(axis=1) / n

    return statistic


def loss_by_expert(
    run: Run,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    unit: str | None = None,
    n_boot: int = DEFAULT_BOOT,
    level: float = DEFAULT_LEVEL,
) -> pd.DataFrame:
    """`layer, expert, tokens, mean_nll, excess_nll, spread, null_mean, p_value, method, unit,
    n_permutations, ci_low, ci_high, level`: per layer and top-1 expert, the mean nll of its tokens and its
    excess over the layer's mean, with a bootstrap interval of the mean over units; per layer (repeated on
    its rows) the between-expert spread, its permutation mean and one-sided p-value, with the unit of
    independence the null shuffles over."""
    require_token_loss(run)
    check_bootstrap(n_boot, level)
    name = unit_name(run, unit)
    unit_join, unit_expr = unit_sql(run, name)
    rows = sql(
        run,
        f"""SELECT a.layer, a.expert, {unit_expr} AS unit_key, t.nll
            FROM assignments a {_token_join(run, "a")} {unit_join}
            WHERE a.rank = 0 AND NOT a.dropped AND t.nll IS NOT NULL
            ORDER BY a.layer, a.sample, a.position, a.router, a.call""",
    )
    codes = unit_codes(run, name)
    if name == SEQUENCE:
        lookup = dict(zip(codes["sample"], codes["unit"], strict=True))
        rows["unit"] = rows["unit_key"].map(lookup)
    else:
        rows["unit"] = pd.factorize(rows["unit_key"], sort=True)[0]
    out = []
    for layer, part in rows.groupby("layer", sort=True):
        experts, code = np.unique(part["expert"].to_numpy(), return_inverse=True)
        nll = part["nll"].to_numpy(dtype=np.float64)
        onehot = np.eye(len(experts))[code]
        counts = onehot.sum(axis=0)
        units = part["unit"].to_numpy(dtype=np.int64)
        several = np.bincount(units).max() > 1
        scope = "within" if several else "across"
        null = permutation_null(  # across: one row per unit, so rows are units
            _between_spread(onehot, counts),
            nll,
            groups=units,
            scope=scope,
            unit=name,
            n_permutations=n_permutations,
            seed=seed,
        )
        means = (nll @ onehot) / counts
        per_unit = part.groupby(["expert", "unit"], as_index=False)["nll"].agg(total="sum", count="size")
        interval = mean_intervals(per_unit, ["expert"], n_boot=n_boot, level=level, seed=seed)
        interval = interval.set_index("expert").reindex(experts)
        out.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "expert": experts,
                    "tokens": counts.astype(np.int64),
                    "mean_nll": means,
                    "excess_nll": means - nll.mean(),
                    "spread": null.observed,
                    "null_mean": null.null_mean,
                    "p_value": null.p_value,
                    "method": null.method,
                    "unit": name,
                    "n_permutations": n_permutations,
                    "ci_low": interval["ci_low"].to_numpy(),
                    "ci_high": interval["ci_high"].to_numpy(),
                    "level": float(level),
                }
            )
        )
    if not out:
        return pd.DataFrame(columns=BY_EXPERT_COLUMNS)
    return pd.concat(out, ignore_index=True)


def loss_by_label(
    run: Run,
    label: str,
    n_boot: int = DEFAULT_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    unit: str | None = None,
) -> pd.DataFrame:
    """`<label>, tokens, mean_nll, total_nll, ci_low, ci_high, level, unit`: the loss of the tokens of each
    label value (a sample label such as `domain`, or a token column such as `token`, `token_id`,
    `position`), highest mean first, with a percentile bootstrap interval of the mean over units of
    independence (`n_boot` resamples, `seed`): a value's tokens are resampled with the sequences that hold
    them, never one by one."""
    require_token_loss(run)
    check_bootstrap(n_boot, level)
    if label in run.label_columns:
        join, expr = "JOIN samples s ON s.sample = t.sample", f's."{label}"'
    elif label in (*TOKEN_LABELS, "position", "stack"):
        join, expr = "", f"t.{label}"
    else:
        choices = [*run.label_columns, *TOKEN_LABELS, "position", "stack"]
        raise InputError(f"run {run.name!r} has no label {label!r}; labels: {', '.join(choices)}", field="by")
    name = unit_name(run, unit)
    unit_join, unit_expr = unit_sql(run, name, fact="t")
    per_unit = sql(
        run,
        f"""SELECT {expr} AS "{label}", {unit_expr} AS unit, count(*) AS count, sum(t.nll) AS total
            FROM tokens t {join} {unit_join} WHERE t.nll IS NOT NULL GROUP BY ALL""",
    )
    table = per_unit.groupby(label, as_index=False, dropna=False)[["count", "total"]].sum()
    table = table.rename(columns={"count": "tokens", "total": "total_nll"})
    table["tokens"] = table["tokens"].astype(np.int64)
    table.insert(2, "mean_nll", table["total_nll"] / table["tokens"])
    if table.empty:
        return table.assign(ci_low=np.nan, ci_high=np.nan, level=float(level), unit=name)
    intervals = mean_intervals(per_unit, [label], n_boot=n_boot, level=level, seed=seed)
    table = table.merge(intervals, on=label, how="left")
    table = table.sort_values(["mean_nll", label], ascending=[False, True], kind="stable", ignore_index=True)
    return table.assign(level=float(level), unit=name)
