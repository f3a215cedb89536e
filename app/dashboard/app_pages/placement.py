"""Placement page: how concentrated each layer's load is and how it would spread over devices.

Coverage curves and hot-set sizes per layer (Megatron's routing concentration), per-device load for G
devices under contiguous, round-robin and load-balanced placements with the R hottest experts
replicated (SGLang EPLB's balancedness), how well the previous layer's top-1 expert predicts this
layer's, and — with a second run — how far its load drifted. Every table is a registered analysis kind
(`coverage`, `hot-set`, `placement`, `predictability`, `drift`, `drift-experts`) read through `cache` and
drawn by its figure kind; this page only turns widgets into their options.
"""

from __future__ import annotations

import streamlit as st

from routescope.dashboard import cache, state
from routescope.dashboard.widgets import layers_of, open_store, pick_run, show_kind, show_table, user_errors
from routescope.store import Run, Store

THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99)
DEFAULT_THRESHOLDS = [0.5, 0.8, 0.9]
NO_OTHER = "(none)"


def concentration(run: Run) -> None:
    st.subheader("Concentration")
    st.caption(
        "Share of each layer's assignments its N most-loaded experts take, and the fewest experts "
        "that cover each share (dashed: a perfectly even layer)."
    )
    chosen = st.multiselect(
        "Hot-set thresholds",
        THRESHOLDS,
        default=DEFAULT_THRESHOLDS,
        format_func=lambda t: f"{t:.0%}",
        key=state.PLACEMENT_THRESHOLDS,
    )
    thresholds = tuple(sorted(chosen)) or tuple(DEFAULT_THRESHOLDS)
    left, right = st.columns(2)
    with left:
        show_kind(
            "coverage",
            run,
            key=state.scoped(state.PLACEMENT_COVERAGE_CHART, run.name),
        )
    with right:
        hot = cache.table(run, "hot-set", thresholds=thresholds)
        show_kind(
            "hot-set",
            run,
            table=hot,
            key=state.scoped(state.PLACEMENT_HOT_SET_CHART, run.name, *thresholds),
        )


def devices(run: Run) -> None:
    st.subheader("Devices")
    fewest = min(r.n_experts for r in run.info.routers)
    columns = st.columns(2)
    replicas = int(
        columns[1].number_input(
            "Replicas of the hottest experts",
            0,
            fewest,
            0,
            key=state.scoped(state.PLACEMENT_REPLICAS, run.name),
        )
    )
    key = state.scoped(state.PLACEMENT_DEVICES, run.name)
    if int(st.session_state.get(key, 1)) > fewest + replicas:  # fewer replicas now: fewer devices possible
        st.session_state[key] = fewest + replicas
    count = int(columns[0].number_input("Devices", 1, fewest + replicas, min(8, fewest), key=key))
    st.caption(
        f"Balancedness = mean / max device load (1 = every device equally busy) for {count} devices; "
        "balanced = greedy LPT, at most ⌈experts / devices⌉ per device."
    )
    table = cache.table(run, "placement", devices=count, replicas=replicas)
    scope = (run.name, count, replicas)
    show_kind(
        "placement",
        run,
        table=table,
        key=state.scoped(state.PLACEMENT_DEVICES_CHART, *scope),
    )
    show_table(table, key=state.scoped(state.PLACEMENT_DEVICES_TABLE, *scope), name=f"{run.name}-placement")


def predictability(run: Run) -> None:
    if len(layers_of(run)) < 2:
        return
    st.subheader("Cross-layer predictability")
    st.caption(
        "How often the previous layer's top-1 expert predicts this layer's (its most frequent "
        "successor), against always guessing the busiest expert (dashed)."
    )
    show_kind(
        "predictability",
        run,
        key=state.scoped(state.PLACEMENT_PREDICTABILITY_CHART, run.name),
    )


def drift(store: Store, run: Run) -> None:
    st.subheader("Load drift")
    others = [name for name in store.runs() if name != run.name]
    name = st.selectbox("Against run", [NO_OTHER, *others], key=state.scoped(state.PLACEMENT_OTHER, run.name))
    if name == NO_OTHER:
        st.caption("Pick a second run (another workload, EPLB on and off) to see how far its load moved.")
        return
    other = cache.run(store, str(name))
    with user_errors(stop=False, runs=(run, other)):
        table = cache.pair_table(run, other, "drift")
        left, right = st.columns(2)
        with left:
            show_kind(
                "drift",
                run,
                table=table,
                other=other,
                key=state.scoped(state.PLACEMENT_DRIFT_CHART, run.name, other.name),
            )
        with right:
            show_kind(
                "drift-experts",
                run,
                other=other,
                key=state.scoped(state.PLACEMENT_DRIFT_EXPERTS_CHART, run.name, other.name),
            )


def main() -> None:
    st.title("Placement")
    st.caption(
        "How many experts carry the load, how evenly it would spread over devices, and whether it "
        "holds across layers and runs."
    )
    store = open_store()
    run = pick_run(store, state.PLACEMENT_RUN)
    with user_errors():
        concentration(run)
        st.divider()
        devices(run)
        st.divider()
        predictability(run)
    drift(store, run)


if __name__ == "__main__":
    main()
