"""Switch-DiT's denoising-path figure: which experts each block uses across the sampler's steps.

One heatmap, one row per (block, expert) — blocks stacked top to bottom, thin white lines between them —
and one column per sampler step, coloured by the share of that step's decisions that chose the expert
(`denoising_paths(run)`; `value="weight"` colours by the mean gate weight instead). x ticks are timesteps,
noisiest first, as the sampler runs. Above `max_steps`, consecutive steps are pooled (means).
"""

from __future__ import annotations

from typing import Literal, Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .axes import bucket
from .lines import integer_stride
from .parts import heatmap, require
from .theme import Layout, axis_title, paper_layout

MAX_STEPS = 200


def figure_denoising_paths(
    table: pd.DataFrame,
    *,
    value: Literal["usage", "weight"] = "usage",
    max_steps: int = MAX_STEPS,
    **layout: Unpack[Layout],
) -> go.Figure:
    """(block · expert) × step heatmap of `usage` (or mean gate `weight`), from `denoising_paths(run)`."""
    require(table, ["layer", "step", "timestep", "expert", value], "denoising-paths")
    binned, step_width = bucket(table["step"], max_steps)
    pooled = table.assign(step=binned).groupby(["layer", "expert", "step"], as_index=False)[value].mean()
    pooled["row"] = [
        f"block {layer} · e{expert}" for layer, expert in zip(pooled["layer"], pooled["expert"], strict=True)
    ]
    order = pooled.drop_duplicates("row").sort_values(["layer", "expert"])["row"].tolist()
    z = pooled.pivot(index="row", columns="step", values=value).reindex(order)
    title = "share of decisions" if value == "usage" else "mean gate weight"
    fig = go.Figure(heatmap(z, colorbar=title, zmax=1.0 if value == "usage" else None))
    steps = pd.Series(list(z.columns))
    lookup = table.drop_duplicates("step").set_index("step")["timestep"]
    shown = [int(s) for s in steps[:: max(1, integer_stride(steps) // step_width)]]
    has_timesteps = bool(lookup.notna().any())
    fig.update_xaxes(
        title_text=axis_title("timestep" if has_timesteps else "step")
        + (f" (bins of {step_width} steps)" if step_width > 1 else ""),
        tickmode="array",
        tickvals=shown,
        ticktext=[f"{lookup.get(s, np.nan):g}" if has_timesteps else str(s) for s in shown],
    )
    fig.update_yaxes(title_text="block · expert", autorange="reversed", type="category")
    layers = pooled.drop_duplicates("row").sort_values(["layer", "expert"])["layer"].tolist()
    for i in range(1, len(layers)):
        if layers[i] != layers[i - 1]:
            fig.add_hline(y=i - 0.5, line={"color": "white", "width": 2})
    return paper_layout(fig, **layout, default_height=min(9.0, 1.2 + 0.09 * len(order)))
