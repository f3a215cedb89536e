"""Every run's manifest: the facts a source gives, laid out by one builder, plus the model and software.

Text, sampler and pipeline recordings built their manifests as separate dict literals; `run_manifest` is
now the one place that says which entries a manifest has and in which order (tests compare manifests),
so a new source states facts (`ManifestFacts`) and never the layout.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from routescope.store.capabilities import derived_capabilities

from .loaded import LoadedModel

if TYPE_CHECKING:
    from .routers import RouterSpec


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


@dataclass(frozen=True)
class ManifestFacts:
    """A source's part of the manifest: what was recorded, from what model, with which options."""

    kind: str
    """"text" or "diffusion" (sampler and pipeline runs alike)."""
    model: dict[str, Any]
    tokenizer: str | None
    labels: list[str]
    seed: int
    options: dict[str, Any] = field(default_factory=dict)
    patch_grid: tuple[int, int] | None = None
    """Rows and columns of the patch grid, when known before recording."""
    engine: str = "routescope"
    """Where the routing comes from: a RouteScope recording, or an engine trace (`vllm`, `sglang`, ...)."""
    capabilities: tuple[str, ...] | None = None
    """What the run knows (routescope.store.capabilities); None: a recording's, derived from `options`."""


def _capabilities(facts: ManifestFacts, routers: Sequence[RouterSpec]) -> frozenset[str] | tuple[str, ...]:
    """The facts' capabilities (a recording's derived from its options), without `positions` when no
    router decides per token (every router a timestep gate): such a run has no position to analyse."""
    known = facts.capabilities if facts.capabilities is not None else derived_capabilities(facts.options)
    if routers and all(spec.positions == "none" for spec in routers):
        return frozenset(known) - {"positions"}
    return known


def run_manifest(facts: ManifestFacts, routers: Sequence[RouterSpec]) -> dict[str, Any]:
    """The manifest a recording opens with (the writer adds name, status, tables and times)."""
    return {
        "kind": facts.kind,
        "model": facts.model,
        "tokenizer": facts.tokenizer,
        "routers": [spec.to_manifest() for spec in routers],
        "labels": list(facts.labels),
        "seed": facts.seed,
        **({"patch_grid": list(facts.patch_grid)} if facts.patch_grid is not None else {}),
        "options": facts.options,
        "engine": facts.engine,
        "capabilities": sorted(_capabilities(facts, routers)),
        "packages": package_versions(),
    }
