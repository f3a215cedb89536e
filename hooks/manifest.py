"""Facts every run's manifest carries about the model and the software that recorded it."""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import platform
from typing import Any

from .loaded import LoadedModel


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    versions = {"python": platform.python_version()}
    for package in ("routescope", "torch", "transformers", "nnsight", "pyarrow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return tuple(versions.items())


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages whose behaviour shapes a recording (looked up once)."""
    return dict(_versions())


def tokenizer_name(subject: LoadedModel) -> str | None:
    if subject.tokenizer is None:
        return None
    name = getattr(subject.tokenizer, "name_or_path", None)
    return name or subject.spec or type(subject.tokenizer).__name__


def model_facts(subject: LoadedModel) -> dict[str, Any]:
    """The manifest's `model` entry: spec, source, class, family, revision, dtype, device, size."""
    model = subject.model
    config = getattr(model, "config", None)
    first = next(model.parameters(), None)
    return {
        "spec": subject.spec,
        "source": subject.source,
        "class": type(model).__name__,
        "family": getattr(config, "model_type", None),
        "revision": getattr(config, "_commit_hash", None),
        "dtype": None if first is None else str(first.dtype).removeprefix("torch."),
        "device": None if first is None else str(first.device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "encoder_decoder": bool(getattr(config, "is_encoder_decoder", False)),
        **subject.info,
    }
