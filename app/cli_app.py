"""`routescope app`: start the Streamlit dashboard on a store.

The server binds 127.0.0.1 unless `--host` says otherwise (the dashboard loads models and writes runs, so
it should not be reachable from the network by accident; binding elsewhere prints a warning). It runs
headless, without usage statistics, and finds its store in `ROUTESCOPE_STORE`. An empty store gets the
default runs on first start (see `dashboard/first_start.py`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from routescope.store import InputError, Store

from .dashboard import DEFAULT_STORE, ENTRY_SCRIPT, STORE_ENV

LOOPBACK = "127.0.0.1"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_PORT = 8501


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=DEFAULT_STORE, help=f"store folder (default: {DEFAULT_STORE})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--host", default=LOOPBACK, help=f"address to bind (default: {LOOPBACK}, this machine)"
    )


def streamlit_command(*, host: str = LOOPBACK, port: int = DEFAULT_PORT) -> list[str]:
    """The `streamlit run` command line of the dashboard: bound to `host`, headless, no usage stats."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ENTRY_SCRIPT),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "minimal",
    ]


def bind_warning(host: str) -> str | None:
    """The warning printed when the server would be reachable from other machines, else None."""
    if host in LOCAL_HOSTS:
        return None
    return (
        f"routescope: warning: binding {host}, not {LOOPBACK}: anyone who can reach this machine "
        "can open the dashboard, run models and write runs"
    )


def server_environment(store: Store) -> dict[str, str]:
    """The server's environment: this one, plus the store folder for the dashboard."""
    return {**os.environ, STORE_ENV: str(Path(store.path).resolve())}


def cmd_app(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: give a port between 1 and 65535")
    if not str(args.host).strip():
        raise InputError("--host is empty; give an address such as 127.0.0.1")
    store = Store(args.store)  # a path that is a file fails here, in one line
    warning = bind_warning(args.host)
    if warning:
        sys.stderr.write(warning + "\n")
    sys.stderr.write(f"routescope: dashboard on http://{args.host}:{args.port} (store {store.path})\n")
    command = streamlit_command(host=args.host, port=args.port)
    server = subprocess.Popen(command, env=server_environment(store))
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())  # stopping us stops the server too
    try:
        return server.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the server too; give it a moment to shut down cleanly
        try:
            return server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.terminate()
            return server.wait()
