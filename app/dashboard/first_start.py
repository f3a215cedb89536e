"""First start: an empty store gets the default runs (`recording.DEFAULT_RUNS`) as the app opens.

Recording happens in the page, under an `st.status` box with one progress bar per run, so the first
visitor sees what is happening. It happens at most once per store and server process; a lock makes a
second browser tab wait for the first tab's recording instead of recording the same runs again.
"""

from __future__ import annotations

import threading

import streamlit as st

from routescope.store import Store

from . import cache
from .recording import DEFAULT_RUNS, record_default
from .widgets import progress_bar, user_errors

_LOCK = threading.Lock()
_SEEDED: set[str] = set()
"""Store folders (resolved) this process already filled or found filled."""


def ensure_runs(store: Store) -> None:
    """Record the default runs into `store` if it has no complete run (once per process and store)."""
    key = str(store.path.resolve())
    if key in _SEEDED:
        return
    with _LOCK:
        if key in _SEEDED:
            return
        if not store.runs():
            with (
                st.status(
                    "First start: recording the bundled models so there is something to browse…"
                ) as box,
                user_errors(),
            ):
                for default in DEFAULT_RUNS:
                    st.write(f"`{default.name}`: {default.description}")
                    record_default(default, store, cache.model, progress_bar(f"recording {default.name}"))
                box.update(label="Recorded the default runs", state="complete", expanded=False)
        _SEEDED.add(key)
