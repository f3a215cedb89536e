"""Tokens page: one sample's tokens coloured by their top-1 expert at a layer, and one token's weights.

Text runs show the text (runs recorded with images also each image's patch grid, image_patches.py);
diffusion runs show the patch grid at a chosen step and CFG branch, next to
x̂₀ at that step. Uncertain tokens (normalised entropy at or above a threshold, or a top-1/top-2 margin at
or below one) are outlined in red. Samples can be narrowed by a label value. Text runs recorded with token
loss can colour the text by each token's next-token loss instead (`tokens.nll`, from 0 to the sample's
largest; hovering a token shows its loss either way).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from routescope.analysis import router_names, uncertain, weight_matrix
from routescope.analysis.uncertainty import DEFAULT_THRESHOLD
from routescope.dashboard import cache, state
from routescope.dashboard.image_patches import show_image_patches
from routescope.dashboard.markup import (
    ColourBy,
    legend_html,
    literal,
    loss_legend_html,
    loss_top,
    patch_grid_html,
    tokens_html,
)
from routescope.dashboard.widgets import enlarge, open_store, pick_run, show_figure
from routescope.figures import figure_token_weights
from routescope.store import Run

ALL = "(all)"
COLOUR_BY: dict[str, str] = {"expert": "top-1 expert", "loss": "loss (next-token nll)"}
DEFAULT_MARGIN = 0.05
SNIPPET = 48


def choose_sample(run: Run, samples: pd.DataFrame) -> int:
    """Label filter, then a sample (diffusion runs: a conditional sample; the branch is chosen apart)."""
    shown = samples[samples["branch"] == "cond"] if run.info.is_diffusion else samples
    labels = [c for c in run.label_columns if not (run.info.is_diffusion and c in ("branch", "pair"))]
    columns = st.columns(3)
    label = columns[0].selectbox(
        "Filter by label", [ALL, *labels], key=state.scoped(state.TOKENS_LABEL, run.name)
    )
    if label != ALL:
        values = sorted(str(v) for v in shown[label].dropna().unique())
        value = columns[1].selectbox(
            f"{label} =", values, key=state.scoped(state.TOKENS_LABEL_VALUE, run.name, label)
        )
        shown = shown[shown[label].astype(str) == value]
    if shown.empty:
        st.info("No sample has that label value.")
        st.stop()
    described = shown.set_index("sample")

    def describe(sample: int) -> str:
        row = described.loc[sample]
        tags = " · ".join(f"{c}: {row[c]}" for c in labels)
        text = "" if run.info.is_diffusion or row["text"] is None else str(row["text"])[:SNIPPET]
        return " · ".join(part for part in (f"#{sample}", tags, repr(text) if text else "") if part)

    return int(
        columns[2].selectbox(
            "Sample",
            shown["sample"].tolist(),
            format_func=describe,
            key=state.scoped(state.TOKENS_SAMPLE, run.name),
        )
    )


def choose_thresholds() -> tuple[float, float]:
    columns = st.columns(2)
    entropy = columns[0].slider(
        "Uncertain if normalised entropy ≥",
        0.0,
        1.0,
        DEFAULT_THRESHOLD,
        0.01,
        key=state.TOKENS_ENTROPY,
        help="entropy / ln(experts): 1 means the router spread its probability evenly",
    )
    margin = columns[1].slider(
        "… or top-1 − top-2 margin ≤", 0.0, 1.0, DEFAULT_MARGIN, 0.01, key=state.TOKENS_MARGIN
    )
    return float(entropy), float(margin)


def choose_colouring(run: Run) -> ColourBy:
    """Top-1 expert, or loss for text runs recorded with token loss (others are coloured by expert)."""
    if run.info.is_diffusion or not run.info.token_loss:
        return "expert"
    choice = st.radio(
        "Colour by",
        list(COLOUR_BY),
        format_func=COLOUR_BY.__getitem__,
        horizontal=True,
        key=state.scoped(state.TOKENS_COLOUR, run.name),
        help="loss: −log p(next token) under the model, from 0 to the sample's largest",
    )
    return "loss" if choice == "loss" else "expert"


def token_weights(run: Run, routing: pd.DataFrame, sample: int, stack: str, step: int | None) -> None:
    """Pick one token (or patch) and show its router × expert weights."""
    routed = routing[routing["expert"].notna()]
    if routed.empty:
        return
    text = routed.set_index("position")["token"]

    def describe(position: int) -> str:
        if run.info.is_diffusion:
            return f"patch {position} (row, col = {text.loc[position]})"
        return f"{position}: {text.loc[position]!r}"

    position = int(
        st.selectbox(
            "Token",
            routed["position"].tolist(),
            format_func=describe,
            key=state.scoped(state.TOKENS_POSITION, run.name, sample),
        )
    )
    weights = cache.table(run, "token_weights", sample=sample, position=position, stack=stack, step=step)
    value = "weight"
    if weights["prob"].notna().any():
        value = str(
            st.radio(
                "Show",
                ["weight", "prob"],
                format_func={"weight": "gate weights", "prob": "router probabilities"}.__getitem__,
                horizontal=True,
                key=state.scoped(state.TOKENS_VALUES, run.name),
            )
        )
    matrix = weight_matrix(weights, router_names(run), value)
    show_figure(
        lambda width: figure_token_weights(matrix, value=value, width=width),
        matrix.reset_index(),
        key=state.scoped(state.TOKENS_CHART, run.name, sample, position, step, value),
        name=f"{run.name}-token-{sample}-{position}-{value}" + ("" if step is None else f"-step{step}"),
    )
    with st.expander("As a table"):
        st.dataframe(matrix, width="stretch")


def choose_branch_and_step(run: Run, samples: pd.DataFrame, sample: int) -> tuple[int, int]:
    """Diffusion runs: the CFG branch (→ the sample id that holds it) and the sampler step."""
    columns = st.columns(2)
    branch = columns[0].radio(
        "CFG branch", ["cond", "uncond"], horizontal=True, key=state.scoped(state.TOKENS_BRANCH, run.name)
    )
    if branch == "uncond":
        pair = samples[(samples["branch"] == "uncond") & (samples["pair"] == str(sample))]
        sample = int(pair["sample"].iloc[0])
    steps = cache.table(run, "table.steps")["step"].tolist()
    step = columns[1].select_slider(
        "Step", steps, value=steps[-1], key=state.scoped(state.TOKENS_STEP, run.name)
    )
    return sample, int(step)


def show_x0(run: Run, samples: pd.DataFrame, cond_sample: int, step: int) -> None:
    """x̂₀ of the conditional sample at `step` (runs recorded with save_x0)."""
    if "x0" not in run.info.tables:
        st.caption("No x̂₀ in this run (recorded without save_x0).")
        return
    steps, x0 = cache.x0(run)
    order = samples[samples["branch"] == "cond"]["sample"].sort_values().tolist()
    image = x0[steps.tolist().index(step), order.index(cond_sample)]
    st.image(enlarge(image, 192), caption=f"x̂₀ at step {step}")


def main() -> None:
    st.title("Tokens")
    st.caption("Each token coloured by the expert its router ranked first; red outline: an unsure router.")
    store = open_store()
    run = pick_run(store, state.TOKENS_RUN)
    samples = cache.table(run, "table.samples")
    chosen = choose_sample(run, samples)
    names = router_names(run)
    router = int(
        st.selectbox(
            "Layer",
            list(names),
            format_func=names.__getitem__,
            key=state.scoped(state.TOKENS_LAYER, run.name),
        )
    )
    spec = next(r for r in run.info.routers if r.id == router)
    sample, step = (chosen, None)
    if run.info.is_diffusion:
        sample, step = choose_branch_and_step(run, samples, chosen)
    entropy, margin = choose_thresholds()
    colour_by = choose_colouring(run)
    routing = cache.table(run, "token_routing", sample=sample, router=router, step=step)
    flags = uncertain(routing, entropy_at_least=entropy, margin_at_most=margin)
    n_experts = spec.n_experts
    experts = sorted(int(e) for e in routing["expert"].dropna().unique())
    st.caption(
        f"{len(routing)} tokens · {int(flags.sum())} uncertain · {len(experts)} of {n_experts} experts used"
        f" at {literal(names[router])}"
    )
    if colour_by == "loss":
        st.html(loss_legend_html(loss_top(routing)))
    else:
        st.html(legend_html(experts, n_experts))
    if step is not None:
        grid, image = st.columns([2, 1])
        with grid:
            st.html(patch_grid_html(routing, flags, n_experts))
        with image:
            show_x0(run, samples, chosen, step)
    else:
        st.html(tokens_html(routing, flags, n_experts, colour_by))
        show_image_patches(routing, flags, n_experts, run_name=run.name, sample=sample)
    st.subheader("One token's weights at every layer")
    token_weights(run, routing, sample, spec.stack, step)
    with st.expander("Routing table of this sample"):
        st.dataframe(routing.assign(uncertain=flags), hide_index=True, width="stretch")


if __name__ == "__main__":
    main()
