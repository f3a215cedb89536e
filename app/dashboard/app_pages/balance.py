"""Balance & uncertainty page: how evenly each layer spreads its tokens, and how sure its router is.

Load per expert and layer (heatmap); per layer the coefficient of variation of the load, the entropy of
the load, the auxiliary balance loss (runs recorded with probabilities) and max / mean load; per layer
the mean per-token router entropy, margin and uncertain share (GW-MoE); histograms of per-decision
normalised entropy and top-1 − top-2 margin (binned in DuckDB, so large runs stay fast); and the most
uncertain decisions of a layer, with their tokens. Text runs recorded with token loss add whether the
uncertain tokens pay for it: the mean next-token loss per bin of router entropy (`loss-by-uncertainty`) and
per label value (`loss-by-label`).
"""

from __future__ import annotations

import streamlit as st

from routescope.dashboard import cache, state
from routescope.dashboard.hints import how_to_record
from routescope.dashboard.widgets import (
    open_store,
    pick_layer,
    pick_run,
    show_figure,
    show_kind,
    show_table,
    user_errors,
)
from routescope.figures import figure_binned_histogram
from routescope.store import Run

HISTOGRAMS = {
    "norm_entropy": ("Router entropy / ln E per decision (1 = evenly spread)", state.BALANCE_ENTROPY_CHART),
    "margin": ("Top-1 − top-2 probability per decision (0 = a tie)", state.BALANCE_MARGIN_CHART),
}
BY_TOKEN_MIN = 5


def balance_section(run: Run) -> None:
    balance = cache.table(run, "balance")
    metrics = ["cv", "norm_entropy", "aux_loss" if "aux_loss" in balance.columns else "gini", "max_over_mean"]
    left, right = st.columns(2)
    with left:
        st.markdown("**Load** per expert and layer")
        show_kind(
            "load",
            run,
            key=state.scoped(state.BALANCE_LOAD_CHART, run.name),
        )
    with right:
        st.markdown("**Balance** per layer" + ("" if "aux_loss" in balance else " (aux. loss needs probs)"))
        show_kind(
            "balance",
            run,
            table=balance,
            key=state.scoped(state.BALANCE_METRICS_CHART, run.name),
            metrics=metrics,
        )
    show_table(balance, key=state.scoped(state.BALANCE_TABLE, run.name), name=f"{run.name}-balance")


def uncertainty_section(run: Run) -> None:
    st.markdown("**Router uncertainty** per layer: mean entropy / ln E, margin, share with entropy ≥ 0.9")
    show_kind(
        "uncertainty",
        run,
        key=state.scoped(state.BALANCE_UNCERTAINTY_CHART, run.name),
    )
    columns = st.columns(len(HISTOGRAMS))
    for column, (value, (caption, chart)) in zip(columns, HISTOGRAMS.items(), strict=True):
        histogram = cache.table(run, "decision_histogram", value=value)
        with column:
            st.markdown(f"**{caption}**")
            show_figure(
                lambda width, h=histogram, v=value: figure_binned_histogram(h, value=v, width=width),
                histogram,
                key=state.scoped(chart, run.name),
                name=f"{run.name}-{value}-histogram",
            )


def uncertain_tokens(run: Run) -> None:
    st.subheader("Most uncertain decisions")
    columns = st.columns(2)
    with columns[0]:
        layer = pick_layer(run, state.BALANCE_LAYER)
    top = int(columns[1].number_input("How many", 5, 500, 25, step=5, key=state.BALANCE_TOP))
    table = cache.table(run, "most_uncertain", layer=layer, n=top)
    show_table(
        table,
        key=state.scoped(state.BALANCE_UNCERTAIN_TABLE, run.name, layer, top),
        name=f"{run.name}-layer{layer}-most-uncertain",
    )
    if not run.info.is_diffusion:
        by_token = cache.table(run, "uncertain-labels", label="token", min_count=BY_TOKEN_MIN)
        by_token = by_token[by_token["layer"] == layer].head(top)
        st.markdown(
            f"**Tokens the router is least sure about** at layer {layer} (seen ≥ {BY_TOKEN_MIN} times)"
        )
        show_table(
            by_token,
            key=state.scoped(state.BALANCE_UNCERTAIN_TABLE, run.name, layer, top, "token"),
            name=f"{run.name}-layer{layer}-uncertain-tokens",
        )


def loss_section(run: Run) -> None:
    """The loss of uncertain tokens and per label value (runs recorded with token loss)."""
    st.subheader("Loss against uncertainty")
    if not run.info.token_loss:
        st.caption(how_to_record("token_loss", "Loss against uncertainty"))
        return
    left, right = st.columns(2)
    with left:
        st.markdown("**Mean next-token loss** per bin of router entropy / ln E, per layer")
        show_kind("loss-by-uncertainty", run, key=state.scoped(state.BALANCE_LOSS_CHART, run.name))
    with right:
        labels = [*run.label_columns, "token", "position"]
        label = str(st.selectbox("Loss by", labels, key=state.scoped(state.BALANCE_LOSS_LABEL, run.name)))
        show_kind(
            "loss-by-label",
            run,
            by=label,
            key=state.scoped(state.BALANCE_LOSS_LABEL_CHART, run.name, label),
        )


def main() -> None:
    st.title("Balance & uncertainty")
    st.caption("How evenly each layer spreads its tokens over its experts, and how sure its router is.")
    store = open_store()
    run = pick_run(store, state.BALANCE_RUN)
    with user_errors():
        balance_section(run)
        st.divider()
        uncertainty_section(run)
        st.divider()
        uncertain_tokens(run)
        if not run.info.is_diffusion:
            st.divider()
            loss_section(run)


if __name__ == "__main__":
    main()
