"""Expert placement: how concentrated each layer's load is, and how it would spread over devices.

Serving engines place a layer's experts on G devices (expert parallelism) and the busiest device sets the
step time; these tables answer "how many experts carry most of the work" (Megatron-Core
`tools/moe_routing`, `analyze_routing_concentration`) and "how even would the devices be under a
placement" (SGLang's EPLB reports balancedness = mean / max device load). All are computed from the
per-layer expert load (`balance.expert_load`: routed, non-dropped assignments, aggregated in DuckDB) and
finished on the small [layers × experts] matrix here (docs/metrics.md, "Expert placement").

- `coverage`: share of the layer's assignments covered by its N most-loaded experts, N = 1 … E.
- `hot_set`: the smallest N whose coverage reaches each threshold.
- `device_load`: per-device load under contiguous, round-robin and load-balanced (greedy LPT with at most
  ⌈P/G⌉ experts per device) placements, optionally replicating the R hottest experts (one extra copy
  each, its load split evenly between the copies).

`place` and `device_loads` are the plain numpy placement, exposed so tests and notebooks can check them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .balance import expert_load

Placement = Literal["contiguous", "round-robin", "balanced"]
PLACEMENTS: tuple[Placement, ...] = ("contiguous", "round-robin", "balanced")
EPSILON = 1e-12
"""Tolerance when comparing a cumulative share with a threshold (shares are sums of floats)."""


def _layer_loads(run: Run, ranks: str = "all") -> dict[int, np.ndarray]:
    """Per layer, the assignment counts of experts 0 … E−1 (zero-filled)."""
    load = expert_load(run, ("layer",), ranks=ranks)
    return {
        int(layer): part.sort_values("expert")["count"].to_numpy(dtype=float)
        for layer, part in load.groupby("layer", sort=True)
    }


def coverage(run: Run, ranks: str = "all") -> pd.DataFrame:
    """`layer, top_n, coverage, expert_share`: the share of the layer's assignments its `top_n` most-loaded
    experts take (`coverage`), for top_n = 1 … E, beside top_n / E (`expert_share`, a uniform router's
    coverage). `ranks="top1"` counts first choices only."""
    rows = []
    for layer, counts in _layer_loads(run, ranks).items():
        total = counts.sum()
        if total <= 0:
            continue
        curve = np.cumsum(np.sort(counts)[::-1]) / total
        n = len(counts)
        rows.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "top_n": np.arange(1, n + 1),
                    "coverage": curve,
                    "expert_share": np.arange(1, n + 1) / n,
                }
            )
        )
    columns = ["layer", "top_n", "coverage", "expert_share"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    values = [float(t) for t in thresholds]
    if not values or any(not 0 < t <= 1 for t in values):
        raise InputError(f"thresholds must be shares in (0, 1], e.g. 0.5,0.8,0.9; got {list(thresholds)}")
    return sorted(set(values))


def hot_set(run: Run, thresholds: Sequence[float] = (0.5, 0.8, 0.9), ranks: str = "all") -> pd.DataFrame:
    """`layer, threshold, hot_set, hot_share, uniform_hot_set`: the smallest number of most-loaded experts
    whose coverage reaches `threshold` (`hot_set`), as a share of the layer's experts (`hot_share`), and
    ⌈threshold · E⌉, the hot set of a perfectly even layer."""
    levels = _check_thresholds(thresholds)
    table = coverage(run, ranks)
    rows = []
    for layer, part in table.groupby("layer", sort=True):
        curve = part["coverage"].to_numpy()
        n = len(curve)
        for level in levels:
            size = int(np.searchsorted(curve, level - EPSILON, side="left")) + 1
            rows.append(
                {
                    "layer": layer,
                    "threshold": level,
                    "hot_set": min(size, n),
                    "hot_share": min(size, n) / n,
                    "uniform_hot_set": math.ceil(level * n - EPSILON),
                }
            )
    return pd.DataFrame(rows, columns=["layer", "threshold", "hot_set", "hot_share", "uniform_hot_set"])


def replicate(counts: np.ndarray, replicas: int) -> tuple[np.ndarray, np.ndarray]:
    """(logical expert of each physical copy, load of each copy): experts 0 … E−1 in id order, then one extra
    copy of each of the `replicas` most-loaded experts (hottest first, ties to the lower id); a replicated
    expert's load is split evenly between its two copies."""
    n = len(counts)
    if not 0 <= replicas <= n:
        raise InputError(f"replicas must be between 0 and the layer's {n} experts, not {replicas}")
    hottest = np.argsort(-counts, kind="stable")[:replicas]
    logical = np.concatenate([np.arange(n), hottest])
    copies = np.bincount(logical, minlength=n)
    return logical, counts[logical] / copies[logical]


def place(loads: np.ndarray, devices: int, placement: Placement) -> np.ndarray:
    """The device of each of the P physical experts (`loads` in physical order) under `placement`:
    `contiguous` gives device g the g-th block of ⌈P/G⌉ or ⌊P/G⌋ consecutive experts (⌊i·G/P⌋);
    `round-robin` gives expert i to device i mod G; `balanced` is greedy LPT — experts from the most to
    the least loaded (ties to the lower index), each to the least-loaded device (ties to the lower device)
    that holds fewer than ⌈P/G⌉ experts."""
    n = len(loads)
    if devices < 1 or devices > n:
        raise InputError(f"devices must be between 1 and the {n} physical experts of a layer, not {devices}")
    index = np.arange(n)
    if placement == "contiguous":
        return index * devices // n
    if placement == "round-robin":
        return index % devices
    if placement != "balanced":
        raise InputError(f"unknown placement {placement!r}; choose from {', '.join(PLACEMENTS)}")
    slots = math.ceil(n / devices)
    total = np.zeros(devices)
    held = np.zeros(devices, dtype=np.int64)
    device = np.empty(n, dtype=np.int64)
    for item in np.argsort(-loads, kind="stable"):
        open_devices = np.flatnonzero(held < slots)
        chosen = int(open_devices[np.argmin(total[open_devices])])
        device[item] = chosen
        total[chosen] += loads[item]
        held[chosen] += 1
    return device


def device_loads(counts: np.ndarray, devices: int, placement: Placement, replicas: int = 0) -> np.ndarray:
    """The total load of each of `devices` devices for one layer's expert `counts` (see `place`)."""
    _, loads = replicate(np.asarray(counts, dtype=float), replicas)
    return np.bincount(place(loads, devices, placement), weights=loads, minlength=devices)


def device_load(run: Run, devices: int = 8, replicas: int = 0, ranks: str = "all") -> pd.DataFrame:
    """`layer, placement, devices, replicas, max_share, max_over_mean, balancedness`: for each layer and
    placement (`contiguous`, `round-robin`, `balanced`), the busiest device's share of the layer's
    assignments, its load over the mean device load, and SGLang EPLB's balancedness = mean / max (1 when
    every device does the same work). `replicas` extra copies of the hottest experts (see `replicate`)."""
    if devices < 1:
        raise InputError(f"devices must be at least 1, not {devices}")
    rows = []
    for layer, counts in _layer_loads(run, ranks).items():
        total = counts.sum()
        if total <= 0:
            continue
        for placement in PLACEMENTS:
            per_device = device_loads(counts, devices, placement, replicas)
            top, mean = per_device.max(), per_device.mean()
            rows.append(
                {
                    "layer": layer,
                    "placement": placement,
                    "devices": devices,
                    "replicas": replicas,
                    "max_share": top / total,
                    "max_over_mean": top / mean,
                    "balancedness": mean / top,
                }
            )
    columns = ["layer", "placement", "devices", "replicas", "max_share", "max_over_mean", "balancedness"]
    return pd.DataFrame(rows, columns=columns)
