"""Compare page: two runs side by side for any metric, and how often they route alike.

Any analysis with key columns (load, balance, specialization, NMI, uncertainty, steps, …) is computed on
both runs with the same options and joined on its keys (`side_by_side`): per-layer metrics are drawn as
one line per run, others as one dot per row with the first run on x and the second on y. Agreement joins
the decisions both runs recorded for the same sample, position, step and layer: the share with the same
top-1 expert and the mean top-k overlap (OLMoE's router saturation). Runs on different inputs share no
decisions, and the page says so. *Consistency* goes further on the same pairs: routing replay per sample
(`replay-samples`: which inputs' expert sets differ in any layer) and, for two runs recorded with
probabilities, Kendall τ of the router scores per layer (`rank-consistency`) and the flip share of expert
sets by the first run's top-k boundary margin (`boundary-flips`). *Checkpoint series* draws OLMoE's
saturation figure: the picked run is the reference (the final checkpoint) and any number of other runs,
in the order picked, are the checkpoints (`saturation`, the same table as `routescope report --kind
saturation --run REF --compare A B C`).
"""

from __future__ import annotations

import inspect

import streamlit as st

from routescope.analysis import ANALYSES, compute, keys_of, label_choices
from routescope.analysis.registry import parameters
from routescope.dashboard import cache, state
from routescope.dashboard.markup import literal
from routescope.dashboard.widgets import (
    layers_of,
    open_store,
    pick_run,
    show_figure,
    show_kind,
    show_table,
    user_errors,
)
from routescope.figures import figure_side_by_side
from routescope.store import Run, Store

DEFAULT_KIND = "balance"


def comparable_kinds() -> list[str]:
    """Analyses `side_by_side` can join: keyed rows, one run, nothing to give beyond a label or layer."""
    return [
        kind
        for kind, analysis in ANALYSES.items()
        if analysis.keys
        and not (analysis.other or analysis.series)
        and all(p.default is not inspect.Parameter.empty for p in parameters(kind).values())
    ]


def pick_other(store: Store, run: Run) -> Run | None:
    others = [name for name in store.runs() if name != run.name]
    if not others:
        st.info("Record a second run to compare this one with.")
        return None
    name = st.selectbox("Compare with", others, key=state.scoped(state.COMPARE_OTHER, run.name))
    with user_errors():
        return cache.run(store, str(name))


def side_by_side(run: Run, other: Run) -> None:
    st.subheader("Side by side")
    kinds = comparable_kinds()
    columns = st.columns(3)
    kind = str(
        columns[0].selectbox(
            "Metric table",
            kinds,
            index=kinds.index(DEFAULT_KIND),
            format_func=lambda k: f"{k}: {ANALYSES[k].description}",
            key=state.COMPARE_KIND,
        )
    )
    options: dict[str, object] = {}
    if ANALYSES[kind].label:
        options["label"] = str(
            columns[1].selectbox(
                "Label", label_choices(run), key=state.scoped(state.COMPARE_LABEL, run.name, kind)
            )
        )
    if ANALYSES[kind].layer == "required":
        options["layer"] = int(
            columns[1].selectbox(
                "Layer", layers_of(run), key=state.scoped(state.COMPARE_LAYER, run.name, kind)
            )
        )
    table = cache.pair_table(run, other, "side_by_side", analysis=kind, **options)
    keys = keys_of(kind, options.get("label"))  # type: ignore[arg-type]
    metrics = [c[: -len("@diff")] for c in table.columns if c.endswith("@diff")]
    if not metrics:
        st.info("This table has no numeric metric to compare.")
        return
    metric = str(columns[2].selectbox("Metric", metrics, key=state.scoped(state.COMPARE_METRIC, kind)))
    names = (run.name, other.name)
    shown = table[[*keys, f"{metric}@{run.name}", f"{metric}@{other.name}", f"{metric}@diff"]]
    stem = "-".join([run.name, "vs", other.name, kind, metric, *(str(v) for v in options.values())])
    show_figure(
        lambda width: figure_side_by_side(table, metric=metric, runs=names, keys=keys, width=width),
        shown,
        key=state.scoped(state.COMPARE_CHART, run.name, other.name, kind, metric, *options.values()),
        name=stem,
    )
    show_table(
        table, key=state.scoped(state.COMPARE_TABLE, run.name, other.name, kind, *options.values()), name=stem
    )


def same_inputs(run: Run, other: Run) -> bool:
    """Whether the two runs were recorded on the same inputs: the same samples with the same text (text
    runs) or the same class and branch (diffusion runs)."""
    mine, theirs = cache.table(run, "table.samples"), cache.table(other, "table.samples")
    if len(mine) != len(theirs) or run.info.kind != other.info.kind:
        return False
    columns = [c for c in ("text", "class", "branch") if c in mine.columns and c in theirs.columns]
    return all(
        mine[c].astype("string").fillna("").tolist() == theirs[c].astype("string").fillna("").tolist()
        for c in columns
    )


def agreement(run: Run, other: Run) -> bool:
    """The agreement per layer; False when the runs share no decision (nothing further to compare)."""
    st.subheader("Agreement")
    if not same_inputs(run, other):
        st.warning(
            f"{literal(run.name)} and {literal(other.name)} were not recorded on the same inputs: agreement "
            "pairs decisions by sample, position, step and layer, so it compares unrelated tokens here."
        )
    table = cache.pair_table(run, other, "agreement")
    if table.empty or int(table["decisions"].sum()) == 0:
        st.info(
            f"{literal(run.name)} and {literal(other.name)} share no routing decision (same sample, "
            "position, step and layer): agreement needs two runs on the same inputs."
        )
        return False
    st.caption(f"Over {int(table['decisions'].sum()):,} decisions both runs made")
    show_kind(
        "agreement",
        run,
        table=table,
        other=other,
        key=state.scoped(state.COMPARE_AGREEMENT_CHART, run.name, other.name),
    )
    return True


def consistency(run: Run, other: Run) -> None:
    """Replay per sample; with probabilities in both runs, rank consistency and boundary flips."""
    st.subheader("Consistency")
    st.markdown(
        "**Routing replay** per sample: the share of its tokens whose expert set differs in any layer"
    )
    show_kind(
        "replay-samples",
        run,
        other=other,
        key=state.scoped(state.COMPARE_REPLAY_CHART, run.name, other.name),
    )
    lacking = [r.name for r in (run, other) if not r.info.probs]
    if lacking:
        st.caption(
            "Rank consistency and boundary flips compare router probability vectors: record "
            f"{literal(' and '.join(lacking))} with probs (`--probs`, “Keep full router probabilities”)."
        )
        return
    left, right = st.columns(2)
    with left:
        st.markdown("**Rank consistency**: Kendall τ of the router scores, identical top-k sets")
        show_kind(
            "rank-consistency",
            run,
            other=other,
            key=state.scoped(state.COMPARE_RANK_CHART, run.name, other.name),
        )
    with right:
        st.markdown(f"**Boundary flips**: expert sets that differ, by {literal(run.name)}'s top-k margin")
        show_kind(
            "boundary-flips",
            run,
            other=other,
            key=state.scoped(state.COMPARE_FLIPS_CHART, run.name, other.name),
        )


def checkpoint_series(store: Store, run: Run) -> None:
    """OLMoE's saturation figure: the runs picked, in order, against `run` as the reference checkpoint."""
    st.subheader("Checkpoint series")
    st.caption(
        f"Router saturation of each checkpoint against {literal(run.name)} (the reference, e.g. the final "
        "checkpoint): the mean share of its top-k experts the checkpoint also chooses, per layer. Pick "
        "runs recorded on the same inputs, earliest first."
    )
    others = [name for name in store.runs() if name != run.name]
    picked = st.multiselect("Checkpoints, in order", others, key=state.scoped(state.COMPARE_SERIES, run.name))
    if not picked:
        return
    series = tuple(cache.run(store, str(name)) for name in picked)
    table = compute("saturation", run, series=series)
    show_kind(
        "saturation",
        run,
        table=table,
        series=series,
        name=f"{run.name}-saturation",
        key=state.scoped(state.COMPARE_SERIES_CHART, run.name, *picked),
    )


def main() -> None:
    st.title("Compare")
    st.caption("Two runs side by side for any metric, and how often they choose the same experts.")
    store = open_store()
    run = pick_run(store, state.COMPARE_RUN)
    other = pick_other(store, run)
    if other is None:
        return
    with user_errors(stop=False, runs=(run, other)):  # a table they cannot share leaves the agreement below
        side_by_side(run, other)
    with user_errors(runs=(run, other)):
        shared = agreement(run, other)
    if shared:
        with user_errors(runs=(run, other)):
            consistency(run, other)
    st.divider()
    with user_errors(runs=(run,)):
        checkpoint_series(store, run)


if __name__ == "__main__":
    main()
