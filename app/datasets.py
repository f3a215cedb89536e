"""`load_dataset(spec)`: bundled input sets (texts plus label columns) for recording."""

from __future__ import annotations

from routescope.store import InputError

BUNDLED_PREFIX = "bundled:"


def load_dataset(spec: str) -> tuple[list[str], dict[str, list[str]]]:
    """Texts and label columns of `bundled:NAME` (e.g. `bundled:domains`, the moe-lm evaluation set)."""
    from routescope.models import load_bundled_dataset

    name = spec[len(BUNDLED_PREFIX) :] if spec.startswith(BUNDLED_PREFIX) else ""
    try:
        return load_bundled_dataset(name)
    except KeyError:
        raise InputError(f"unknown dataset {spec!r}; bundled datasets: bundled:domains") from None
