"""Embeddings page: a 2-D map of routing at one layer, coloured by a label or by the chosen expert.

Tokens: one point per decision, placed by its router probabilities (or its gate weights when the run kept
no probabilities), sampled to a number of points by a seeded hash. Experts: one point per expert, placed by
what it takes (token ids for text, positions for images). PCA is immediate; UMAP compiles with numba and
takes seconds to minutes, so it runs only when its button is pressed, as a background job (`jobs.py`) with
a progress bar that a click elsewhere does not stop, and is cached like every table
(`cache.table(run, "embedding", ...)`), so coming back to it is instant.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from routescope.dashboard import cache, state
from routescope.dashboard.job_view import follow, show_failure, store_key
from routescope.dashboard.jobs import Report, Work
from routescope.dashboard.widgets import open_store, pick_layer, pick_run, show_kind, user_errors
from routescope.store import Run, Store

OF = {"tokens": "Tokens (by router scores)", "experts": "Experts (by what they take)"}
METHODS = {"pca": "PCA", "umap": "UMAP"}
AXES = {"pca": ("PC 1", "PC 2"), "umap": ("UMAP 1", "UMAP 2")}
DEFAULT_POINTS = 3000
UMAP_NOTE = "UMAP takes from seconds to a few minutes the first time (numba compiles it): press the button."


def options(run: Run) -> dict[str, Any]:
    """The embedding the widgets ask for, as `embeddings(run, ...)` keyword arguments."""
    columns = st.columns(4)
    with columns[0]:
        layer = pick_layer(run, state.EMBED_LAYER)
    of = columns[1].radio("Points", list(OF), format_func=OF.__getitem__, key=state.EMBED_OF)
    method = columns[2].radio(
        "Method", list(METHODS), format_func=METHODS.__getitem__, horizontal=True, key=state.EMBED_METHOD
    )
    chosen: dict[str, Any] = {"layer": layer, "of": of, "method": method, "seed": 0}
    if of == "tokens":
        chosen["max_points"] = int(
            columns[3].number_input(
                "Points (sampled)", 100, 50_000, DEFAULT_POINTS, step=500, key=state.EMBED_POINTS
            )
        )
    return chosen


def embedding_table(store: Store, run: Run, chosen: dict[str, Any]) -> pd.DataFrame | None:
    """The map's table: PCA at once; UMAP once its button was pressed for these options in this session,
    computed as a background job (followed here; a click elsewhere does not stop it) into the table
    cache. None while there is nothing to draw."""
    if chosen["method"] != "umap":
        return cache.table(run, "embedding", **chosen)
    ident = (run.name, *sorted(chosen.items()))
    done: set[tuple[Any, ...]] = st.session_state.setdefault(state.EMBED_COMPUTED, set())
    key = f"umap:{store_key(store)}:{cache.stamp(run.path)}:{ident}"
    registry = cache.jobs()
    job = registry.latest(key)
    if ident not in done:
        if not st.button(
            "Compute the UMAP map", type="primary", key=state.scoped(state.EMBED_COMPUTE, run.name)
        ):
            st.info(UMAP_NOTE)
            return None
        done.add(ident)
        job = registry.start(
            key, f"UMAP map of {run.name}, layer {chosen['layer']}", store_key(store), umap_job(run, chosen)
        )
    if job is not None and not job.finished:
        job = follow(job)
    if job is not None and job.status == "failed":
        done.discard(ident)
        show_failure(job)
        return None
    return cache.table(run, "embedding", **chosen)  # computed by the job: cached


def umap_job(run: Run, chosen: dict[str, Any]) -> Work:
    """The background job: compute the UMAP table into the dashboard's table cache."""

    def work(report: Report) -> int:
        report(0.0, "computing (the first UMAP compiles with numba)")
        return len(cache.table(run, "embedding", **chosen))

    return work


def colour_choices(run: Run, of: str) -> list[str]:
    if of == "experts":
        return ["load", "count"]
    labels = [c for c in run.label_columns if c != "pair"]
    steps = ["step"] if len(cache.table(run, "table.steps")) > 1 else []
    return ["top_expert", *labels, "position", *steps]


def main() -> None:
    st.title("Embeddings")
    st.caption(
        "A 2-D map of routing at one layer: tokens by their router scores, or experts by what they take."
    )
    store = open_store()
    run = pick_run(store, state.EMBED_RUN)
    with user_errors():
        chosen = options(run)
        table = embedding_table(store, run, chosen)
        if table is None:
            return
        colour = str(
            st.selectbox(
                "Colour by",
                colour_choices(run, chosen["of"]),
                key=state.scoped(state.EMBED_COLOUR, run.name, chosen["of"]),
            )
        )
        st.caption(f"{len(table):,} points at layer {chosen['layer']}")
        stem = f"{run.name}-layer{chosen['layer']}-{chosen['of']}-{chosen['method']}-{colour}"
        show_kind(
            "embedding",
            run,
            table=table,
            layer=chosen["layer"],
            by=colour,
            axis_names=AXES[chosen["method"]],
            key=state.scoped(state.EMBED_CHART, run.name, *(v for _, v in sorted(chosen.items())), colour),
            name=stem,
        )


if __name__ == "__main__":
    main()
