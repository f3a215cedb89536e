"""Long work started from the dashboard, run outside the page's script: a registry of jobs and the one
worker thread that runs them (no Streamlit import here; `cache.jobs()` holds one registry per server).

Why: Streamlit stops a page's script whenever the user clicks a widget or another page. Work done inside
the script (recording a run, a probe, a UMAP map) was cut off halfway and left an interrupted run. A job
instead runs in a thread the server process owns; a click or a page change stops only the page that was
*watching* it. Any page, another tab or a reloaded one re-attaches by reading the job's state
(`status`, `fraction`, `message`, `error`) from this registry.

Jobs run one at a time, in the order they were started: two recordings never share a loaded model (its
hooks) at once, and a laptop's cores go to one model. A job is known by a `key` (e.g. the store and run
name it writes); starting a key that is queued or running returns that job instead of a second one.
A job that raises ends `failed` with its one-line error; the registry keeps the last `KEEP` finished jobs.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from routescope.store import RouteScopeError

Status = Literal["queued", "running", "done", "failed"]
Report = Callable[[float, str], None]
"""`report(fraction, message)`: a job's progress, fraction in [0, 1]."""
Work = Callable[[Report], Any]
"""What a job does: called once in the worker thread with its `report`; returns the job's result."""
KEEP = 64
"""Finished jobs kept in the registry (the oldest go first)."""
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A snapshot of one job (the registry replaces it as the job advances; snapshots never change)."""

    id: int
    key: str
    title: str
    """What the job does, shown beside its progress bar, e.g. "recording digits"."""
    store: str
    """The store folder (resolved) it writes into: pages list the jobs of their own store."""
    status: Status = "queued"
    fraction: float = 0.0
    message: str = "waiting for the jobs started before it"
    error: str | None = None
    """The one-line error of a failed job."""
    result: Any = None
    started: float = field(default_factory=time.time)
    ended: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


def one_line(exc: BaseException) -> str:
    """An exception as one line: a RouteScopeError's message, else its type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, RouteScopeError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Jobs:
    """The registry: start jobs, read their snapshots; one daemon worker thread runs them in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._work: dict[int, Work] = {}
        self._seen: set[str] = set()
        self._ids = itertools.count(1)
        self._queue: queue.Queue[int] = queue.Queue()
        self._worker: threading.Thread | None = None

    # --- starting -----------------------------------------------------------------------------------

    def start(self, key: str, title: str, store: str, work: Work) -> Job:
        """Queue `work` as a new job, or return the unfinished job already started under `key`."""
        with self._lock:
            return self._start(key, title, store, work)

    def start_once(self, key: str, title: str, store: str, plan: Callable[[], Work | None]) -> Job | None:
        """The first call for `key` in this process calls `plan()` and starts what it returns (None: no
        job); later calls return the job it started (None if there was none). Atomic, so two tabs opened
        at once start one job."""
        with self._lock:
            if key in self._seen:
                return self._latest(key)
            self._seen.add(key)
            work = plan()
            return None if work is None else self._start(key, title, store, work)

    def _start(self, key: str, title: str, store: str, work: Work) -> Job:
        running = self._latest(key)
        if running is not None and not running.finished:
            return running
        job = Job(id=next(self._ids), key=key, title=title, store=store)
        self._jobs[job.id] = job
        self._work[job.id] = work
        self._queue.put(job.id)
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run_all, name="routescope-jobs", daemon=True)
            self._worker.start()
        return job

    # --- reading ------------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def _latest(self, key: str) -> Job | None:
        return max((j for j in self._jobs.values() if j.key == key), key=lambda j: j.id, default=None)

    def latest(self, key: str) -> Job | None:
        """The most recent job started under `key`."""
        with self._lock:
            return self._latest(key)

    def unfinished(self, store: str) -> list[Job]:
        """Queued and running jobs writing into `store`, oldest first."""
        with self._lock:
            return sorted(
                (j for j in self._jobs.values() if j.store == store and not j.finished), key=lambda j: j.id
            )

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Block until the job has finished (or `timeout` seconds passed); its last snapshot."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self._jobs[job_id]
            if job.finished or (deadline is not None and time.monotonic() >= deadline):
                return job
            time.sleep(0.05)

    # --- the worker ---------------------------------------------------------------------------------

    def _update(self, job_id: int, **changes: Any) -> None:
        with self._lock:
            self._jobs[job_id] = replace(self._jobs[job_id], **changes)

    def _run_all(self) -> None:
        while True:
            try:
                job_id = self._queue.get(timeout=5)
            except queue.Empty:
                with self._lock:  # idle: end the thread unless a job came in meanwhile
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            self._run(job_id)

    def _run(self, job_id: int) -> None:
        work = self._work.pop(job_id)
        self._update(job_id, status="running", message="starting")

        def report(fraction: float, message: str) -> None:
            self._update(job_id, fraction=min(max(float(fraction), 0.0), 1.0), message=message)

        try:
            result = work(report)
        except Exception as exc:  # a job's failure is its state, never the worker's end
            if not isinstance(exc, RouteScopeError):
                LOG.exception("dashboard job %s failed", self._jobs[job_id].title)
            self._update(job_id, status="failed", error=one_line(exc), ended=time.time())
        else:
            done = {"fraction": 1.0, "message": "done", "result": result, "ended": time.time()}
            self._update(job_id, status="done", **done)
        self._forget_old()

    def _forget_old(self) -> None:
        with self._lock:
            finished = sorted(j.id for j in self._jobs.values() if j.finished)
            for old in finished[: max(len(finished) - KEEP, 0)]:
                del self._jobs[old]
