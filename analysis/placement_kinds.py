"""The expert-placement report kinds (`coverage`, `hot-set`, `placement`, `drift`, `drift-experts`,
`predictability`), declared beside their functions and merged into `registry.ANALYSES` by name.

All but `predictability` need only expert loads, so they work on every run, counts-only imports
included; `predictability` pairs a token's decisions at two layers and needs expert ids.
"""

from __future__ import annotations

from .drift import expert_drift, layer_predictability, load_drift
from .kinds import NOTHING, Analysis
from .placement import coverage, device_load, hot_set

PLACEMENT_ANALYSES: dict[str, Analysis] = {
    "coverage": Analysis(
        coverage,
        "share of assignments the N most-loaded experts take, per layer",
        ("layer", "top_n"),
        needs=NOTHING,
    ),
    "hot-set": Analysis(
        hot_set,
        "fewest experts covering each share of a layer's assignments",
        ("layer", "threshold"),
        needs=NOTHING,
    ),
    "placement": Analysis(
        device_load,
        "busiest device's load and balancedness for G devices under three placements",
        ("layer", "placement"),
        needs=NOTHING,
    ),
    "drift": Analysis(
        load_drift,
        "load drift between two runs: total variation, JS divergence per layer",
        ("layer",),
        other=True,
        needs=NOTHING,
    ),
    "drift-experts": Analysis(
        expert_drift,
        "each expert's load share in two runs and its change",
        ("layer", "expert"),
        other=True,
        needs=NOTHING,
    ),
    "predictability": Analysis(
        layer_predictability, "how well the previous layer's top-1 expert predicts this layer's", ("layer",)
    ),
}
"""Placement report kinds (docs/metrics.md, "Expert placement")."""
