"""Diffusion figures (DiT-MoE, Switch-DiT): expert usage across sampler steps, the step × step routing
divergence with denoising phases, and each expert's map over the patch grid (`steps`,
`step_similarity` + `denoising_phases`, `spatial_preference`); the same load as lines, and the
conditional against the unconditional branch (`specialization(run, "branch")`).

Samplers run tens to thousands of steps; above `max_steps` consecutive steps are pooled into equal bins
(counts summed, then shares recomputed; divergences averaged), so a 1,000-step run still draws as a
readable matrix.
"""

from __future__ import annotations

import math
from typing import Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .axes import SORTED_TICKS, block_order, bucket, thin_ticks
from .lines import group_colours, integer_axis, integer_stride
from .parts import full_range, heatmap, matrix, pick_layer, plain, require
from .theme import CSS_DPI, SEQUENTIAL, Layout, axis_title, paper_layout, pt, width_px

MAX_STEPS = 200
COLORBAR_IN = 0.75
"""Width a colour bar with its title takes beside small multiples."""


def figure_steps(
    table: pd.DataFrame,
    *,
    layer: int | None = None,
    noise: pd.DataFrame | None = None,
    max_steps: int = MAX_STEPS,
    sort: bool = False,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Expert × step heatmap of one layer's load share at every sampler step, from `steps(run)`.

    With `noise` (the run's steps table: `step, timestep, sigma`) the x ticks show timesteps. `sort=True`
    orders experts by the step where they peak. Steps beyond `max_steps` are pooled into bins."""
    require(table, ["layer", "step", "expert", "count"], "steps")
    part = pick_layer(table, layer, "steps")
    binned, step_width = bucket(part["step"], max_steps)
    pooled = part.assign(step=binned).groupby(["step", "expert"], as_index=False)["count"].sum()
    pooled["load"] = pooled["count"] / pooled.groupby("step")["count"].transform("sum")
    experts = full_range(part["expert"])
    z = matrix(pooled, "expert", "step", "load", index_values=experts, fill=0.0)
    if sort:
        z = z.loc[block_order(z)]
        z.index = [str(e) for e in z.index]
    fig = go.Figure(heatmap(z, colorbar="load share"))
    steps = pd.Series(list(z.columns))
    ticks = integer_axis(steps)
    x_title = axis_title("step") + (f" (bins of {step_width})" if step_width > 1 else "")
    if noise is not None:
        require(noise, ["step", "timestep"], "steps (noise)")
        lookup = noise.set_index("step")["timestep"]
        shown = [int(s) for s in steps[:: max(1, integer_stride(steps) // step_width)]]
        ticks = {
            "tickmode": "array",
            "tickvals": shown,
            "ticktext": [f"{lookup.get(s, np.nan):g}" for s in shown],
        }
        x_title = axis_title("timestep")
    fig.update_xaxes(title_text=x_title, **ticks)
    y_ticks = thin_ticks(list(z.index), SORTED_TICKS) if sort else integer_axis(pd.Series(experts))
    fig.update_yaxes(title_text="expert", autorange="reversed", type="category" if sort else "-", **y_ticks)
    return paper_layout(fig, **layout, default_height=min(5.0, 1.0 + 0.1 * len(experts)))


def figure_step_similarity(
    table: pd.DataFrame,
    *,
    layer: int | None = None,
    phases: pd.DataFrame | None = None,
    max_steps: int = MAX_STEPS,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Step × step Jensen–Shannon divergence of one layer's expert load, from `step_similarity(run)`
    (Switch-DiT's denoising-path matrix); with `phases` (the table of `denoising_phases(run)`) white
    lines mark where one phase ends and the next begins."""
    require(table, ["layer", "step_a", "step_b", "js"], "step-similarity")
    part = pick_layer(table, layer, "step-similarity")
    a, step_width = bucket(part["step_a"], max_steps)
    b, _ = bucket(part["step_b"], max_steps)
    pooled = part.assign(step_a=a, step_b=b).groupby(["step_a", "step_b"], as_index=False)["js"].mean()
    z = pooled.pivot(index="step_a", columns="step_b", values="js")
    fig = go.Figure(heatmap(z, colorbar="JS divergence"))
    ticks = integer_axis(pd.Series(list(z.index)))
    suffix = f" (bins of {step_width})" if step_width > 1 else ""
    fig.update_xaxes(title_text=axis_title("step") + suffix, constrain="domain", **ticks)
    fig.update_yaxes(
        title_text=axis_title("step") + suffix,
        autorange="reversed",
        scaleanchor="x",
        constrain="domain",
        **ticks,
    )
    if phases is not None:
        require(phases, ["layer", "step", "phase"], "step-similarity (phases)")
        own = phases[phases["layer"] == int(part["layer"].iloc[0])].sort_values("step")
        for boundary in phase_boundaries(own):
            at = boundary - step_width / 2
            low, high = float(z.index.min()) - step_width / 2, float(z.index.max()) + step_width / 2
            line = {"color": "white", "width": 1}
            fig.add_shape(type="line", x0=at, x1=at, y0=low, y1=high, line=line)
            fig.add_shape(type="line", x0=low, x1=high, y0=at, y1=at, line=line)
    return paper_layout(fig, **layout, aspect=0.85)


def phase_boundaries(phases: pd.DataFrame) -> list[int]:
    """The steps (in step order) whose phase differs from the previous step's."""
    ordered = phases.sort_values("step")
    change = ordered["phase"].to_numpy()[1:] != ordered["phase"].to_numpy()[:-1]
    return [int(s) for s in ordered["step"].to_numpy()[1:][change]]


def figure_spatial(
    table: pd.DataFrame,
    *,
    layer: int | None = None,
    value: str = "share",
    max_experts: int = 32,
    **layout: Unpack[Layout],
) -> go.Figure:
    """One small patch-grid heatmap per expert (row 0 at the top, as in the image) of one layer, from
    `spatial_preference(run)`: `share` = P(expert | patch), one colour scale for all panels.

    With more than `max_experts` experts, the ones whose maps vary most (standard deviation over the
    patches) are drawn, in expert order."""
    require(table, ["layer", "expert", "row", "col", value], "spatial")
    part = pick_layer(table, layer, "spatial")
    n_rows, n_cols = int(part["row"].max()) + 1, int(part["col"].max()) + 1
    maps = {int(e): _grid(group, value, n_rows, n_cols) for e, group in part.groupby("expert", sort=True)}
    experts = sorted(maps)
    if len(experts) > max_experts:
        spread = sorted(experts, key=lambda e: (-float(np.std(maps[e])), e))
        experts = sorted(spread[:max_experts])
    grid_cols = math.ceil(math.sqrt(len(experts)))
    grid_rows = math.ceil(len(experts) / grid_cols)
    fig = make_subplots(
        rows=grid_rows,
        cols=grid_cols,
        subplot_titles=[f"expert {e}" for e in experts],
        horizontal_spacing=0.03,
        vertical_spacing=0.08 if grid_rows > 1 else 0.0,
    )
    for i, expert in enumerate(experts):
        row, col = i // grid_cols + 1, i % grid_cols + 1
        fig.add_trace(
            go.Heatmap(
                z=maps[expert],
                x=list(range(n_cols)),
                y=list(range(n_rows)),
                coloraxis="coloraxis",
                hovertemplate=f"expert {expert}, row %{{y}}, col %{{x}}: %{{z:.3g}}<extra></extra>",
            ),
            row=row,
            col=col,
        )
    top = max(float(m.max()) for m in maps.values())
    fig.update_layout(
        coloraxis={
            "colorscale": SEQUENTIAL,
            "cmin": 0.0,
            "cmax": top,
            "colorbar": {"title": {"text": "P(expert | patch)" if value == "share" else value}},
        }
    )
    fig.update_xaxes(showticklabels=False, ticks="", showline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, ticks="", showline=False, autorange="reversed", constrain="domain")
    for i in range(len(experts)):
        suffix = "" if i == 0 else str(i + 1)
        fig.update_layout({f"yaxis{suffix}": {"scaleanchor": f"x{suffix}"}})
    fig.update_annotations(font_size=pt(7))
    panel_in = (width_px(layout.get("width", "single")) / CSS_DPI - COLORBAR_IN) / grid_cols
    fig = paper_layout(fig, **layout, default_height=0.2 + grid_rows * panel_in * 1.12)
    if not layout.get("title"):
        fig.update_layout(margin={"t": pt(12)})  # room for the top row's panel titles
    return fig


def _grid(group: pd.DataFrame, value: str, n_rows: int, n_cols: int) -> np.ndarray:
    """An expert's values on the patch grid; patches it never took are 0."""
    grid = np.zeros((n_rows, n_cols))
    grid[group["row"].to_numpy(dtype=int), group["col"].to_numpy(dtype=int)] = group[value].to_numpy(float)
    return grid


def figure_step_lines(
    table: pd.DataFrame,
    *,
    layer: int | None = None,
    max_experts: int = 8,
    **layout: Unpack[Layout],
) -> go.Figure:
    """One line per expert of its load share against the sampler step at one layer, from `steps(run)`
    (the lines of `figure_steps`' heatmap); with more than `max_experts` experts, the ones whose load
    changes most across the steps (standard deviation) are drawn."""
    require(table, ["layer", "step", "expert", "load"], "step-lines")
    part = pick_layer(table, layer, "step-lines")
    steps = sorted(int(s) for s in part["step"].unique())
    wide = part.pivot_table(index="step", columns="expert", values="load", aggfunc="sum")
    wide = wide.reindex(index=steps, columns=full_range(part["expert"])).fillna(0.0)
    experts = list(wide.columns)
    if len(experts) > max_experts:
        spread = wide.std(axis=0).sort_values(ascending=False, kind="stable")
        experts = sorted(int(e) for e in spread.index[:max_experts])
    fig = go.Figure()
    for expert, colour in zip(experts, group_colours(experts), strict=True):
        fig.add_scatter(
            x=steps,
            y=wide[expert].tolist(),
            name=f"expert {int(expert)}",
            mode="lines+markers" if len(steps) <= 50 else "lines",
            line={"color": colour},
        )
    fig.update_xaxes(title_text=axis_title("step"), **integer_axis(pd.Series(steps)))
    fig.update_yaxes(title_text="load share", rangemode="tozero")
    return paper_layout(fig, **layout, default_height=2.2)


def figure_branches(
    table: pd.DataFrame,
    *,
    layer: int | None = None,
    **layout: Unpack[Layout],
) -> go.Figure:
    """Conditional against unconditional branch of classifier-free guidance at one layer: each expert's
    share of the branch's assignments, side by side, from `specialization(run, "branch")`."""
    require(table, ["layer", "expert", "branch", "share"], "branches")
    part = pick_layer(table, layer, "branches")
    experts = full_range(part["expert"])
    shares = matrix(part, "branch", "expert", "share", column_values=experts, fill=0.0)
    fig = go.Figure()
    for branch, colour in zip(shares.index, group_colours(list(shares.index)), strict=True):
        fig.add_bar(
            x=experts,
            y=shares.loc[branch].tolist(),
            name=plain(branch),
            marker={"color": colour},
            hovertemplate=f"{plain(branch)}, expert %{{x}}: %{{y:.3f}}<extra></extra>",
        )
    fig.update_layout(barmode="group", bargap=0.15, bargroupgap=0.0)
    fig.update_xaxes(title_text="expert", **integer_axis(pd.Series(experts)))
    fig.update_yaxes(title_text="share of the branch's assignments", rangemode="tozero")
    return paper_layout(fig, **layout, default_height=2.0)
