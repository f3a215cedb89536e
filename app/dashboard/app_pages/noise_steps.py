"""Noise steps page (diffusion runs): how routing changes as the sampler goes from noise to image.

At one layer: expert usage against the step (a heatmap with timesteps on the x axis, and the same as
lines), the step × step Jensen–Shannon divergence of expert load with the denoising phases outlined
(Switch-DiT), each expert's preference map on the patch grid, and the conditional against the
unconditional branch of classifier-free guidance. Over all layers: how much the expert depends on class,
position and step (NMI, DiT-MoE's finding). Last, a step slider shows the predicted clean image x̂₀ at
that step beside the patch grid coloured by each patch's top-1 expert.

Every diffusion run also gets Switch-DiT's denoising-path view (which experts each block uses across
timesteps, all blocks at once). A run whose routers have no positions (a timestep gate: one decision per
image and step) has no patch grid to colour, so the spatial map and the step view are replaced by a note.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from routescope.analysis import uncertain
from routescope.dashboard import cache, state
from routescope.dashboard.markup import legend_html, patch_grid_html
from routescope.dashboard.widgets import (
    enlarge,
    open_store,
    pick_layer,
    pick_run,
    show_figure,
    show_kind,
    user_errors,
)
from routescope.figures import (
    figure_branches,
    figure_step_lines,
)
from routescope.store import Run

UNCERTAIN_ENTROPY = 0.9
UNCERTAIN_MARGIN = 0.05


def usage(run: Run, layer: int) -> None:
    """Expert usage against the step: heatmap and lines."""
    steps = cache.table(run, "steps")
    left, right = st.columns(2)
    with left:
        st.markdown("**Expert usage per step** (x: timestep, from noise to image)")
        show_kind(
            "steps",
            run,
            layer=layer,
            key=state.scoped(state.NOISE_STEPS_CHART, run.name, layer),
        )
    with right:
        st.markdown("**The same as lines** (the experts whose load changes most)")
        show_figure(
            lambda width: figure_step_lines(steps, layer=layer, width=width),
            steps[steps["layer"] == layer],
            key=state.scoped(state.NOISE_LINES_CHART, run.name, layer),
            name=f"{run.name}-layer{layer}-step-lines",
        )


def denoising_paths(run: Run) -> None:
    """Switch-DiT's denoising paths: every block's expert usage across the sampler's steps."""
    st.markdown(
        "**Denoising paths** (Switch-DiT): share of each step's decisions that use each expert, every block "
        "(x: timestep, from noise to image)"
    )
    show_kind("denoising-paths", run, key=state.scoped(state.NOISE_PATHS_CHART, run.name))


def has_positions(run: Run) -> bool:
    """Whether the run's routers decide per patch token (False for timestep-gated routers)."""
    return "positions" in run.info.caps


def phases(run: Run, layer: int) -> None:
    """Step × step similarity with phases, and the label sensitivity of every layer."""
    phases = cache.table(run, "phases")
    left, right = st.columns(2)
    with left:
        st.markdown("**Step × step divergence** of expert load; white lines: denoising phases")
        show_kind(
            "step-similarity",
            run,
            layer=layer,
            phases=phases,
            key=state.scoped(state.NOISE_SIMILARITY_CHART, run.name, layer),
        )
    with right:
        st.markdown("**What routing follows**: NMI of the expert with class, position, step, … per layer")
        show_kind(
            "sensitivity",
            run,
            key=state.scoped(state.NOISE_SENSITIVITY_CHART, run.name),
        )


def space_and_branches(run: Run, layer: int) -> None:
    """Spatial preference maps, and the conditional against the unconditional branch."""
    st.markdown("**Spatial preference**: P(expert | patch) on the patch grid, over all steps")
    show_kind(
        "spatial",
        run,
        layer=layer,
        key=state.scoped(state.NOISE_SPATIAL_CHART, run.name, layer),
    )
    samples = cache.table(run, "table.samples")
    if "branch" not in samples.columns or samples["branch"].nunique() < 2:
        st.caption("This run has one guidance branch only, so there is no cond / uncond comparison.")
        return
    branches = cache.table(run, "specialization", label="branch")
    st.markdown("**Conditional vs unconditional branch**: each expert's share of the branch's assignments")
    show_figure(
        lambda width: figure_branches(branches, layer=layer, width=width),
        branches[branches["layer"] == layer],
        key=state.scoped(state.NOISE_BRANCHES_CHART, run.name, layer),
        name=f"{run.name}-layer{layer}-branches",
    )


def step_view(run: Run, layer: int) -> None:
    """A step slider: x̂₀ at that step beside the patch grid coloured by each patch's top-1 expert."""
    st.subheader("One step: the image and its routing")
    samples = cache.table(run, "table.samples")
    cond = samples[samples["branch"] == "cond"].sort_values("sample") if "branch" in samples else samples
    classes = cond.set_index("sample")["class"] if "class" in cond.columns else pd.Series(dtype=object)
    steps = cache.table(run, "table.steps")
    timesteps = steps.set_index("step")["timestep"]
    columns = st.columns(3)
    sample = int(
        columns[0].selectbox(
            "Sample",
            cond["sample"].tolist(),
            format_func=lambda s: f"#{s}" + (f" · class {classes.get(s)}" if s in classes.index else ""),
            key=state.scoped(state.NOISE_SAMPLE, run.name),
        )
    )
    branch = columns[1].radio(
        "CFG branch", ["cond", "uncond"], horizontal=True, key=state.scoped(state.NOISE_BRANCH, run.name)
    )
    routed = sample
    if branch == "uncond":
        pair = samples[(samples["branch"] == "uncond") & (samples["pair"] == str(sample))]
        if pair.empty:
            st.info("This sample has no unconditional branch.")
            return
        routed = int(pair["sample"].iloc[0])
    step = int(
        columns[2].select_slider(
            "Step",
            steps["step"].tolist(),
            value=int(steps["step"].iloc[0]),
            format_func=lambda s: f"{s} (t = {timesteps.get(s, float('nan')):g})",
            key=state.scoped(state.NOISE_STEP, run.name),
        )
    )
    n_experts = max(r.n_experts for r in run.info.routers if r.layer == layer)
    router = min(r.id for r in run.info.routers if r.layer == layer)
    routing = cache.table(run, "token_routing", sample=routed, router=router, step=step)
    flags = uncertain(routing, entropy_at_least=UNCERTAIN_ENTROPY, margin_at_most=UNCERTAIN_MARGIN)
    image, grid = st.columns([1, 2])
    with image:
        if "x0" in run.info.tables:
            saved, x0 = cache.x0(run)
            index = saved.tolist().index(step) if step in saved.tolist() else None
            if index is not None:
                position = cond["sample"].tolist().index(sample)
                st.image(enlarge(x0[index, position], 192), caption=f"x̂₀ at step {step} (cond)")
        else:
            st.caption("No x̂₀ in this run (recorded without save_x0).")
    with grid:
        experts = sorted(int(e) for e in routing["expert"].dropna().unique())
        st.html(legend_html(experts, n_experts))
        st.html(patch_grid_html(routing, flags, n_experts))
        st.caption(
            f"Top-1 expert of each patch at layer {layer}, step {step}, {branch} branch; red outline: "
            f"normalised entropy ≥ {UNCERTAIN_ENTROPY} or margin ≤ {UNCERTAIN_MARGIN}."
        )


def main() -> None:
    st.title("Noise steps")
    st.caption("How routing changes across the sampler's steps, from noise to image (diffusion runs).")
    store = open_store()
    run = pick_run(store, state.NOISE_RUN, accept=lambda run: run.info.is_diffusion, kind="diffusion run")
    with user_errors():
        denoising_paths(run)
        layer = pick_layer(run, state.NOISE_LAYER)
        usage(run, layer)
        phases(run, layer)
        if not has_positions(run):
            st.caption(
                "This run's routers decide once per image and step (a gate over the timestep, as in "
                "Switch-DiT): there is no per-patch routing to map or to show step by step."
            )
            return
        space_and_branches(run, layer)
        st.divider()
        step_view(run, layer)


if __name__ == "__main__":
    main()
