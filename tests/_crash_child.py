"""Fault injection for tests/test_reliability.py: record synthetic runs through the real `RunWriter` and
die by SIGKILL at a chosen moment.

Importing `routescope` imports torch (seconds); a crash test needs dozens of recordings. So this module
is a small fork server: started once (`python -m tests._crash_child`), it imports the writer, then reads
one JSON request per line on stdin and forks one child per request. The child writes a run of
deterministic synthetic routing (`synthetic_batches`, which the test recomputes to know the exact
content) and is killed either

- by itself, with `os.kill(getpid(), SIGKILL)`, on the N-th *event* it passes: a batch boundary, a
  Parquet row-group write, closing or fsyncing a table, writing the manifest, the final rename (a profile
  hook sees these calls in every thread; nothing in the writer is changed or mocked), or
- by the server, which sleeps a given time after the fork and then sends SIGKILL from outside.

A `stop_event` instead freezes the child with SIGSTOP at that event (the reply names its pid first), so
a test can try a second recording of the same name while the first is provably half-way.

A dry run (no kill) answers the list of events it passed, so the test can pick kill points in every
phase. The reply to each request is one JSON line: the child's pid, whether it was killed, its exit code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pyarrow as pa

from routescope.store import Store
from routescope.store import writer as writer_module
from routescope.store.schema import ASSIGNMENTS, STEPS, TOKENS, decisions_schema, samples_schema

N_ROUTERS = 4
N_EXPERTS = 8
TOP_K = 2
ROW_GROUP_ROWS = 3000
"""Row-group size the child uses, so that a small run still writes several row groups per table."""

SCHEMAS: dict[str, pa.Schema] = {
    "samples": samples_schema(["domain"]),
    "tokens": TOKENS,
    "assignments": ASSIGNMENTS,
    "decisions": decisions_schema(True),
    "steps": STEPS,
}

PYTHON_EVENTS = {
    "write_table": "row group",
    "_flush": "row group",
    "_close_table": "close table",
    "_fsync_file": "fsync",
    "_fsync_dir": "fsync",
    "write_json_atomic": "manifest",
    "publish": "publish",
}
"""Python functions whose entry and return are kill points, and the phase each belongs to."""
C_EVENTS = {"fsync": "fsync", "rename": "rename", "replace": "manifest", "unlink": "publish"}
"""Builtins (os.*) whose call and return are kill points."""


def synthetic_batches(seed: int, batches: int, tokens: int) -> list[dict[str, pa.Table]]:
    """Per batch, the rows of each fact table: `tokens` one-token-per-position rows of one sample each
    batch, `N_ROUTERS` routers choosing `TOP_K` of `N_EXPERTS` experts with seeded probabilities."""
    out = []
    for batch in range(batches):
        rng = np.random.default_rng([seed, batch])
        probs = rng.dirichlet(np.ones(N_EXPERTS), size=(N_ROUTERS, tokens)).astype(np.float32)
        order = np.argsort(-probs, axis=2, kind="stable")
        top = np.take_along_axis(probs, order, axis=2)
        positions = np.arange(tokens, dtype=np.int32)
        key = {
            "sample": np.full(N_ROUTERS * tokens, batch, np.int32),
            "position": np.tile(positions, N_ROUTERS),
            "step": np.zeros(N_ROUTERS * tokens, np.int32),
            "router": np.repeat(np.arange(N_ROUTERS, dtype=np.int16), tokens),
            "layer": np.repeat(np.arange(N_ROUTERS, dtype=np.int16), tokens),
            "call": np.zeros(N_ROUTERS * tokens, np.int16),
        }
        flat = probs.reshape(-1, N_EXPERTS)
        decisions = pa.table(
            {
                **key,
                "entropy": -(flat * np.log(flat)).sum(axis=1).astype(np.float32),
                "margin": (top[..., 0] - top[..., 1]).reshape(-1),
                "max_prob": top[..., 0].reshape(-1),
                "probs": pa.array(list(flat)),
            },
            schema=SCHEMAS["decisions"],
        )
        assignments = pa.table(
            {
                **{name: np.repeat(values, TOP_K) for name, values in key.items()},
                "rank": np.tile(np.arange(TOP_K, dtype=np.int16), N_ROUTERS * tokens),
                "expert": order[..., :TOP_K].reshape(-1).astype(np.int32),
                "weight": top[..., :TOP_K].reshape(-1),
                "dropped": np.zeros(N_ROUTERS * tokens * TOP_K, bool),
            },
            schema=ASSIGNMENTS,
        )
        ids = rng.integers(4, 260, size=tokens).astype(np.int32)
        token_rows = pa.table(
            {
                "sample": np.full(tokens, batch, np.int32),
                "position": positions,
                "token_id": ids,
                "token": [chr(int(i) % 90 + 32) for i in ids],
                "generated": np.zeros(tokens, bool),
                "stack": ["decoder"] * tokens,
                "row": pa.nulls(tokens, pa.int32()),
                "col": pa.nulls(tokens, pa.int32()),
            },
            schema=TOKENS,
        )
        out.append({"tokens": token_rows, "assignments": assignments, "decisions": decisions})
    return out


def summary_tables(seed: int, batches: int, tokens: int) -> dict[str, pa.Table]:
    """The samples and steps tables written after the last batch."""
    samples = pa.table(
        {
            "sample": np.arange(batches, dtype=np.int32),
            "text": [f"synthetic {seed}/{b}" for b in range(batches)],
            "n_tokens": np.full(batches, tokens, np.int32),
            "n_generated": np.zeros(batches, np.int32),
            "generated": pa.nulls(batches, pa.string()),
            "domain": [("code", "prose", "math")[b % 3] for b in range(batches)],
        },
        schema=SCHEMAS["samples"],
    )
    steps = pa.table({"step": [0], "timestep": [None], "sigma": [None]}, schema=STEPS)
    return {"samples": samples, "steps": steps}


@functools.cache
def expected_tables(seed: int, batches: int, tokens: int) -> dict[str, pa.Table]:
    """Exactly what a complete run written by `record_synthetic` holds, table by table."""
    per_batch = synthetic_batches(seed, batches, tokens)
    tables = {t: pa.concat_tables([b[t] for b in per_batch]) for t in ("tokens", "assignments", "decisions")}
    return {**tables, **summary_tables(seed, batches, tokens)}


def manifest(seed: int) -> dict[str, Any]:
    routers = [
        {
            "id": i,
            "path": f"model.layers.{i}.mlp.gate",
            "layer": i,
            "call_count": 1,
            "kind": "ffn",
            "stack": "decoder",
            "n_experts": N_EXPERTS,
            "top_k": TOP_K,
            "shared_experts": [],
        }
        for i in range(N_ROUTERS)
    ]
    return {
        "kind": "text",
        "model": {"spec": "synthetic", "class": "Synthetic"},
        "routers": routers,
        "labels": ["domain"],
        "seed": seed,
        "options": {"probs": True},
    }


class Tripwire:
    """Counts kill-point events (in every thread) and sends this process `signum` (SIGKILL; SIGSTOP to
    freeze a recording half-way for a concurrency test) on the `kill_at`-th one."""

    def __init__(self, kill_at: int | None, signum: int = signal.SIGKILL) -> None:
        self.kill_at = kill_at
        self.signum = signum
        self.events: list[str] = []
        self.lock = threading.Lock()

    def hit(self, label: str) -> None:
        with self.lock:
            self.events.append(label)
            if self.kill_at is not None and len(self.events) == self.kill_at + 1:
                os.kill(os.getpid(), self.signum)

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event in ("call", "return"):
            phase = PYTHON_EVENTS.get(frame.f_code.co_name)
            module = str(frame.f_globals.get("__name__", ""))
            if phase and module.startswith(("routescope.store", "pyarrow")):
                self.hit(f"{phase}:{frame.f_code.co_name}:{event}")
        elif event in ("c_call", "c_return"):
            name = getattr(arg, "__name__", "")
            if name in C_EVENTS and getattr(arg, "__module__", None) in ("posix", "os"):
                self.hit(f"{C_EVENTS[name]}:{name}:{event}")


def record_synthetic(
    store: Path, name: str, seed: int, batches: int, tokens: int, overwrite: bool, tripwire: Tripwire
) -> None:
    """Write one synthetic run through the real RunWriter, passing the tripwire at every batch boundary
    (the rows are computed first, so that the profile hook only watches the writing)."""
    rows = synthetic_batches(seed, batches, tokens)
    summary = summary_tables(seed, batches, tokens)
    writer_module.ROW_GROUP_ROWS = ROW_GROUP_ROWS
    sys.setprofile(tripwire.profile)
    threading.setprofile(tripwire.profile)
    try:
        with writer_module.RunWriter(
            Store(store), name, schemas=SCHEMAS, manifest=manifest(seed), overwrite=overwrite
        ) as writer:
            for batch in rows:
                tripwire.hit("batch:boundary:before")
                for table, data in batch.items():
                    writer.write(table, data)
                tripwire.hit("batch:boundary:after")
            for table, data in summary.items():
                writer.write(table, data)
            writer.publish()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]


def _child(request: dict[str, Any]) -> None:
    """The forked child: record, then leave with os._exit (never return into the server's loop)."""
    if request.get("stop_event") is not None:
        tripwire = Tripwire(request["stop_event"], signal.SIGSTOP)
    else:
        tripwire = Tripwire(request.get("kill_event"))
    code = 0
    try:
        record_synthetic(
            Path(request["store"]),
            request["name"],
            request["seed"],
            request["batches"],
            request["tokens"],
            bool(request.get("overwrite")),
            tripwire,
        )
    except Exception as exc:
        sys.stderr.write(f"child: {exc.__class__.__name__}: {exc}\n")
        code = 3
    if request.get("events_file"):
        Path(request["events_file"]).write_text(json.dumps(tripwire.events))
    os._exit(code)


def serve() -> None:
    """Answer one JSON request per stdin line until stdin closes."""
    sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        if request.get("stop_event") is not None:  # the test resumes it with SIGCONT: say which pid
            sys.stdout.write(json.dumps({"started": pid}) + "\n")
            sys.stdout.flush()
        delay = request.get("kill_after")
        if delay is not None:
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):  # it finished already (and is not reaped yet)
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sys.stdout.write(json.dumps({"pid": pid, "killed": killed, "code": code}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
