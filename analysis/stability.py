"""Router stability: which decisions flip under noise, and are they the uncertain ones?

GW-MoE argues that tokens routed with near-equal scores are fragile. Given an unedited run and a run of
the same inputs with noise on the routers (`routescope.probes.probe_noise`), a decision *flips*
when its top-1 expert (the chosen expert with the largest gate weight, ties to the lower rank) differs
between the runs; `set_changed` says whether the set of chosen experts differs. Both are tied to the
base run's own uncertainty of that decision: its top-1 − top-2 probability margin and entropy (nats).

- `flip_rate`: per margin bucket (edges `bins`, right-closed, the first one includes 0): decisions,
  flips, flip rate, set-change rate, mean entropy and mean margin;
- `flip_correlation`: per layer and over all layers, the Pearson correlation of the flip indicator with
  the margin and with the entropy (the point-biserial correlation; negative with the margin means
  low-margin decisions flip more), and the mean margin of flipped and kept decisions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .engine import connect, quote_path

KEYS = ("sample", "position", "step", "router", "call")
DEFAULT_BINS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0)


def decision_changes(base: Run, other: Run) -> pd.DataFrame:
    """One row per decision both runs recorded: the keys, `layer`, the base run's `entropy` and
    `margin`, `top1_base`, `top1_other`, `flipped` and `set_changed` (expert sets, ignoring drops)."""
    con = connect(base)
    try:
        con.execute(
            f"CREATE VIEW other AS SELECT * FROM read_parquet({quote_path(other.table_path('assignments'))})"
        )
        keys = ", ".join(KEYS)
        on = " AND ".join(f"a.{k} = b.{k}" for k in KEYS)
        top = (
            "SELECT {keys}, any_value(layer) AS layer, list(expert ORDER BY weight DESC, rank)[1] AS top1, "
            "list_sort(list(expert)) AS experts FROM {table} GROUP BY {keys}"
        )
        table = con.execute(
            f"""WITH a AS ({top.format(keys=keys, table="assignments")}),
                     b AS ({top.format(keys=keys, table="other")})
                SELECT {", ".join(f"a.{k}" for k in KEYS)}, a.layer, d.entropy, d.margin,
                       a.top1 AS top1_base, b.top1 AS top1_other, a.top1 <> b.top1 AS flipped,
                       a.experts <> b.experts AS set_changed
                FROM a JOIN b ON {on}
                JOIN decisions d ON {" AND ".join(f"d.{k} = a.{k}" for k in KEYS)}
                ORDER BY {", ".join(f"a.{k}" for k in KEYS)}"""
        ).df()
    finally:
        con.close()
    if table.empty:
        raise InputError(f"runs {base.name!r} and {other.name!r} share no decisions; record the same inputs")
    return table


def flip_rate(
    base: Run, noisy: Run, *, bins: Sequence[float] = DEFAULT_BINS, by_layer: bool = False
) -> pd.DataFrame:
    """`[layer,] margin_low, margin_high, decisions, flips, flip_rate, set_change_rate, mean_entropy,
    mean_margin` per margin bucket (empty buckets are left out)."""
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise InputError(f"bins must be at least two increasing margin edges, not {list(bins)}")
    changes = decision_changes(base, noisy)
    bucket = np.searchsorted(edges, changes["margin"].to_numpy(), side="left") - 1
    bucket = np.clip(bucket, 0, len(edges) - 2)  # margin 0 joins the first bucket; > last edge the last
    changes["bucket"] = bucket
    keys = ["layer", "bucket"] if by_layer else ["bucket"]
    table = (
        changes.groupby(keys)
        .agg(
            decisions=("flipped", "size"),
            flips=("flipped", "sum"),
            flip_rate=("flipped", "mean"),
            set_change_rate=("set_changed", "mean"),
            mean_entropy=("entropy", "mean"),
            mean_margin=("margin", "mean"),
        )
        .reset_index()
    )
    table.insert(len(keys) - 1, "margin_low", edges[table["bucket"].to_numpy()])
    table.insert(len(keys), "margin_high", edges[table["bucket"].to_numpy() + 1])
    table["flips"] = table["flips"].astype("int64")
    return table.drop(columns=["bucket"])


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def flip_correlation(base: Run, noisy: Run) -> pd.DataFrame:
    """`layer, decisions, flip_rate, corr_margin, corr_entropy, margin_flipped, margin_kept` per layer and
    a last row over all layers (`layer` = -1)."""
    changes = decision_changes(base, noisy)
    rows = []
    groups = [(int(layer), part) for layer, part in changes.groupby("layer")] + [(-1, changes)]
    for layer, part in groups:
        flipped = part["flipped"].to_numpy(dtype=float)
        margin, entropy = part["margin"].to_numpy(dtype=float), part["entropy"].to_numpy(dtype=float)
        rows.append(
            {
                "layer": layer,
                "decisions": len(part),
                "flip_rate": float(flipped.mean()),
                "corr_margin": _correlation(flipped, margin),
                "corr_entropy": _correlation(flipped, entropy),
                "margin_flipped": float(margin[flipped == 1].mean()) if flipped.any() else float("nan"),
                "margin_kept": float(margin[flipped == 0].mean()) if (flipped == 0).any() else float("nan"),
            }
        )
    return pd.DataFrame(rows)
