"""Errors RouteScope raises on purpose.

Every error a user can cause (a bad model spec, a run name with path parts, a corrupted file) is a
`RouteScopeError` whose message is one line that says what went wrong and what to do. The CLI prints that
line and exits non-zero; anything else escaping is a bug.

The library's message names no front end's control: an error about one option carries it as `field`
(`"overwrite"`, `"layer"`, ...) and each front end renders that field its own way — the CLI as its flag
(`--overwrite`), the dashboard as its widget's label — from one mapping each (`routescope.cli.FLAGS`,
`routescope.dashboard.widgets.WIDGETS`). `first_damage` is the one translation of a DuckDB failure into
"this file is damaged", used by both front ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class RouteScopeError(Exception):
    """Base class: a user-facing problem with a one-line, actionable message.

    `field` names the option the problem concerns (`"overwrite"`, `"layer"`, ...), or None; front ends
    render it as their own control (a CLI flag, a dashboard widget). The message itself names none."""

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StoreError(RouteScopeError):
    """The store folder or a run in it cannot be used as asked."""


class RunNotFoundError(StoreError):
    """No complete run of that name exists in the store."""


class RunExistsError(StoreError):
    """A run of that name exists (or is being recorded) and overwriting was not asked for.

    `RunExistsError(name=..., store=...)` words the usual refusal ("run 'x' already exists in STORE;
    choose another name or overwrite it") with `field="overwrite"`; a message given explicitly is used as
    it is (`field` then defaults to None: e.g. a run being recorded right now cannot be overwritten)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        name: str | None = None,
        store: object = None,
        field: str | None = None,
    ) -> None:
        if message is None:
            message = f"run {name!r} already exists in {store}; choose another name or overwrite it"
            field = field or "overwrite"
        super().__init__(message, field=field)
        self.name = name
        self.store = store


class CorruptRunError(StoreError):
    """A run's files are missing, truncated, foreign or from an unknown schema version."""


class InvalidNameError(RouteScopeError):
    """A run name that is not a plain file name (path separators, `..`, control characters)."""


class ModelSpecError(RouteScopeError):
    """A model spec that names no bundled model, local checkpoint or loadable hub id."""


class NoRoutersError(RouteScopeError):
    """The model has no router RouteScope can find or was told about."""


class RouterOutputError(RouteScopeError):
    """A router returned something that does not fit its (detected or declared) output convention."""


class InputError(RouteScopeError):
    """Inputs that cannot be recorded: empty text, a missing label column, an unreadable file."""


class InterventionError(RouteScopeError):
    """An edit that cannot be applied to this model as asked (the message says why and what to do)."""


class RemoteUnavailableError(RouteScopeError):
    """Remote recording cannot start: no API key, the service is unreachable, or the model is not hosted."""


class ExportError(RouteScopeError):
    """A figure could not be rendered: no browser, or the browser failed or timed out."""


class _Verifiable(Protocol):
    def verify(self) -> object: ...


def first_damage(runs: Iterable[_Verifiable]) -> CorruptRunError | None:
    """After DuckDB failed on a read: the error naming the first damaged file of `runs` (each read whole
    by `Run.verify`), or None when all read cleanly — then the DuckDB error is a bug. The one translation
    of a DuckDB failure into "this file is damaged", for the CLI and the dashboard alike."""
    for run in runs:
        try:
            run.verify()
        except CorruptRunError as exc:
            return exc
    return None
