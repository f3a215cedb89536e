"""Experts page: which experts carry each layer, what each one prefers, and one expert's card.

The overview is two layer × expert heatmaps: load (each expert's share of its layer's assignments) and
specialization (each expert's largest lift over the values of a chosen label, e.g. the domain it takes
most often relative to the domain's base rate). The card of one expert lists its labels with counts and
lift, its top tokens with their lift and an example context each (text runs), the experts chosen together
with it, and its load across steps (diffusion steps, or generation steps of text).

Runs recorded with expert stats (`output_norms`) add a saliency heatmap to the overview (one pruning
criterion at a time: REAP, EAN, max activation, frequency) and the expert's REAP, mean and max output norm
to its card; runs recorded with token loss add the mean loss of the tokens each expert takes first. A run
without them says on the card how to record them. Runs recorded with images add the modality section:
per layer, how far visual and text tokens' top-1 experts differ (TVD, with its within-input permutation
null) and, at one layer, each expert's lift for image and text tokens. Text runs add the token-routing
section (token_routing.py): vocabulary specialization by input and predicted token, paths through depth
and consecutive-token repeats, each beside its chance level.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from routescope.analysis import label_choices, peak_lift
from routescope.dashboard import cache, state
from routescope.dashboard.hints import how_to_record
from routescope.dashboard.markup import literal
from routescope.dashboard.token_routing import token_routing
from routescope.dashboard.widgets import (
    open_store,
    pick_layer,
    pick_run,
    show_figure,
    show_kind,
    show_table,
    user_errors,
)
from routescope.figures import (
    figure_expert_overview,
    figure_expert_steps,
    figure_partners,
)
from routescope.figures.statistics import CRITERIA
from routescope.store import Run

TOP_TOKENS = 20
NO_EXPERT_STATS = how_to_record("output_norms", "Saliency (REAP, mean and max output norm)")
NO_TOKEN_LOSS = how_to_record("token_loss", "The loss of an expert's tokens")


def overview(run: Run) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The label chooser and the two layer × expert heatmaps; returns the label, load and specialization."""
    label = str(
        st.selectbox(
            "Specialization by label",
            label_choices(run),
            key=state.scoped(state.EXPERTS_LABEL, run.name),
            help="lift = P(label value | expert) / P(label value); 1 means no preference",
        )
    )
    load = cache.table(run, "load")
    specialization = cache.table(run, "specialization", label=label)
    peaks = peak_lift(specialization, label)
    left, right = st.columns(2)
    with left:
        st.markdown("**Load**: each expert's share of its layer's assignments")
        show_kind(
            "load",
            run,
            table=load,
            key=state.scoped(state.EXPERTS_LOAD_CHART, run.name),
        )
    with right:
        st.markdown(f"**Specialization**: each expert's largest lift for one `{literal(label)}` value")
        show_figure(
            lambda width: figure_expert_overview(peaks, value="lift", label=label, width=width),
            peaks,
            key=state.scoped(state.EXPERTS_LIFT_CHART, run.name, label),
            name=f"{run.name}-peak-lift-{label}",
        )
    if run.info.expert_stats:
        saliency_overview(run)
    if run.info.modality:
        modality_overview(run)
    if not run.info.is_diffusion:
        token_routing(run)
    return label, load, specialization


def modality_overview(run: Run) -> None:
    """Visual against text tokens: the TVD per layer and the expert × modality lift at one layer."""
    left, right = st.columns(2)
    with left:
        st.markdown("**By modality**: TVD of visual and text tokens' top-1 experts, per layer")
        show_kind("modality-specialization", run, key=state.scoped(state.EXPERTS_MODALITY_CHART, run.name))
    with right:
        layer = pick_layer(run, state.EXPERTS_MODALITY_LAYER, label="Modality lift at layer")
        show_kind(
            "modality",
            run,
            layer=layer,
            key=state.scoped(state.EXPERTS_MODALITY_LIFT_CHART, run.name, layer),
        )


def saliency_overview(run: Run) -> None:
    """The layer × expert heatmap of one saliency criterion (runs recorded with expert stats)."""
    criterion = str(
        st.selectbox(
            "Saliency criterion",
            list(CRITERIA),
            format_func=CRITERIA.__getitem__,
            key=state.scoped(state.EXPERTS_CRITERION, run.name),
            help="REAP: mean of gate weight × output norm; EAN: mean output norm; over the tokens routed "
            "to the expert",
        )
    )
    st.markdown(f"**Saliency**: {literal(CRITERIA[criterion])} per layer and expert")
    show_kind(
        "saliency",
        run,
        criterion=criterion,
        key=state.scoped(state.EXPERTS_SALIENCY_CHART, run.name, criterion),
        name=f"{run.name}-saliency-{criterion}",
    )


def expert_stats(run: Run, layer: int, expert: int) -> None:
    """The card's saliency numbers (REAP, EAN, max output norm, REAP rank), or how to record them."""
    if not run.info.expert_stats:
        st.caption(NO_EXPERT_STATS)
        return
    table = cache.table(run, "saliency")
    at_layer = table[table["layer"] == layer]
    row = at_layer[at_layer["expert"] == expert]
    if row.empty or int(row["routed"].iloc[0]) == 0:
        st.caption("No token was routed to this expert at this layer: it has no output norms.")
        return
    values = row.iloc[0]
    ranked = at_layer.sort_values("reap", ascending=False, kind="stable")["expert"].tolist()
    columns = st.columns(4)
    columns[0].metric("REAP (gate × norm)", f"{float(values['reap']):.4g}")
    columns[1].metric("Mean output norm (EAN)", f"{float(values['ean']):.4g}")
    columns[2].metric("Max activation", f"{float(values['max_activation']):.4g}")
    columns[3].metric("Rank by REAP", f"{ranked.index(expert) + 1} of {int((at_layer['routed'] > 0).sum())}")


def expert_loss(run: Run, layer: int, expert: int, at: str) -> None:
    """The mean loss of the tokens each expert of the layer takes first, this expert's named (token loss)."""
    if not run.info.token_loss:
        st.caption(NO_TOKEN_LOSS)
        return
    table = cache.table(run, "loss-by-expert")
    own = table[(table["layer"] == layer) & (table["expert"] == expert)]
    if own.empty:
        st.caption("No scored token took this expert first at this layer.")
    else:
        row = own.iloc[0]
        st.markdown(
            f"**Loss of its tokens**: {float(row['mean_nll']):.3f} nats over {int(row['tokens']):,} tokens "
            f"({float(row['excess_nll']):+.3f} against the layer), beside every expert of the layer"
        )
    show_kind(
        "loss-by-expert",
        run,
        table=table,
        layer=layer,
        key=state.scoped(state.EXPERTS_LOSS_CHART, run.name, layer),
        name=f"{at}-loss-by-expert",
    )


def choose_expert(run: Run, load: pd.DataFrame) -> tuple[int, int]:
    """Layer, then one of its experts (described by its load)."""
    columns = st.columns(2)
    with columns[0]:
        layer = pick_layer(run, state.EXPERTS_LAYER)
    n_experts = max(r.n_experts for r in run.info.routers if r.layer == layer)
    shares = load[load["layer"] == layer].set_index("expert")["load"]

    def describe(expert: int) -> str:
        return f"expert {expert} · {float(shares.get(expert, 0.0)):.1%} of the layer's assignments"

    expert = columns[1].selectbox(
        "Expert",
        list(range(n_experts)),
        format_func=describe,
        key=state.scoped(state.EXPERTS_EXPERT, run.name, layer),
    )
    return layer, int(expert)


def card(run: Run, label: str, load: pd.DataFrame, specialization: pd.DataFrame) -> None:
    st.subheader("Expert card")
    layer, expert = choose_expert(run, load)
    at = f"{run.name}-layer{layer}-expert{expert}"
    row = load[(load["layer"] == layer) & (load["expert"] == expert)]
    ranks = (
        load[load["layer"] == layer].sort_values("count", ascending=False, kind="stable")["expert"].tolist()
    )
    peak = peak_lift(specialization, label)
    peak = peak[(peak["layer"] == layer) & (peak["expert"] == expert)]
    columns = st.columns(4)
    columns[0].metric("Assignments", f"{int(row['count'].sum()):,}")
    columns[1].metric("Load share", f"{float(row['load'].sum()):.2%}")
    columns[2].metric(
        "Rank by load", f"{ranks.index(expert) + 1} of {len(ranks)}" if expert in ranks else "unused"
    )
    columns[3].metric(
        f"Largest lift ({literal(label)})",
        f"{float(peak['lift'].iloc[0]):.2f}" if len(peak) else "–",
        help=f"for {literal(label)} = {literal(str(peak['top_value'].iloc[0]))}" if len(peak) else None,
    )
    expert_stats(run, layer, expert)

    st.markdown(f"**Its `{literal(label)}` values**, most preferred first")
    labels = specialization[(specialization["layer"] == layer) & (specialization["expert"] == expert)]
    labels = labels.sort_values(["lift", "count"], ascending=False)[[label, "count", "share", "lift"]]
    show_table(
        labels,
        key=state.scoped(state.EXPERTS_LABELS_TABLE, run.name, layer, expert, label),
        name=f"{at}-{label}",
    )

    if not run.info.is_diffusion:
        tokens = cache.table(run, "expert_tokens", layer=layer, expert=expert, n=TOP_TOKENS)
        st.markdown("**Top tokens**: assignments to this expert, with their lift and an example context")
        if tokens.empty:
            st.info("This expert took no token at this layer.")
        else:
            show_kind(
                "top-tokens",
                run,
                table=tokens,
                layer=layer,
                expert=expert,
                key=state.scoped(state.EXPERTS_TOKENS_CHART, run.name, layer, expert),
                name=f"{at}-top-tokens",
            )
            show_table(
                tokens,
                key=state.scoped(state.EXPERTS_TOKENS_TABLE, run.name, layer, expert),
                name=f"{at}-contexts",
            )

    st.markdown("**Co-activated experts**: chosen for the same token")
    top_k = max(r.top_k for r in run.info.routers if r.layer == layer)
    partners = cache.table(run, "coactivation", layer=layer) if top_k > 1 else pd.DataFrame()
    if partners.empty or not (partners["expert_a"] == expert).any():
        st.info("No other expert was chosen together with this one (top-1 routing, or an unused expert).")
    else:
        show_figure(
            lambda width: figure_partners(partners, expert=expert, width=width),
            partners[partners["expert_a"] == expert],
            key=state.scoped(state.EXPERTS_PARTNERS_CHART, run.name, layer, expert),
            name=f"{at}-partners",
        )

    if not run.info.is_diffusion:
        expert_loss(run, layer, expert, at)

    if len(cache.table(run, "table.steps")) > 1:
        st.markdown("**Load across steps**, at every layer")
        steps = cache.table(run, "steps")
        show_figure(
            lambda width: figure_expert_steps(steps, expert=expert, width=width),
            steps[steps["expert"] == expert],
            key=state.scoped(state.EXPERTS_STEPS_CHART, run.name, expert),
            name=f"{run.name}-expert{expert}-steps",
        )


def main() -> None:
    st.title("Experts")
    st.caption("Which experts carry each layer, what each prefers, and one expert in detail.")
    store = open_store()
    run = pick_run(store, state.EXPERTS_RUN)
    with user_errors():
        label, load, specialization = overview(run)
        st.divider()
        card(run, label, load, specialization)


if __name__ == "__main__":
    main()
