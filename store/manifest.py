"""The typed manifest: `RunManifest` and its `RouterInfo`s, the one place that knows the manifest's keys.

`manifest.json` stays a JSON object (docs/format.md); code reads it through these frozen dataclasses
(`run.info`), never by string key. `RunManifest.from_dict` checks the types of every field it models
(so a damaged or hand-edited manifest fails in one line, not as a KeyError in an analysis) and keeps the
keys it does not model in `extra`, so `to_dict` loses nothing a writer put there. The reader validates
on open (`Run.info`), the writer on publish.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .capabilities import capability_problem, derived_capabilities
from .errors import CorruptRunError
from .schema import MANIFEST_FILE, MANIFEST_REQUIRED, ROUTER_POSITIONS, SCHEMA_VERSION

REQUIRED_TABLES = ("samples", "tokens", "assignments", "decisions", "steps")
"""Tables every run has (diffusion runs add `images` and `x0`)."""
_TABLE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""A table name: a plain identifier, safe as a file name and as an SQL view name."""


class ManifestError(ValueError):
    """A manifest whose fields do not have the types the format says (the message is the problem)."""


def label_problem(column: str) -> str | None:
    """Why `column` cannot name a label column (None if it can): empty, longer than 64 characters, or
    holding a double quote or a control character (analyses quote label names in SQL)."""
    if not column.strip():
        return "is empty"
    if len(column) > 64:
        return "is longer than 64 characters"
    if '"' in column or not column.isprintable():
        return "holds a double quote or a control character"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def manifest_problem(manifest: Mapping[str, Any]) -> str | None:
    """What is wrong with the types of a manifest's fields (None if nothing)."""
    if not _is_int(manifest["schema_version"]) or manifest["schema_version"] < 1:
        return f"schema version {manifest['schema_version']!r} is not a positive integer"
    for key in ("name", "status", "created"):
        if not isinstance(manifest[key], str):
            return f"{key} is not a string"
    if not isinstance(manifest["model"], dict):
        return "model is not an object"
    tables = manifest["tables"]
    if not isinstance(tables, list) or not all(isinstance(t, str) and _TABLE.fullmatch(t) for t in tables):
        return "tables is not a list of table names"
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        return f"tables lacks {', '.join(missing)}"
    routers = manifest["routers"]
    if not isinstance(routers, list) or not all(isinstance(r, dict) for r in routers):
        return "routers is not a list of objects"
    for router in routers:
        problem = router_problem(router)
        if problem:
            return problem
    labels = manifest.get("labels", [])
    if not isinstance(labels, list) or not all(
        isinstance(label, str) and label_problem(label) is None for label in labels
    ):
        return "labels is not a list of column names"
    rows = manifest.get("rows", {})
    if not isinstance(rows, dict) or not all(_is_int(n) and n >= 0 for n in rows.values()):
        return "rows is not a map of table to row count"
    for key, kind in (("options", dict), ("kind", str), ("unit", str)):
        if manifest.get(key) is not None and not isinstance(manifest[key], kind):
            return f"{key} is not {'an object' if kind is dict else 'a string'}"
    if manifest.get("engine") is not None and not isinstance(manifest["engine"], str):
        return "engine is not a string"
    if manifest.get("capabilities") is not None:
        problem = capability_problem(manifest["capabilities"])
        if problem:
            return problem
    grid = manifest.get("patch_grid")
    if grid is not None and not (isinstance(grid, list) and len(grid) == 2 and all(map(_is_int, grid))):
        return "patch_grid is not a pair of integers"
    return None


class _Record:
    """to/from dict for a frozen dataclass whose unmodelled keys live in `extra`; `absent` remembers
    which optional keys the source dict lacked, so a round trip writes back exactly what was read."""

    _TUPLES: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _modelled(cls) -> list[dataclasses.Field[Any]]:
        return [f for f in dataclasses.fields(cls) if f.name not in ("extra", "absent")]  # type: ignore[arg-type]

    @classmethod
    def _kwargs(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        fields = cls._modelled()
        names = {f.name for f in fields}
        kwargs: dict[str, Any] = {f.name: data[f.name] for f in fields if f.name in data}
        for name in cls._TUPLES:
            if isinstance(kwargs.get(name), list):
                kwargs[name] = tuple(kwargs[name])
        kwargs["extra"] = {k: v for k, v in data.items() if k not in names}
        kwargs["absent"] = frozenset(f.name for f in fields if f.name not in data)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: modelled fields (those the source had), then the unmodelled ones."""
        out: dict[str, Any] = {}
        for f in self._modelled():
            if f.name in self.absent:  # type: ignore[attr-defined]
                continue
            value = getattr(self, f.name)
            if isinstance(value, _Record):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [v.to_dict() if isinstance(v, _Record) else v for v in value]
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        out.update(self.extra)  # type: ignore[attr-defined]
        return out


@dataclass(frozen=True, kw_only=True)
class RouterInfo(_Record):
    """One router of a run (docs/format.md, "Router objects"); `id` is the fact tables' `router`."""

    id: int
    layer: int
    n_experts: int
    top_k: int
    path: str = ""
    call_count: int | None = None
    """Calls per forward pass (None: not recorded)."""
    kind: str = "ffn"
    stack: str = "decoder"
    shared_experts: tuple[str, ...] = ()
    router_class: str = ""
    convention: str = "triple"
    scoring: str = "softmax"
    pnorm: float | None = None
    positions: str = "token"
    """`token`: one decision per token; `none`: one per (sample, step, call), `position` null in the fact
    tables (a gate over the timestep, as in Switch-DiT). Manifests without the key are token routers."""
    choice: str = "token"
    """`token` (each token picks its top-k experts) or `expert` (each expert picks its tokens, so a
    decision has 0 … n_experts assignments); absent on runs that predate it: token."""
    capacity_factor: float | None = None
    """Expert choice: each expert takes max(1, ⌈capacity_factor · S / E⌉) tokens of a sequence."""
    weight_scale: float = 1.0
    zero_experts: tuple[int, ...] = ()
    """Expert ids that compute nothing (LongCat-Flash's identity experts): recorded, but not counted in
    load, balance or specialization."""
    skip_expert: int | None = None
    """The no-compute skip class (ZAYA), also in `zero_experts`: the router returns it as (expert 0,
    weight 0) and the recording restores its id. Absent on other routers."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    _TUPLES: ClassVar[tuple[str, ...]] = ("shared_experts", "zero_experts")

    @property
    def computing_experts(self) -> int:
        """Experts that compute: `n_experts` without the zero-computation ones."""
        return self.n_experts - len(self.zero_experts)

    @property
    def has_positions(self) -> bool:
        """Whether the router's decisions are per token (a position each)."""
        return self.positions != "none"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouterInfo:
        problem = router_problem(data)
        if problem:
            raise ManifestError(problem)
        return cls(**cls._kwargs(data))


def router_problem(router: Mapping[str, Any]) -> str | None:
    """What is wrong with one router object's types (None if nothing)."""
    if not all(_is_int(router.get(key)) for key in ("id", "layer", "n_experts", "top_k")):
        return "a router lacks an integer id, layer, n_experts or top_k"
    if router.get("choice", "token") not in ("token", "expert"):
        return f"router {router['id']}'s choice is {router.get('choice')!r}, not token or expert"
    zero = router.get("zero_experts", [])
    if not isinstance(zero, list) or not all(_is_int(e) and 0 <= e < router["n_experts"] for e in zero):
        return f"router {router['id']}'s zero_experts is not a list of its expert ids"
    if router.get("positions", "token") not in ROUTER_POSITIONS:
        return f"router {router['id']}'s positions is {router.get('positions')!r}, not token or none"
    return None


@dataclass(frozen=True, kw_only=True)
class RunManifest(_Record):
    """A run's manifest (docs/format.md, "The manifest"), typed. `run.info` returns it."""

    REQUIRED: ClassVar[tuple[str, ...]] = MANIFEST_REQUIRED

    schema_version: int
    name: str
    status: str
    created: str
    model: Mapping[str, Any]
    routers: tuple[RouterInfo, ...]
    tables: tuple[str, ...]
    kind: str | None = None
    """`text` or `diffusion` (absent on runs that predate it: read as text)."""
    unit: str | None = None
    tokenizer: str | None = None
    labels: tuple[str, ...] = ()
    seed: int | None = None
    patch_grid: tuple[int, int] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    packages: Mapping[str, Any] = field(default_factory=dict)
    finished: str | None = None
    rows: Mapping[str, int] = field(default_factory=dict)
    engine: str | None = None
    """Where the routing came from: `routescope` (a recording) or an engine's trace (`vllm`, ...); absent
    on runs that predate it (read as `routescope`)."""
    capabilities: tuple[str, ...] | None = None
    """What the run knows (store/capabilities.py); absent on older runs, then derived (`caps`)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    _TUPLES: ClassVar[tuple[str, ...]] = ("tables", "labels", "patch_grid", "capabilities")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunManifest:
        """Check and type a manifest object; raise `ManifestError` saying what is wrong."""
        if not isinstance(data, Mapping):
            raise ManifestError("manifest is not a JSON object")
        missing = [key for key in cls.REQUIRED if key not in data]
        if missing:
            raise ManifestError(f"manifest lacks {', '.join(missing)}")
        problem = manifest_problem(data)
        if problem:
            raise ManifestError(problem)
        kwargs = cls._kwargs(data)
        kwargs["routers"] = tuple(RouterInfo.from_dict(r) for r in data["routers"])
        if kwargs.get("options") is None:
            kwargs.pop("options", None)
        return cls(**kwargs)

    # typed accessors ------------------------------------------------------------------------------

    @property
    def is_diffusion(self) -> bool:
        """Whether the run comes from a diffusion sampler or pipeline (many steps, CFG branches)."""
        return self.kind == "diffusion"

    @property
    def label_columns(self) -> list[str]:
        return list(self.labels)

    @property
    def probs(self) -> bool:
        """Whether `decisions.probs` was recorded (a capability, as declared or derived)."""
        return "probs" in self.caps

    @property
    def logits(self) -> bool:
        """Whether `decisions.logits` was recorded (a capability, as declared or derived)."""
        return "logits" in self.caps

    @property
    def source_engine(self) -> str:
        """The engine the routing came from (`routescope` for recordings and older runs)."""
        return self.engine or "routescope"

    @property
    def caps(self) -> frozenset[str]:
        """The run's capabilities: as declared, or derived from an older run's options."""
        if self.capabilities is not None:
            return frozenset(self.capabilities)
        return derived_capabilities(self.options)

    @property
    def token_loss(self) -> bool:
        """Whether `tokens.nll` and `tokens.predicted` were recorded (`record(token_loss=True)`)."""
        return "token_loss" in self.caps

    @property
    def expert_stats(self) -> bool:
        """Whether `assignments.output_norm` was recorded (`record(expert_stats=True)`)."""
        return "output_norms" in self.caps

    @property
    def modality(self) -> bool:
        """Whether `tokens.modality` (and `image`, `frame`) were recorded (`record(images=...)`)."""
        return "modality" in self.caps

    @property
    def output_logprobs(self) -> bool:
        """Whether the `outputs` table of next-token log-probabilities was recorded
        (`record(output_logprobs=True)`)."""
        return "output_logprobs" in self.caps

    @property
    def expert_means(self) -> bool:
        """Whether the `expert_means` table was recorded (`record(expert_means=True)`)."""
        return "expert_means" in self.caps

    @property
    def probe(self) -> dict[str, Any] | None:
        """`model.probe`: which intervention made this run, or None."""
        entry = self.model.get("probe")
        return dict(entry) if isinstance(entry, dict) else None

    @property
    def n_experts(self) -> int:
        """Experts per router when every router has the same number (the usual case); else the most."""
        return max((r.n_experts for r in self.routers), default=0)

    def router(self, router_id: int) -> RouterInfo:
        """The router whose `id` (the fact tables' `router` column) is `router_id`."""
        for info in self.routers:
            if info.id == router_id:
                return info
        raise KeyError(router_id)


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and check a run folder's manifest; raise `CorruptRunError` naming the file otherwise."""
    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptRunError(
            f"{path}: manifest missing; the run is damaged, delete or re-record it"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRunError(
            f"{path}: unreadable manifest ({exc.__class__.__name__}); re-record the run"
        ) from None
    if not isinstance(manifest, dict):
        raise CorruptRunError(f"{path}: manifest is not a JSON object; re-record the run")
    missing = [key for key in MANIFEST_REQUIRED if key not in manifest]
    if missing:
        raise CorruptRunError(f"{path}: manifest lacks {', '.join(missing)}; re-record the run")
    version = manifest["schema_version"]
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise CorruptRunError(
            f"{path}: schema version {version!r} is newer than this RouteScope reads ({SCHEMA_VERSION}); "
            "upgrade routescope"
        )
    try:
        RunManifest.from_dict(manifest)
    except ManifestError as exc:
        raise CorruptRunError(f"{path}: {exc}; re-record the run") from None
    return manifest


def read_info(folder: Path) -> RunManifest:
    """Read, check and type a run folder's manifest (`read_manifest`, then `RunManifest`)."""
    return RunManifest.from_dict(read_manifest(folder))
