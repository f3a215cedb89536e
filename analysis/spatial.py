"""Spatial preference maps (DiT-MoE): which patches of the image grid each expert takes.

For a diffusion run (tokens carry the patch `row` and `col`), per layer, expert e and patch (row, col), on
routed, non-dropped assignments summed over steps, branches and samples (or one `step`):
- `count` = assignments of that patch's tokens to e;
- `share` = count / the patch's assignments at the layer — P(e | patch), which sums to 1 over the experts
  of each patch (uniform baseline 1/E);
- `lift` = share / load_e — how much more often e takes this patch than its overall load; a map of lift
  near 1 everywhere is an expert without spatial preference.
"""

from __future__ import annotations

import pandas as pd

from routescope.store import InputError, Run

from .frames import sql

COLUMNS = ["layer", "expert", "row", "col", "count", "share", "lift"]


def spatial_preference(run: Run, layer: int | None = None, step: int | None = None) -> pd.DataFrame:
    """`layer, expert, row, col, count, share, lift` (see the module docstring); all layers unless `layer`."""
    if not run.info.patch_grid:
        raise InputError(f"run {run.name!r} has no patch grid (row/col); spatial maps need a diffusion run")
    where = ["NOT a.dropped", "t.row IS NOT NULL"]
    if layer is not None:
        where.append(f"a.layer = {int(layer)}")
    if step is not None:
        where.append(f"a.step = {int(step)}")
    table = sql(
        run,
        f"""SELECT a.layer, a.expert, t.row, t.col, count(*) AS count
            FROM assignments a JOIN routers r ON r.id = a.router
            JOIN tokens t ON t.sample = a.sample AND t.position = a.position AND t.stack = r.stack
            WHERE {" AND ".join(where)} GROUP BY ALL ORDER BY ALL""",
    )
    if table.empty:
        raise InputError(f"run {run.name!r} has no assignments at layer {layer}, step {step}")
    per_patch = table.groupby(["layer", "row", "col"])["count"].transform("sum")
    per_expert = table.groupby(["layer", "expert"])["count"].transform("sum")
    per_layer = table.groupby("layer")["count"].transform("sum")
    table["share"] = table["count"] / per_patch
    table["lift"] = table["share"] / (per_expert / per_layer)
    return table[COLUMNS]
