"""Remote recording through nnsight's remote execution (NDIF): what is checked before any work starts.

A model of hundreds of billions of parameters is recorded without its weights on this machine: the same
nnsight trace that `capture.py` runs locally is serialised, run on an NDIF server that hosts the model, and
its router outputs come back. Everything else (tokenising, batching, normalising, writing Parquet) stays
here. A remote run fails for reasons a user can fix — no API key, no network, a model the service does not
host — and each of those must be one line, said before a model is loaded, not a traceback minutes later.

`remote` takes nnsight's own values: `True` (the configured NDIF host, `NDIF_HOST` or
https://api.ndif.us), a host URL, or `"local"` — nnsight's local simulation, which serialises the trace,
deserialises it with this project's modules hidden (as on the server) and runs it on the model loaded
here; it needs no key or network and is how the tests prove the trace code is remote-safe.
"""

from __future__ import annotations

import os
from typing import Any

from routescope.store.errors import RemoteUnavailableError

Remote = bool | str
"""`False` (run here), `True` (NDIF), a host URL, or `"local"` (nnsight's local simulation)."""

LOCAL = "local"
STATUS_TIMEOUT_S = (5.0, 20.0)
"""(connect, read) seconds for the service's status request: an unreachable host fails in seconds."""


def is_remote(remote: Remote) -> bool:
    """Whether `remote` asks for a remote (or locally simulated remote) run."""
    return remote is True or (isinstance(remote, str) and bool(remote))


def needs_service(remote: Remote) -> bool:
    """Whether `remote` goes to a real service (anything but `False` and `"local"`)."""
    return is_remote(remote) and remote != LOCAL


def host(remote: Remote) -> str:
    """The service URL a remote run talks to."""
    if isinstance(remote, str) and remote != LOCAL:
        return remote.rstrip("/")
    from nnsight import CONFIG

    return str(CONFIG.API.HOST).rstrip("/")


def api_key() -> str:
    """The NDIF API key: `NDIF_API_KEY`, else the one nnsight saved (`nnsight.login()`); a one-line error
    when there is none."""
    key = os.environ.get("NDIF_API_KEY")
    if not key:
        from nnsight import CONFIG

        key = CONFIG.API.APIKEY
    if not key:
        raise RemoteUnavailableError(
            "remote recording needs an NDIF API key: set NDIF_API_KEY or run "
            "`python -c 'import nnsight; nnsight.login()'` (keys: https://login.ndif.us)"
        )
    return str(key)


def hosted_models(remote: Remote) -> dict[str, dict[str, Any]]:
    """The service's deployments (repo id → its status entry), read from its `/status` endpoint."""
    import httpx

    url = host(remote)
    try:
        response = httpx.get(
            f"{url}/status",
            timeout=httpx.Timeout(STATUS_TIMEOUT_S[0], read=STATUS_TIMEOUT_S[1]),
            headers={"ndif-api-key": api_key()},
        )
        response.raise_for_status()
        status = response.json()
    except httpx.HTTPError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RemoteUnavailableError(
            f"NDIF at {url} is not reachable ({reason}); check the network or NDIF_HOST"
        ) from None
    except ValueError:
        raise RemoteUnavailableError(
            f"NDIF at {url} answered /status with something that is not JSON"
        ) from None
    deployments = status.get("deployments", {}) if isinstance(status, dict) else {}
    return {
        str(entry.get("repo_id", name)): entry
        for name, entry in deployments.items()
        if isinstance(entry, dict)
    }


def check_remote(remote: Remote, repo_id: str) -> None:
    """Before loading anything: a key is set, the service answers, and it runs `repo_id`.

    Nothing is checked for `remote="local"` (no service is involved)."""
    if not needs_service(remote):
        return
    api_key()
    hosted = hosted_models(remote)
    running = {
        name.lower()
        for name, entry in hosted.items()
        if entry.get("application_state", "RUNNING") == "RUNNING"
    }
    if repo_id.lower() not in running:
        listed = ", ".join(sorted(running)[:8]) or "none"
        more = f" and {len(running) - 8} more" if len(running) > 8 else ""
        raise RemoteUnavailableError(
            f"{repo_id} is not hosted on NDIF at {host(remote)} right now; running: {listed}{more} "
            "(see nnsight.status())"
        )
