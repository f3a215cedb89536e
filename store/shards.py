"""Sharded recording: n processes (or machines) record parts of one run; `merge` publishes the run.

Shard `i/n` records the inputs `i, i+n, i+2n, ...` (striding balances the work when a corpus is grouped by
domain or length) and keeps each input's ORIGINAL sample index, so the parts never collide and the merged
tables equal a single-process recording row for row (up to row order, which no table promises).

Crash safety follows the store's rules. A part is an ordinary run written by `RunWriter` into a hidden
part store, `STORE/.shards/NAME/part-0000i-of-0000n/` — first under that folder's `.incomplete/`, renamed
into place when the part is complete — so `routescope runs` never lists a part as a run and a killed
shard leaves only its own part unfinished (re-run that shard, overwriting). `merge` checks that all
n parts are complete and agree (model, routers, labels, options), streams their row groups into one new
run through `RunWriter` (which publishes it with a single rename), and only then removes the parts.
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CorruptRunError, InputError, RunExistsError, RunNotFoundError
from .reader import TRASH_DIR, Run, Store, check_run_name
from .writer import ROW_GROUP_ROWS, RunWriter

SHARDS_DIR = ".shards"
_PART = re.compile(r"^part-(\d{5})-of-(\d{5})$")
_PER_RUN = ("schema_version", "name", "status", "created", "finished", "rows", "tables")
"""Manifest keys a run writer sets itself (or that differ between parts by nature)."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the inputs whose index ≡ `index` (mod `count`)."""

    index: int
    count: int

    def samples(self, n_inputs: int) -> list[int]:
        """The original indices of the inputs this shard records."""
        return list(range(self.index, n_inputs, self.count))

    def part_name(self) -> str:
        return f"part-{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: Shard | str | tuple[int, int]) -> Shard:
    """`"i/n"` (or `(i, n)`) with 0 ≤ i < n → `Shard`; anything else is a one-line `InputError`."""
    if isinstance(value, Shard):
        return value
    try:
        if isinstance(value, str):
            first, sep, second = value.partition("/")
            if not sep:
                raise ValueError(value)
            index, count = int(first), int(second)
        else:
            index, count = (int(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"shard {value!r} must look like i/n, e.g. 0/4 (the first of 4 shards)") from None
    if count < 1 or not 0 <= index < count or count > 99999:
        raise InputError(f"shard {index}/{count}: need 0 ≤ i < n (shards are numbered from 0)")
    return Shard(index, count)


def part_store(store: Store, name: str) -> Store:
    """The hidden store that holds the parts of run `name`."""
    return Store(store.path / SHARDS_DIR / check_run_name(name))


@dataclass(frozen=True)
class PendingShards:
    """Shards of a run not merged yet: how many parts are finished, of how many, and how many still record."""

    name: str
    finished: int
    total: int | None
    unfinished: int


def pending_shards(store: Store) -> list[PendingShards]:
    """Every run with shard parts in `store` that `merge` has not published yet."""
    root = store.path / SHARDS_DIR
    if not root.is_dir():
        return []
    pending = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        parts = Store(folder)
        finished = [m for m in (_PART.match(n) for n in parts.runs()) if m]
        totals = {int(m[2]) for m in finished}
        pending.append(
            PendingShards(
                name=folder.name,
                finished=len(finished),
                total=totals.pop() if len(totals) == 1 else None,
                unfinished=len(parts.incomplete()),
            )
        )
    return pending


def _complete_parts(store: Store, name: str) -> tuple[int, dict[int, Run]]:
    parts = part_store(store, name)
    found: dict[int, Run] = {}
    counts = set()
    for part in parts.runs():
        match = _PART.match(part)
        if match:
            found[int(match[1])] = parts.open(part)
            counts.add(int(match[2]))
    if not found:
        running = ", ".join(parts.incomplete()) or "none"
        raise RunNotFoundError(
            f"no finished shards of {name!r} in {store.path} (unfinished: {running}); "
            "record them with `routescope record ... --shard i/n`"
        )
    if len(counts) > 1:
        raise CorruptRunError(
            f"shards of {name!r} disagree on the number of shards ({sorted(counts)}); re-record them"
        )
    count = counts.pop()
    missing = [str(i) for i in range(count) if i not in found]
    if missing:
        raise InputError(
            f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} of {name!r} are not finished; "
            "record them, then merge"
        )
    return count, found


def _shared_manifest(parts: list[Run]) -> dict[str, Any]:
    """The manifest the parts agree on (without the shard option); refuse parts of different recordings."""

    def common(run: Run) -> dict[str, Any]:
        manifest = {k: v for k, v in run.manifest.items() if k not in _PER_RUN}
        options = dict(manifest.get("options", {}))
        options.pop("shard", None)
        options.pop("inputs", None)
        model = dict(manifest.get("model", {}))
        model.pop("device", None)  # shards may run on different machines and devices
        return {**manifest, "options": options, "model": model}

    first = common(parts[0])
    for part in parts[1:]:
        other = common(part)
        differs = sorted(k for k in {*first, *other} if k != "packages" and first.get(k) != other.get(k))
        if differs:
            raise CorruptRunError(
                f"shards {parts[0].name} and {part.name} were recorded differently ({', '.join(differs)}); "
                "record every shard with the same model and options"
            )
    devices = sorted({p.manifest.get("model", {}).get("device") for p in parts}, key=str)
    first["model"]["device"] = devices[0] if len(devices) == 1 else devices
    return first


def merge(store: Store | str, name: str, *, overwrite: bool = False) -> Run:
    """Publish run `name` from its n finished shards: facts concatenated, samples in sample order, one
    `steps` table; the parts are removed once the run is in place."""
    store = store if isinstance(store, Store) else Store(store)
    if store.exists(name) and not overwrite:
        raise RunExistsError(name=name, store=store.path)
    count, found = _complete_parts(store, name)
    parts = [found[i] for i in range(count)]
    manifest = _shared_manifest(parts)
    manifest["shards"] = count
    tables = list(parts[0].manifest["tables"])
    schemas = {table: pq.read_schema(parts[0].table_path(table)) for table in tables}
    schemas = {table: schema.remove_metadata() for table, schema in schemas.items()}
    with RunWriter(store, name, schemas=schemas, manifest=manifest, overwrite=overwrite) as writer:
        for table in tables:
            if table == "samples":
                samples = pa.concat_tables([p.read_table("samples") for p in parts]).sort_by("sample")
                ids = samples["sample"].to_pylist()
                expected = parts[0].manifest.get("options", {}).get("inputs")
                if len(set(ids)) != len(ids) or (expected is not None and len(ids) != expected):
                    raise CorruptRunError(
                        f"the shards of {name!r} hold {len(ids)} samples ({len(set(ids))} distinct) for "
                        f"{expected} inputs; re-record them"
                    )
                writer.write(table, samples)
            elif table == "steps":
                writer.write(table, parts[0].read_table("steps"))
            else:
                for part in parts:
                    for batch in pq.ParquetFile(part.table_path(table)).iter_batches(
                        batch_size=ROW_GROUP_ROWS
                    ):
                        writer.write(table, pa.Table.from_batches([batch]))
        path = writer.publish()
    trash = store.path / TRASH_DIR / f"{name}.shards.{uuid.uuid4().hex}"
    trash.parent.mkdir(exist_ok=True)
    part_store(store, name).path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    return Run(path)
