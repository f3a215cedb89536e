"""Streaming writer for one run: row groups appended per batch, published atomically at the end.

A recording writes into `STORE/.incomplete/NAME/` (created with an exclusive `mkdir`, so two processes
cannot record the same name at once), appending one Parquet row group per batch so that memory stays
bounded by the batch. `publish()` closes the files, checks row counts, writes the final manifest
(status "complete") through a temporary file and `os.replace`, then renames the folder to `STORE/NAME`.
Anything that stops the process before that rename leaves earlier runs untouched and this run listed as
incomplete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError, RunExistsError, StoreError
from .manifest import ManifestError, RunManifest, label_problem
from .reader import INCOMPLETE_DIR, OWNER_FILE, TRASH_DIR, Store, owner_alive
from .schema import MANIFEST_FILE, RESERVED_COLUMNS, SCHEMA_VERSION, table_file


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """zstd level 3; float32 columns BYTE_STREAM_SPLIT and `position` DELTA_BINARY_PACKED (no dictionary),
    every other column dictionary-encoded. Lossless; it brings a top-2-of-8 decision (2 assignment rows +
    1 decision row) from 27 to under 16 bytes on disk (benchmarks/bytes_per_decision.py)."""
    encodings: dict[str, str] = {}
    for field in schema:
        if field.type == pa.float32():
            encodings[field.name] = "BYTE_STREAM_SPLIT"
        elif pa.types.is_list(field.type) and field.type.value_type == pa.float32():
            encodings[f"{field.name}.list.element"] = "BYTE_STREAM_SPLIT"
    if "position" in schema.names:
        encodings["position"] = "DELTA_BINARY_PACKED"
    plain = {name.split(".")[0] for name in encodings}
    return {
        "compression": "zstd",
        "compression_level": 3,
        "use_dictionary": [name for name in schema.names if name not in plain],
        "column_encoding": encodings,
        "write_page_checksum": True,  # a CRC per page: a flipped bit is an error on read, not a wrong value
    }


ROW_GROUP_ROWS = 1 << 18
"""Rows queued per table before a row group is written (≈ 256 k rows: a few MB of memory per table)."""


def write_json_atomic(path: Path, payload: dict[str, Any], *, durable: bool = True) -> None:
    """Write JSON next to `path`, then atomically replace `path` (after an fsync when `durable`)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    tmp.replace(path)


def check_label_columns(columns: list[str]) -> None:
    """Refuse label columns that would shadow a core column, or whose name cannot be quoted safely."""
    for column in columns:
        problem = label_problem(column)
        if problem:
            raise InputError(f"label column name {column!r} {problem}; rename it")
    clash = sorted(set(columns) & RESERVED_COLUMNS)
    if clash:
        raise InputError(f"label column(s) {', '.join(clash)} collide with core columns; rename them")


class RunWriter:
    """Writes one run. Use as a context manager: an exception leaves the run marked incomplete."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        schemas: dict[str, pa.Schema],
        manifest: dict[str, Any],
        overwrite: bool,
    ) -> None:
        self.store = store
        self.name = name
        self.final_path = store.run_path(name)
        self.overwrite = overwrite
        if self.final_path.exists() and not overwrite:
            raise RunExistsError(name=name, store=store.path)
        self.schemas = schemas
        self.rows = dict.fromkeys(schemas, 0)
        self.manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "status": "incomplete",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tables": sorted(schemas),
            **manifest,
        }
        self.path = self._claim(store.incomplete_path(name))
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._pending: dict[str, list[pa.Table]] = {}
        self._pending_rows: dict[str, int] = {}
        write_json_atomic(self.path / MANIFEST_FILE, self.manifest, durable=False)  # says "incomplete"

    def _claim(self, path: Path) -> Path:
        try:
            self.store.path.mkdir(parents=True, exist_ok=True)
            (self.store.path / INCOMPLETE_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store folder {self.store.path}: {exc.strerror}") from None
        try:
            path.mkdir()
        except FileExistsError:
            if owner_alive(path):
                raise RunExistsError(
                    f"run {self.name!r} is being recorded by another process right now; pick another name"
                ) from None
            if not self.overwrite:
                raise RunExistsError(
                    f"an interrupted recording of {self.name!r} exists in {self.store.path}; overwrite it, "
                    "or clean the store's interrupted recordings",
                    name=self.name,
                    store=self.store.path,
                    field="overwrite",
                ) from None
            shutil.rmtree(path)
            path.mkdir()
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        write_json_atomic(path / OWNER_FILE, owner, durable=False)
        return path

    def write(self, table: str, batch: pa.Table) -> None:
        """Queue rows for `table`, cast to (and so validated against) the table's schema; a row group is
        written once ROW_GROUP_ROWS rows are queued, so memory stays bounded and files hold few groups."""
        if batch.num_rows == 0:
            return
        schema = self.schemas[table]
        self._pending.setdefault(table, []).append(batch.select(schema.names).cast(schema))
        self._pending_rows[table] = self._pending_rows.get(table, 0) + batch.num_rows
        if self._pending_rows[table] >= ROW_GROUP_ROWS:
            self._flush(table)

    def _flush(self, table: str) -> None:
        parts = self._pending.pop(table, [])
        self._pending_rows.pop(table, None)
        if not parts:
            return
        data = pa.concat_tables(parts)
        writer = self._writers.get(table)
        if writer is None:
            schema = self.schemas[table]
            writer = pq.ParquetWriter(self.path / table_file(table), schema, **parquet_options(schema))
            self._writers[table] = writer
        writer.write_table(data, row_group_size=data.num_rows)
        self.rows[table] += data.num_rows

    def _close_files(self) -> None:
        """Write what is queued, close and fsync every table — one thread per table, since Parquet encoding
        and fsync release the GIL and the tables are independent files."""
        with ThreadPoolExecutor(max_workers=len(self.schemas)) as pool:
            list(pool.map(self._close_table, list(self.schemas)))

    def _close_table(self, table: str) -> None:
        self._flush(table)
        writer = self._writers.pop(table, None)
        if writer is None:  # a table with no rows still gets a valid, empty file
            schema = self.schemas[table]
            writer = pq.ParquetWriter(self.path / table_file(table), schema, **parquet_options(schema))
        writer.close()
        _fsync_file(self.path / table_file(table))  # data is on disk before the manifest says complete

    def publish(self, extra: dict[str, Any] | None = None) -> Path:
        """Finish the files, mark the manifest complete and move the run into place."""
        self._close_files()
        self.manifest.update(extra or {})
        self.manifest.update(
            status="complete",
            finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            rows=dict(self.rows),
        )
        try:  # the typed manifest checks the final one once, before it is written
            RunManifest.from_dict(self.manifest)
        except ManifestError as exc:
            raise StoreError(f"run {self.name!r}: cannot publish a manifest whose {exc}") from None
        write_json_atomic(self.path / MANIFEST_FILE, self.manifest)
        _fsync_dir(self.path)
        # owner.json stays until the run is in place, so `Store.clean` never touches a run being published;
        # a crash from here on leaves a complete run under .incomplete/ that `Store.recover` moves in.
        trash = None
        if self.final_path.exists():
            if not self.overwrite:
                raise RunExistsError(
                    f"run {self.name!r} appeared in {self.store.path} while recording; kept both"
                )
            trash = self.store.path / TRASH_DIR / f"{self.name}.{uuid.uuid4().hex}"
            trash.parent.mkdir(exist_ok=True)
            self.final_path.rename(trash)
        try:
            self.path.rename(self.final_path)
        except OSError:  # another process published the same name in between
            raise RunExistsError(
                f"run {self.name!r} appeared in {self.store.path} while recording; this recording is kept "
                f"under {self.path}"
            ) from None
        _fsync_dir(self.store.path)
        (self.final_path / OWNER_FILE).unlink(missing_ok=True)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return self.final_path

    def abandon(self) -> None:
        """Close open files and leave the run under `.incomplete/` (status stays "incomplete")."""
        for writer in self._writers.values():
            with contextlib.suppress(OSError, pa.ArrowException):
                writer.close()
        self._writers.clear()
        (self.path / OWNER_FILE).unlink(missing_ok=True)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abandon()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
