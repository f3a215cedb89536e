"""First start: the store gets the default runs (`routescope.default_runs`, the same `routescope demo`
records) that it lacks, recorded as one background job as the app opens.

Which defaults are recorded: every one without a folder in the store while the store holds nothing but
default runs (a fresh store, or one whose first start was cut short before), and, in any store, a default
whose recording was interrupted (left under `.incomplete/`; that folder is removed first). A user's own
runs are never touched, and a default another process is recording right now is left to it.

Why a job: the recording used to run in the page's script, and a click on another page stopped it
halfway; the next start then found a non-empty store and never recorded the rest (the Noise steps page
stayed empty). Now the recording runs in the server's worker thread (`jobs.py`), at most once per store
and server process; whichever page or tab is open shows its progress and waits for it, and a click only
changes which page waits.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from routescope.hooks import LoadedModel
from routescope.store import Store
from routescope.store.reader import OWNER_FILE, owner_alive

from . import cache, state
from .job_view import follow, show_failure, store_key
from .jobs import Job, Report, Work
from .recording import DEFAULT_RUNS, DefaultRun, record_default

TITLE = "First start: recording the bundled models so there is something to browse…"
DONE = "Recorded the default runs"


def _owned_here(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid()


def _being_recorded_elsewhere(folder: Path) -> bool:
    """An incomplete run folder another live process is writing (this process's are left-overs: every
    recording the dashboard makes runs in its one job thread, which is busy with the caller)."""
    return owner_alive(folder) and not _owned_here(folder)


def defaults_to_record(store: Store) -> list[DefaultRun]:
    """The default runs first start records into `store` (see the module docstring), in order."""
    names = {default.name for default in DEFAULT_RUNS}
    only_defaults = set(store.runs()) | set(store.damaged()) <= names
    chosen = []
    for default in DEFAULT_RUNS:
        if store.exists(default.name):
            continue
        interrupted = store.incomplete_path(default.name)
        if interrupted.is_dir() and _being_recorded_elsewhere(interrupted):
            continue
        if only_defaults or interrupted.is_dir():
            chosen.append(default)
    return chosen


def clear_interrupted(store: Store, name: str) -> None:
    """Remove an interrupted recording of `name` (never one another process is writing)."""
    folder = store.incomplete_path(name)
    if folder.is_dir() and not _being_recorded_elsewhere(folder):
        shutil.rmtree(folder)


def record_defaults(store: Store, defaults: list[DefaultRun], load: Callable[[str], LoadedModel]) -> Work:
    """The job that records `defaults` one after the other, reporting one progress over all of them."""

    def work(report: Report) -> list[str]:
        count = len(defaults)
        for i, default in enumerate(defaults):
            where = f"{default.name} ({i + 1} of {count})"

            def progress(done: int, total: int, i: int = i, where: str = where) -> None:
                report((i + done / max(total, 1)) / count, f"{where}: {done} of {total}")

            report(i / count, f"{where}: loading {default.model}")
            clear_interrupted(store, default.name)
            record_default(default, store, load, progress)
        return [default.name for default in defaults]

    return work


def start_defaults(store: Store, load: Callable[[str], LoadedModel]) -> Job | None:
    """Start the first-start job of `store` (once per store and process); None when nothing was missing."""
    key = store_key(store)

    def plan() -> Work | None:
        defaults = defaults_to_record(store)
        return record_defaults(store, defaults, load) if defaults else None

    return cache.jobs().start_once(f"defaults:{key}", "recording the default runs", key, plan)


def ensure_runs(store: Store) -> None:
    """Start the first start's job if it is due, and while it runs show its progress in a status box
    (on whichever page is open; the page draws once it has ended)."""
    job = start_defaults(store, cache.model)
    if job is None:
        return
    if job.finished:
        if job.status == "failed" and not st.session_state.get(state.DEFAULTS_ERROR_SHOWN):
            st.session_state[state.DEFAULTS_ERROR_SHOWN] = True
            show_failure(job)
        return
    with st.status(TITLE, expanded=True) as box:
        for default in DEFAULT_RUNS:
            st.write(f"`{default.name}`: {default.description}")
        job = follow(job)
        if job.status == "failed":
            st.session_state[state.DEFAULTS_ERROR_SHOWN] = True
            show_failure(job)
            box.update(label="Recording the default runs failed", state="error")
        else:
            box.update(label=DONE, state="complete", expanded=False)
