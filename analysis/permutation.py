"""Permutation tests over units of independence: the one machinery behind every p-value in RouteScope.

A permutation test keeps the routing fixed and shuffles a label (a domain, a token id, an uncertain flag,
a position) in a way the null hypothesis says cannot matter, then asks how often the shuffled data give a
statistic at least as large as the observed one:

    p = (1 + #{null ≥ observed}) / (1 + N)

(Phipson & Smyth 2010: the +1s make the test exact and never report p = 0). Which shuffles are allowed
depends on the label and on the unit of independence (`units.py`):

- `across` units: labels constant within a unit (a sequence's domain, an image's class, any sample-level
  label) are permuted *between* units, whole units at a time — tokens of one sequence never split;
- `within` units: labels that vary inside a unit (position, patch row/col, step, token id, a per-token
  flag) are permuted *among the rows of one unit*, so whatever a unit shares (its domain, its prompt) is
  kept and only the label's link to routing inside the unit is broken.

Shuffles are drawn from `numpy.random.default_rng(seed)` in batches (so memory stays bounded) and the
statistic is evaluated on a whole batch at once where it can be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from routescope.store import InputError

Scope = Literal["across", "within"]
SCOPES: tuple[Scope, ...] = ("across", "within")
DEFAULT_PERMUTATIONS = 999
"""Default N: p-values resolve down to 1/1000."""
BATCH = 64
"""Shuffles evaluated at once."""
CACHED_SHUFFLES = 1 << 23
"""Across-unit shuffles of at most this many entries (N × units; 32 MB as int32) are kept after they are
drawn: they depend only on (units, N, seed), so every layer of a `label_nmi` reuses the first layer's
instead of sorting N fresh random keys (on 6,104 sequences × 1,000 shuffles, 0.2 s a layer)."""


def check_permutations(n_permutations: int) -> int:
    """N must be a positive integer; anything else is a one-line error."""
    if isinstance(n_permutations, bool) or int(n_permutations) != n_permutations or n_permutations < 1:
        raise InputError(f"the number of permutations must be a positive integer, got {n_permutations!r}")
    return int(n_permutations)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """(1 + #{null ≥ observed}) / (1 + N); ties within float rounding count as ≥."""
    tolerance = 1e-12 * max(1.0, abs(float(observed)))
    return float((1 + np.count_nonzero(null >= observed - tolerance)) / (1 + len(null)))


def method_name(scope: Scope, unit: str) -> str:
    """The `method` column of a test: what was permuted and over which unit."""
    where = "between" if scope == "across" else "within"
    return f"permutation {where} units ({unit})"


@dataclass(frozen=True)
class NullDistribution:
    """The observed statistic, its permutation null and how it was drawn."""

    observed: float
    null: np.ndarray
    scope: Scope
    unit: str
    seed: int

    @property
    def p_value(self) -> float:
        """One-sided permutation p-value (large statistics are evidence against the null)."""
        return permutation_p(self.observed, self.null)

    @property
    def null_mean(self) -> float:
        """The permutation mean: the chance level of the statistic under the null."""
        return float(self.null.mean())

    def quantile(self, q: float) -> float:
        """A quantile of the null distribution (e.g. 0.99 for a 1 % critical value)."""
        return float(np.quantile(self.null, q))

    @property
    def n_permutations(self) -> int:
        return len(self.null)

    @property
    def method(self) -> str:
        return method_name(self.scope, self.unit)


def shuffle_within(groups: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """`[size, n]` index arrays, each a random permutation of `0 … n−1` that only swaps rows of equal
    `groups` (a unit code per row): row i takes the label of row `index[b, i]`."""
    n = len(groups)
    order = np.argsort(groups, kind="stable")
    sizes = np.bincount(groups)
    sizes = sizes[sizes > 0]
    index = np.empty((size, n), dtype=np.int64)
    if len(sizes) and (sizes == sizes[0]).all():  # equal units (images of one sampler): shuffle blocks in C
        blocks = np.broadcast_to(order.reshape(len(sizes), sizes[0]), (size, len(sizes), sizes[0]))
        index[:, order] = rng.permuted(blocks, axis=2).reshape(size, n)
        return index
    ranked = groups[order].astype(np.float64)
    keys = ranked[None, :] + rng.random((size, n))  # sorts within each group, groups stay in place
    index[:, order] = order[np.argsort(keys, axis=1)]  # keys are distinct: no need for a stable sort
    return index


def shuffle_across(n: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """`[size, n]` independent random permutations of `0 … n−1`."""
    return np.argsort(rng.random((size, n)), axis=1)


def shuffled_labels(
    labels: np.ndarray,
    *,
    groups: np.ndarray | None,
    scope: Scope,
    n_permutations: int,
    seed: int,
) -> Iterator[np.ndarray]:
    """Batches `[B, n]` of shuffled copies of `labels` (N rows in all, seeded). `scope="across"`: `labels`
    holds one value per unit and whole units are shuffled; `scope="within"`: `labels` holds one value per
    row and rows are shuffled within equal `groups` (integer unit codes)."""
    n_permutations = check_permutations(n_permutations)
    if scope not in SCOPES:
        raise InputError(f"unknown permutation scope {scope!r}; choose from {', '.join(SCOPES)}")
    if scope == "within" and groups is None:
        raise InputError("a within-unit permutation needs the unit of every row")
    labels = np.asarray(labels)
    cacheable = isinstance(seed, int | np.integer) and not isinstance(seed, bool)
    if scope == "across" and cacheable and len(labels) * n_permutations <= CACHED_SHUFFLES:
        for index in _across_batches(len(labels), n_permutations, int(seed)):
            yield labels[index]
        return
    rng = np.random.default_rng(seed)
    for start in range(0, n_permutations, BATCH):
        size = min(BATCH, n_permutations - start)
        if scope == "across":
            index = shuffle_across(len(labels), rng, size)
        else:
            index = shuffle_within(np.asarray(groups), rng, size)
        yield labels[index]


@lru_cache(maxsize=1)
def _across_batches(n: int, n_permutations: int, seed: int) -> tuple[np.ndarray, ...]:
    """The batches of `shuffle_across` index arrays `shuffled_labels` draws for (n, N, seed), kept
    (read-only, int32) for the next call with the same arguments — the same draws, in the same order."""
    rng = np.random.default_rng(seed)
    batches = []
    for start in range(0, n_permutations, BATCH):
        index = shuffle_across(n, rng, min(BATCH, n_permutations - start)).astype(np.int32)
        index.flags.writeable = False
        batches.append(index)
    return tuple(batches)


def permutation_null(
    statistic: Callable[[np.ndarray], np.ndarray],
    labels: np.ndarray,
    *,
    groups: np.ndarray | None,
    scope: Scope,
    unit: str,
    n_permutations: int,
    seed: int,
) -> NullDistribution:
    """The permutation null of `statistic`, a function of a `[B, n]` batch of label vectors returning `[B]`
    values; the shuffles are those of `shuffled_labels`."""
    labels = np.asarray(labels)
    observed = float(statistic(labels[None, :])[0])
    batches = shuffled_labels(labels, groups=groups, scope=scope, n_permutations=n_permutations, seed=seed)
    null = np.concatenate([np.asarray(statistic(batch), dtype=np.float64) for batch in batches])
    return NullDistribution(observed, null, scope, unit, int(seed))
