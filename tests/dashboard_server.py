"""A real `routescope app` server for the browser tests: started on a free port, awaited, and stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_dashboard(store: Path, timeout: float = 90) -> Iterator[int]:
    """Start `routescope app --store STORE` on a free port, wait until Streamlit's health check answers,
    yield the port, and stop the server (its whole process group if SIGTERM is not enough)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "routescope", "app", "--store", str(store), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
                    if reply.read() == b"ok":
                        break
            except OSError:
                assert server.poll() is None, "the server exited early"
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.5)
        yield port
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
