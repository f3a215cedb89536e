"""The Interventions page's "Reroute" section: start a counterfactual-route probe and read its result.

Kept out of the page's probe form because the reroute probe edits nothing permanently: it records one
unedited run whose probe entry holds, for sampled decisions, the loss change of K equal-compute
alternative top-k sets (`routescope.probes.probe_reroute`). The section starts it as a background job on
bundled domain texts (`probing.probe_request`: the request `routescope probe reroute` builds) and shows a
reroute run's share of decisions with a better route by margin and by entropy bin (`reroute-share`,
figure kinds `reroute-margin` / `reroute-entropy`), with the bootstrap interval over sequences.
"""

from __future__ import annotations

from functools import partial

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from routescope.probes import probe_of
from routescope.store import RouteScopeError, Run, Store

from ..figures.theme import Width
from . import cache, state
from .job_view import own, show_failure, start_writing, watch
from .jobs import Report, Work
from .markup import literal
from .probing import Reroute, domain_subset, probe_request
from .recording import check_new_run, dataset_inputs
from .widgets import pick_run, show_error, show_figure, show_table, user_errors

MAX_TEXTS = 100
WIDGETS = {
    "overwrite": "tick “Replace”",
    "alternatives": "change “Alternatives K”",
    "tokens": "change “Decisions N”",
}
"""How this section names the option an error concerns (`RouteScopeError.field`)."""


def is_reroute_run(run: Run) -> bool:
    """A run the reroute probe recorded."""
    return (probe_of(run) or {}).get("probe") == "reroute"


def _work(spec: str, texts: int, settings: Reroute, store: Store, name: str, overwrite: bool) -> Work:
    def work(report: Report) -> Run:
        report(0.0, f"loading {spec}")
        model = cache.model(spec)
        report(0.1, f"rerouting {settings.tokens} decisions × {settings.alternatives} alternatives")
        inputs = domain_subset(dataset_inputs("bundled:domains"), texts)
        request = probe_request(inputs, settings, name=name, overwrite=overwrite)
        (run,) = request.execute(model, store=store)
        return run

    return work


def reroute_form(store: Store) -> None:
    """Model, K, N, seed, texts and name; the Run reroute button starts the job and follows it."""
    top = st.columns([3, 2])
    spec = top[0].text_input("Text model", value="bundled:moe-lm", key=state.REROUTE_MODEL)
    texts = top[1].slider("Bundled domain texts", 1, MAX_TEXTS, 20, key=state.REROUTE_TEXTS)
    row = st.columns(4)
    k = row[0].number_input("Alternatives K", value=8, step=1, key=state.REROUTE_ALTERNATIVES)
    n = row[1].number_input("Decisions N", value=200, step=50, key=state.REROUTE_TOKENS)
    seed = row[2].number_input("Seed", value=0, step=1, key=state.REROUTE_SEED)
    overwrite = row[3].checkbox("Replace", key=state.REROUTE_OVERWRITE)
    name = st.text_input("Run name", value="reroute-probe", key=state.REROUTE_NAME).strip()
    if st.button("Run reroute", key=state.REROUTE_START):
        try:
            from routescope.probes.reroute import check_counts

            check_counts(int(k), int(n))
            check_new_run(store, name, overwrite)
            settings = Reroute(alternatives=int(k), tokens=int(n), seed=int(seed))
            work = _work(spec.strip(), int(texts), settings, store, name, overwrite)
            own(state.REROUTE_JOB, start_writing(store, name, f"reroute probe {name}", work))
        except RouteScopeError as exc:
            show_error(exc, WIDGETS)
            return
    job = watch(state.REROUTE_JOB)
    if job is not None:
        if job.status == "failed":
            show_failure(job)
        else:
            st.success(f"Recorded run {literal(job.result.name)}.")


def reroute_result(store: Store) -> None:
    """A reroute run's share with a better route, by margin and by entropy bin (figure and table each)."""
    if not any(is_reroute_run(cache.run(store, name)) for name in store.runs()):
        st.info("No reroute run in the store yet: start one above, or `routescope probe reroute MODEL ...`.")
        return
    from routescope.analysis.reroute import reroute_share

    run = pick_run(store, state.REROUTE_RUN, accept=is_reroute_run, kind="reroute run")
    with user_errors(runs=[run]):
        params = (probe_of(run) or {}).get("params", {})
        st.caption(
            f"{params.get('tokens')} sampled decisions × {params.get('alternatives')} alternatives (seed "
            f"{params.get('seed')}); better = the next-token loss at the decision's position drops; "
            "95 % percentile bootstrap over sequences"
        )
        for by in ("margin", "entropy"):
            table = reroute_share(run, by=by)
            stem = f"{run.name}-reroute-{by}"
            show_figure(
                partial(_figure, table),
                table,
                key=state.scoped(state.REROUTE_CHART, run.name, by),
                name=stem,
            )
            show_table(table, key=state.scoped(state.REROUTE_TABLE, run.name, by), name=stem)


def _figure(table: pd.DataFrame, width: Width) -> go.Figure:
    from routescope.figures.reroute import figure_reroute_share

    return figure_reroute_share(table, width=width)


def reroute_section(store: Store) -> None:
    """The whole section: heading, form, result."""
    st.subheader("Reroute: equal-compute alternative routes")
    st.caption(
        "For sampled tokens, K alternative top-k sets drawn from the router's own distribution, each "
        "rerun alone: how often would another route of the same cost have predicted the next token better?"
    )
    reroute_form(store)
    reroute_result(store)
