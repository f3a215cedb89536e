"""Errors RouteScope raises on purpose.

Every error a user can cause (a bad model spec, a run name with path parts, a corrupted file) is a
`RouteScopeError` whose message is one line that says what went wrong and what to do. The CLI prints that
line and exits non-zero; anything else escaping is a bug.
"""

from __future__ import annotations


class RouteScopeError(Exception):
    """Base class: a user-facing problem with a one-line, actionable message."""


class StoreError(RouteScopeError):
    """The store folder or a run in it cannot be used as asked."""


class RunNotFoundError(StoreError):
    """No complete run of that name exists in the store."""


class RunExistsError(StoreError):
    """A run of that name exists (or is being recorded) and overwriting was not asked for."""


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
