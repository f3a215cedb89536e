"""Bootstrap intervals of per-group means over units of independence, for tables that report a mean per
group (the loss of the tokens in a router-entropy bin, of the tokens an expert takes first).

A token-level standard error would treat the tokens of one sequence as independent draws, which they are
not (`units.py`), and give intervals that are too narrow. Here the caller aggregates, per unit and group,
the sum of the value and the count of rows (in SQL, once); each bootstrap resample draws the units with
replacement as multinomial weights and recomputes every group's mean as Σ w·sum / Σ w·count. The weights
depend only on the number of units and the seed, so every group of a table (and every layer, when the
caller asks layer by layer) is read from the same resamples. The interval is the percentile interval at
`level`; resamples that leave a group with no row are skipped for that group. A group that only one
unit holds has no interval (NaN): every resample that holds it gives the same mean, and a zero-width
interval would claim a certainty one unit cannot give.

Memory stays bounded for tables with many groups (a label such as `token_id`): the per-unit sums are a
sparse units × groups matrix (one entry per input row), and the groups are bootstrapped in chunks of
`GROUP_CHUNK`, each chunk drawing the same resamples again from the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from routescope.store import InputError

DEFAULT_BOOT = 1000
DEFAULT_LEVEL = 0.95
BATCH = 64
"""Resamples evaluated at once: bounds memory to BATCH × units weights."""
GROUP_CHUNK = 2048
"""Groups bootstrapped at once: bounds memory to n_boot × GROUP_CHUNK resampled means."""


def check_bootstrap(n_boot: int, level: float) -> None:
    """n_boot ≥ 10 and 0 < level < 1, else a one-line error."""
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 10:
        raise InputError(f"n_boot must be an integer ≥ 10, got {n_boot!r}", field="param")
    if not 0 < float(level) < 1:
        raise InputError(f"level must be between 0 and 1 (e.g. 0.95), got {level!r}", field="param")


def mean_intervals(
    per_unit: pd.DataFrame,
    groups: Sequence[str],
    *,
    total: str = "total",
    count: str = "count",
    unit: str = "unit",
    n_boot: int = DEFAULT_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> pd.DataFrame:
    """`*groups, ci_low, ci_high`: the percentile bootstrap interval of each group's mean
    (Σ `total` / Σ `count`) over resampled units, from `per_unit` rows `*groups, unit, total, count` (one
    per group and unit; `unit` holds dense codes 0 … U−1 or any keys)."""
    check_bootstrap(n_boot, level)
    keys = list(groups)
    codes, units = pd.factorize(per_unit[unit], sort=True)
    group_index = pd.MultiIndex.from_frame(per_unit[keys]) if len(keys) > 1 else pd.Index(per_unit[keys[0]])
    group_codes, group_values = pd.factorize(group_index, sort=True)
    n_units, n_groups = len(units), len(group_values)
    shape = (n_units, n_groups)
    sums = sparse.csc_matrix((per_unit[total].to_numpy(dtype=np.float64), (codes, group_codes)), shape=shape)
    counts = sparse.csc_matrix(
        (per_unit[count].to_numpy(dtype=np.float64), (codes, group_codes)), shape=shape
    )
    held_by = np.diff((counts > 0).astype(np.int64).tocsc().indptr)  # units with a row of each group
    low, high = np.empty(n_groups), np.empty(n_groups)
    for start in range(0, n_groups, GROUP_CHUNK):
        columns = slice(start, min(start + GROUP_CHUNK, n_groups))
        part_sums, part_counts = sums[:, columns].T.tocsr(), counts[:, columns].T.tocsr()
        rng = np.random.default_rng(seed)  # every chunk reads the same resamples
        draws = []
        for first in range(0, int(n_boot), BATCH):
            size = min(BATCH, int(n_boot) - first)
            weights = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=size).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                draws.append((part_sums @ weights.T).T / (part_counts @ weights.T).T)
        stacked = np.concatenate(draws)
        low[columns], high[columns] = np.nanquantile(stacked, [(1 - level) / 2, (1 + level) / 2], axis=0)
    out = (
        pd.DataFrame(list(group_values), columns=keys)
        if len(keys) > 1
        else pd.DataFrame({keys[0]: np.asarray(group_values)})
    )
    single = held_by < 2
    low[single], high[single] = np.nan, np.nan
    out["ci_low"], out["ci_high"] = low, high
    return out
