"""The reroute probe's report kinds, declared beside their functions and merged into the registry by name."""

from __future__ import annotations

from .kinds import SCORES, Analysis
from .reroute import reroute_routes, reroute_share, reroute_tokens

REROUTE_ANALYSES: dict[str, Analysis] = {
    "reroute-share": Analysis(
        reroute_share,
        "reroute probe: share of decisions with a better equal-compute route, by margin or entropy bin",
        ("by", "bin"),
        layer="optional",
        needs=SCORES,
    ),
    "reroute-tokens": Analysis(
        reroute_tokens,
        "reroute probe: per sampled decision, the best loss change over its alternative routes",
        ("sample", "position", "router"),
        needs=SCORES,
    ),
    "reroute-routes": Analysis(
        reroute_routes,
        "reroute probe: per sampled decision and alternative top-k set, the loss change",
        ("sample", "position", "router", "alternative"),
        needs=SCORES,
    ),
}
