"""How pages watch background jobs (`jobs.py`): a progress bar that follows one job, the jobs a page
started in this session, and the sidebar panel that shows every unfinished job of the store.

A page that starts a job remembers its id in the session and *follows* it: its script polls the registry
and redraws a progress bar until the job ends, then shows the result or the one-line error. A click or a
page change stops that script, never the job; coming back to the page follows it again
(`watch(key)`), and every other page, tab or reloaded tab sees it in the sidebar (`sidebar_jobs`), which
refreshes itself every second while a job runs and reruns the whole page when the last one ends, so the
page sees the new runs.
"""

from __future__ import annotations

import time

import streamlit as st

from routescope.store import RunExistsError, Store

from . import cache, state
from .jobs import Job, Work
from .markup import literal

POLL_S = 0.25
"""How often a following page reads its job's state (each read is also where a click can stop it)."""
SIDEBAR_POLL_S = 1.0
"""How often the sidebar panel refreshes while jobs run."""


def store_key(store: Store) -> str:
    """The registry's name for a store: its resolved folder."""
    return str(store.path.resolve())


def progress_text(job: Job) -> str:
    """The bar's text (Markdown, so the title and message, which hold run names, are escaped)."""
    return f"{literal(job.title)}: {literal(job.message)}"


def follow(job: Job) -> Job:
    """Draw the job's progress bar and keep it current until the job ends; return its last snapshot.

    Only this page's script waits here: a click or a page change stops the script, never the job."""
    registry = cache.jobs()
    bar = st.progress(job.fraction, text=progress_text(job))
    while not job.finished:
        time.sleep(POLL_S)
        job = registry.get(job.id) or job
        bar.progress(job.fraction, text=progress_text(job))
    bar.empty()
    return job


def start_writing(store: Store, name: str, title: str, work: Work) -> Job:
    """Start a job that writes run `name` (and its companions) into `store`; refuse while another job
    writing `name` is unfinished, so two clicks never record one run twice."""
    key = f"write:{store_key(store)}:{name}"
    registry = cache.jobs()
    busy = registry.latest(key)
    if busy is not None and not busy.finished:
        raise RunExistsError(f"run {name!r} is being recorded right now ({busy.title}); pick another name")
    return registry.start(key, title, store_key(store), work)


def own(key: str, job: Job) -> None:
    """Remember `job` as the one this session's page started (under the page's `state.*_JOB` key)."""
    st.session_state[key] = job.id


def watch(key: str) -> Job | None:
    """This session's job under `key`: followed while it runs, returned once it has ended (and then
    forgotten, so its result is shown once). None when the session started no job there."""
    job_id = st.session_state.get(key)
    job = None if job_id is None else cache.jobs().get(int(job_id))
    if job is None:
        st.session_state.pop(key, None)
        return None
    if not job.finished:
        job = follow(job)
    st.session_state.pop(key, None)
    return job


def show_failure(job: Job) -> None:
    """A failed job's one-line error, as every page shows a user mistake."""
    st.error(literal(job.error or "failed"), icon="⚠️")


def sidebar_jobs(store: Store) -> None:
    """In the sidebar: each unfinished job of `store` with its progress, refreshed while any runs; and,
    once, the error of a job this panel watched that failed."""
    registry = cache.jobs()
    watched: set[int] = st.session_state.setdefault(state.JOBS_WATCHED, set())
    for job_id in sorted(watched):
        job = registry.get(job_id)
        if job is None or job.finished:
            watched.discard(job_id)
        if job is not None and job.status == "failed":
            st.sidebar.error(f"{literal(job.title)} failed: {literal(job.error or '')}", icon="⚠️")
    if registry.unfinished(store_key(store)):
        with st.sidebar:
            _panel(store_key(store))


@st.fragment(run_every=SIDEBAR_POLL_S)
def _panel(store: str) -> None:
    unfinished = cache.jobs().unfinished(store)
    if not unfinished:
        st.rerun(scope="app")  # the last job ended: the page reads the store again
    st.caption("Running in the background (a click does not stop it):")
    watched: set[int] = st.session_state.setdefault(state.JOBS_WATCHED, set())
    for job in unfinished:
        watched.add(job.id)
        st.progress(job.fraction, text=progress_text(job))
