"""The Interventions page's Prune section: run a prune study as a job, and draw a study's loss curves.

A section of its own (not a fifth choice of the page's probe form) because a prune study is many runs
and one curve per criterion rather than one edited run against its base; kept in its own module so the
page's other sections change independently. The form builds the same `ProbeRequest` (`Prune` settings)
as `routescope probe prune`; the result is `prune-curve` of the study's base run, drawn by the registered
figure kind.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from routescope.analysis import compute
from routescope.dashboard import cache, state
from routescope.dashboard.forms import choose_model
from routescope.dashboard.job_view import own, show_failure, start_writing, watch
from routescope.dashboard.jobs import Report, Work
from routescope.dashboard.markup import literal
from routescope.dashboard.probing import StagedProgress, check_names, domain_subset
from routescope.dashboard.recording import dataset_inputs
from routescope.dashboard.widgets import show_error, show_figure, show_table, user_errors
from routescope.figures.registry import FigureRequest, draw
from routescope.inputs import Inputs
from routescope.probes import CRITERIA
from routescope.requests import ProbeRequest, Prune, parse_floats
from routescope.store import ModelSpecError, RouteScopeError, Run, Store

DOMAINS = ("prose", "code", "arithmetic", "json", "chemistry")


def studies(store: Store) -> list[str]:
    """Base runs that prune probe runs of the store name as theirs, sorted."""
    bases = set()
    for name in store.runs():
        try:
            entry = cache.run(store, name).probe or {}
        except RouteScopeError:
            continue
        if entry.get("probe") == "prune" and entry.get("base"):
            bases.add(str(entry["base"]))
    return sorted(base for base in bases if store.exists(base))


def prune_job(spec: str, request: ProbeRequest, store: Store, names: Sequence[str]) -> Work:
    """Load the model and record the study's runs under one progress bar."""

    def work(report: Report) -> tuple[Run, list[str]]:
        report(0.0, f"loading {spec}")
        runs = request.execute(cache.model(spec), store=store, progress=StagedProgress(names, report))
        return runs[0], list(names)

    return work


def prune_form(store: Store) -> None:
    """Model, criteria, shares, inputs and name; "Run prune probe" records the study as a job."""
    spec, _diffusion = choose_model("prune")
    columns = st.columns(2)
    criteria = columns[0].multiselect(
        "Criteria", list(CRITERIA), default=["reap", "frequency"], key=state.PRUNE_CRITERIA
    )
    ratios = columns[1].text_input(
        "Shares of each layer's experts to prune (each in (0, 1))", value="0.25, 0.5", key=state.PRUNE_RATIOS
    )
    most = st.slider("Texts of the domain set at most", 1, 100, 10, key=state.PRUNE_MAX_TEXTS)
    name = st.text_input("Study name", value="prune", key=state.PRUNE_NAME)
    if st.button("Run prune probe", key=state.PRUNE_START):
        try:
            settings = Prune(criteria=tuple(criteria), ratios=parse_floats(ratios, "shares"))
            names = check_names(store, name, settings, overwrite=False)
            if not spec:
                raise ModelSpecError("type a local checkpoint folder or a hub id")
            inputs: Inputs = domain_subset(dataset_inputs("bundled:domains"), int(most), DOMAINS)
            request = ProbeRequest(name=name.strip(), settings=settings, inputs=inputs)
            work = prune_job(spec, request, store, names)
            own(state.PRUNE_JOB, start_writing(store, name.strip(), f"prune probe {name.strip()}", work))
        except RouteScopeError as exc:
            show_error(exc, {"ratio": "give shares between 0 and 1", "criterion": "choose a criterion"})
            return
    job = watch(state.PRUNE_JOB)
    if job is not None and job.status == "failed":
        show_failure(job)
    elif job is not None:
        st.success(f"Recorded runs {literal(', '.join(job.result[1]))}.")


def prune_result(store: Store) -> None:
    """A study's loss per criterion against the pruned share (`prune-curve` of its base run)."""
    found = studies(store)
    if not found:
        st.info("No prune study in the store yet.")
        return
    base_name = st.selectbox("Prune study (its base run)", found, key=state.PRUNE_RESULT_RUN)
    base = cache.run(store, str(base_name))
    with user_errors():
        table = compute("prune-curve", base)  # not cached: a study running now adds runs to it
        show_figure(
            lambda width: draw("prune-curve", table, FigureRequest(run=base, width=width)),
            table,
            key=state.scoped(state.PRUNE_CHART, base.name),
            name=f"{base.name}-prune-curve",
        )
        show_table(table, key=state.scoped(state.PRUNE_TABLE, base.name), name=f"{base.name}-prune-curve")


def prune_section(store: Store) -> None:
    """The Prune section of the Interventions page."""
    st.subheader("Prune: disable each layer's lowest-scoring experts")
    st.caption(
        "Score experts on a calibration run (REAP: gate × output norm; EAN: output norm; frequency; random), "
        "disable the lowest-scoring share per layer and measure the next-token loss (nats per token)."
    )
    with st.expander("Run a prune study"):
        prune_form(store)
    prune_result(store)
