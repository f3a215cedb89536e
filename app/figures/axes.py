"""Keeping large axes legible: hundreds of experts and thousands of steps in a 3.3-inch figure.

Three tools, used by the builders: a "nice" tick stride (1, 2, 5, 10, 20, 50, ...) so that at most about
a dozen ticks are labelled; bucketing of consecutive integer values (steps) into equal-width bins; and an
expert order that puts experts with the same preferred column next to each other, so a specialization
map reads as blocks instead of noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MAX_TICKS = 12
SORTED_TICKS = 32
"""A sorted (categorical) expert axis labels every expert up to this many rows."""


def nice_stride(n: int, max_ticks: int = MAX_TICKS) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that labels at most `max_ticks` of `n` positions."""
    stride = 1
    while n / stride > max_ticks:
        for factor in (2, 2.5, 2):
            stride = int(stride * factor)
            if n / stride <= max_ticks:
                break
    return stride


def thin_ticks(labels: Sequence[object], max_ticks: int = MAX_TICKS) -> dict[str, object]:
    """`tickvals`/`ticktext` that label every `nice_stride`-th category of a categorical axis."""
    stride = nice_stride(len(labels), max_ticks)
    kept = list(labels)[::stride]
    return {"tickmode": "array", "tickvals": kept, "ticktext": [str(v) for v in kept]}


def bucket(values: pd.Series, max_bins: int) -> tuple[pd.Series, int]:
    """Integer values mapped to the start of equal-width bins (a nice stride) so at most `max_bins` remain;
    returns the bin starts and the bin width (1 when no bucketing is needed)."""
    span = int(values.max()) - int(values.min()) + 1 if len(values) else 0
    if span <= max_bins:
        return values.astype(np.int64), 1
    width = nice_stride(span, max_bins)
    start = int(values.min())
    return (start + (values.astype(np.int64) - start) // width * width), width


def block_order(matrix: pd.DataFrame) -> list[object]:
    """Row labels ordered by the column of their largest value, then by that value (descending): rows
    that prefer the same column sit together. Rows of NaN only go last."""
    values = matrix.to_numpy(dtype=float)
    has = ~np.isnan(values).all(axis=1)
    filled = np.where(np.isnan(values), -np.inf, values)
    best = np.where(has, filled.argmax(axis=1), values.shape[1])
    peak = np.where(has, filled.max(axis=1), -np.inf)
    order = np.lexsort((np.arange(len(values)), -peak, best))
    return [matrix.index[i] for i in order]
