"""The run store: a folder of runs, one sub-folder per run, each published atomically.

Layout of a store folder::

    STORE/
      NAME/                 a complete run: manifest.json (status "complete") + one Parquet file per table
      .incomplete/NAME/     a recording in progress, or one that was interrupted (never listed as complete)

A run becomes visible under `STORE/NAME` only by one `rename` after its manifest says "complete", so a
reader never sees half a run, and a crash at any point leaves every earlier run untouched. `Store` and
`Run` only read; `RunWriter` (writer.py) is the only code that writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import (
    CorruptRunError,
    InvalidNameError,
    RouteScopeError,
    RunNotFoundError,
    StoreError,
    first_damage,
)
from .manifest import RunManifest, read_manifest
from .schema import CORE_TABLES, MANIFEST_FILE, table_file

INCOMPLETE_DIR = ".incomplete"
TRASH_DIR = ".trash"
OWNER_FILE = "owner.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_name(name: str) -> str:
    """Return `name` if it is a safe run name (letters, digits, `.`, `_`, `-`; no `/`, `\\` or `..`)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid run name {name!r}: use letters, digits, '.', '_' and '-' only "
            "(no '/', '\\' or '..', at most 128 characters, starting with a letter or digit)"
        )
    return name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(folder: Path) -> bool:
    """Whether the process that writes an incomplete run folder is still running on this host."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return owner.get("host") == socket.gethostname() and _pid_alive(int(owner.get("pid", -1)))


class Run:
    """A complete, published run: its manifest and lazy access to its tables as pandas DataFrames.

    The tables are plain Parquet files (`run.table_path("assignments")`), so DuckDB, Polars or Spark can
    read them directly; the methods here are the convenient pandas route for small and medium runs.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = read_manifest(self.path)
        """The manifest as read (a dict, kept for compatibility): new code reads `info`."""
        self.info = RunManifest.from_dict(self.manifest)
        """The typed manifest (`RunManifest`): `run.info.is_diffusion`, `run.info.routers`, ..."""
        status = self.manifest.get("status")
        if status == "incomplete":
            raise CorruptRunError(f"{self.path}: run is not complete; re-record it")
        if status != "complete":
            raise CorruptRunError(
                f"{self.path / MANIFEST_FILE}: status {status!r} is not one RouteScope writes "
                "(complete, incomplete); re-record the run"
            )
        for table in self.manifest["tables"]:
            self._check_file(table)

    def _check_file(self, table: str) -> None:
        """Check a table's Parquet footer against the manifest (columns, row count): a truncated, foreign
        or swapped file fails here, naming the file, before DuckDB or pandas reads a byte of data. Reads
        only the footer, so opening a run stays cheap however large it is."""
        path = self.path / table_file(table)
        with damaged_file(path, "not a readable RouteScope table"):
            meta = pq.read_metadata(path)
            meta.schema.to_arrow_schema()
        self._check_columns(path, table, meta.schema.to_arrow_schema(), None)
        expected_rows = self.manifest.get("rows", {}).get(table)
        if expected_rows is not None and meta.num_rows != expected_rows:
            raise CorruptRunError(
                f"{path}: {meta.num_rows} rows but the manifest says {expected_rows}; re-record the run"
            )

    def _check_columns(self, path: Path, table: str, schema: pa.Schema, columns: list[str] | None) -> None:
        """The file has the table's core columns (and a samples file the run's label columns), with the
        schema's types: anything else is a foreign or damaged file."""
        expected = list(CORE_TABLES[table]) if table in CORE_TABLES else []
        if table == "samples":
            expected += [pa.field(label, pa.string()) for label in self.label_columns]
        wanted = [f for f in expected if columns is None or f.name in columns]
        types = {field.name: field.type for field in schema}
        absent = [f.name for f in wanted if f.name not in types]
        if absent:
            raise CorruptRunError(
                f"{path}: foreign table, columns {', '.join(absent)} missing; re-record the run"
            )
        wrong = [f.name for f in wanted if types[f.name] != f.type]
        if wrong:
            raise CorruptRunError(
                f"{path}: foreign table, columns {', '.join(wrong)} have the wrong type; re-record the run"
            )

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def routers(self) -> list[dict[str, Any]]:
        """The manifest's router list as dicts (compatibility; new code reads `info.routers`)."""
        return list(self.manifest["routers"])

    @property
    def probe(self) -> dict[str, Any] | None:
        """The probe entry of the manifest (`model.probe`): which intervention made this run, or None."""
        return self.info.probe

    @property
    def label_columns(self) -> list[str]:
        return self.info.label_columns

    def table_path(self, table: str) -> Path:
        """Path of a table's Parquet file (raises if the run has no such table)."""
        if table not in self.manifest["tables"]:
            raise StoreError(
                f"run {self.name!r} has no {table!r} table (it has: {', '.join(self.manifest['tables'])})"
            )
        return self.path / table_file(table)

    def read_table(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """Read one table as Arrow, checking that it is the file this run wrote."""
        path = self.table_path(table)
        with damaged_file(path, "not a readable RouteScope table"):
            # page checksums (written by RunWriter) catch flipped bits in the data, not only the footer
            data = pq.read_table(path, columns=columns, page_checksum_verification=True)
        self._check_columns(path, table, data.schema, columns)
        expected_rows = self.manifest.get("rows", {}).get(table)
        if columns is None and expected_rows is not None and data.num_rows != expected_rows:
            raise CorruptRunError(
                f"{path}: {data.num_rows} rows but the manifest says {expected_rows}; re-record the run"
            )
        return data

    def verify(self) -> None:
        """Read every table in full, checking each page's checksum and each value (UTF-8 text, dictionary
        indices, list offsets); raise `CorruptRunError` naming the first damaged file.

        Opening a run reads only the footers, and DuckDB (which the analyses use) does not check page
        checksums, so a flipped bit inside a data page is caught here, or by `read_table`, but not by an
        analysis: verify a run before analyses whose numbers go into a paper (`routescope runs --verify`).
        Streams one batch at a time, so memory stays small however large the run is.
        """
        for table in self.manifest["tables"]:
            path = self.table_path(table)
            rows = 0
            with damaged_file(path, "damaged data"):
                parquet = pq.ParquetFile(path, page_checksum_verification=True)
                for batch in parquet.iter_batches(batch_size=1 << 16):
                    batch.validate(full=True)
                    rows += batch.num_rows
            expected_rows = self.manifest.get("rows", {}).get(table)
            if expected_rows is not None and rows != expected_rows:
                raise CorruptRunError(
                    f"{path}: {rows} rows but the manifest says {expected_rows}; re-record the run"
                )

    def _frame(self, table: str, columns: list[str] | None) -> pd.DataFrame:
        data = self.read_table(table, columns)
        try:
            return data.to_pandas()
        except (pa.ArrowException, ValueError) as exc:  # e.g. bytes that are not UTF-8 in a text column
            raise CorruptRunError(
                f"{self.table_path(table)}: damaged values ({_first_line(exc)}); re-record the run"
            ) from None

    def samples(self, columns: list[str] | None = None) -> pd.DataFrame:
        """One row per input sequence: sample, text, n_tokens, n_generated, generated, label columns."""
        return self._frame("samples", columns)

    def tokens(self, columns: list[str] | None = None) -> pd.DataFrame:
        """One row per (sample, position): token_id, token text, generated flag."""
        return self._frame("tokens", columns)

    def assignments(self, columns: list[str] | None = None) -> pd.DataFrame:
        """One row per chosen expert: sample, position, step, router, layer, call, rank, expert, weight,
        dropped."""
        return self._frame("assignments", columns)

    def decisions(self, columns: list[str] | None = None) -> pd.DataFrame:
        """One row per decision: sample, position, step, router, layer, call, entropy, margin, max_prob
        (and probs when recorded)."""
        return self._frame("decisions", columns)

    def shared_experts(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Runs recorded with `expert_stats=True` and shared experts: one row per decision and shared
        module: the keys, module, output_norm, gate (docs/format.md)."""
        return self._frame("shared_experts", columns)

    def output_logprobs(self) -> tuple[pd.DataFrame, np.ndarray]:
        """Runs recorded with `output_logprobs=True`: (`sample, position` per input token, `[N, V]` float32
        next-token log-probabilities in the same row order), read from the float16 `outputs` table."""
        table = self.read_table("outputs")
        keys = table.select(["sample", "position"]).to_pandas()
        column = table.column("logprobs").combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        width = len(values) // max(len(keys), 1)
        return keys, values.reshape(len(keys), width)

    def expert_means(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Runs recorded with `expert_means=True`: per batch, router call and expert, the sum of the expert's
        outputs over the batch's tokens (`output_sum`) and their count (`tokens`)."""
        return self._frame("expert_means", columns)

    def steps(self) -> pd.DataFrame:
        """One row per step: step, timestep, sigma (generation steps have no timestep)."""
        return self._frame("steps", None)

    def images(self) -> np.ndarray:
        """Diffusion runs: the final generated images, `[n, H, W]` in [0, 1], one per conditional sample,
        in sample order (aligned with the `cond` rows of `samples()`)."""
        return _stack_images(self.read_table("images"))

    def x0(self) -> tuple[np.ndarray, np.ndarray]:
        """Diffusion runs recorded with `save_x0`: `(steps [S], images [S, n, H, W])`, the predicted clean
        image of every conditional sample at every step."""
        table = self.read_table("x0").to_pandas().sort_values(["step", "sample"])
        steps = np.sort(table["step"].unique())
        per_step = [
            _stack_images(pa.Table.from_pandas(table[table["step"] == s], preserve_index=False))
            for s in steps
        ]
        return steps, np.stack(per_step) if per_step else np.zeros((0, 0, 0, 0), np.float32)

    def __repr__(self) -> str:
        return f"Run({self.name!r}, path={str(self.path)!r})"


@contextmanager
def damaged_file(path: Path, what: str) -> Iterator[None]:
    """Turn a missing file or Arrow's error while reading `path` into one `CorruptRunError` line:
    "PATH: WHAT (the library's first line); re-record the run"."""
    try:
        yield
    except FileNotFoundError:
        raise CorruptRunError(f"{path}: file missing; the run is damaged, re-record it") from None
    except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
        raise CorruptRunError(f"{path}: {what} ({_first_line(exc)}); re-record the run") from None


def _first_line(exc: BaseException) -> str:
    """The first line of a library's error, printable (a damaged file can put any bytes in it), at most
    200 characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else exc.__class__.__name__
    line = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in line)
    return line if len(line) <= 200 else line[:197] + "..."


def _stack_images(table: pa.Table) -> np.ndarray:
    frame = table.to_pandas().sort_values("sample")
    if frame.empty:
        return np.zeros((0, 0, 0), dtype=np.float32)
    height, width = int(frame["height"].iloc[0]), int(frame["width"].iloc[0])
    return np.stack([np.asarray(p, dtype=np.float32).reshape(height, width) for p in frame["pixels"]])


class Store:
    """A folder of runs. `Store(path)` never writes; recording creates the folder when needed."""

    def __init__(self, path: str | Path) -> None:
        if not str(path).strip():  # Path("") is the current folder: never what an empty --store meant
            raise StoreError("empty store path; pass a folder (it is created if absent)")
        self.path = Path(path)
        try:  # Arrow and DuckDB take paths as UTF-8 text: a folder named with other bytes cannot hold runs
            str(self.path).encode("utf-8")
        except UnicodeEncodeError:
            raise StoreError(
                f"store path {str(self.path)!a} is not UTF-8; give a folder whose name is UTF-8 text"
            ) from None
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(
                f"store path {self.path} is a file, not a folder; pass a folder (it is created if absent)"
            )

    def _folders(self) -> list[Path]:
        """The store's visible sub-folders (hidden ones hold incomplete runs and trash)."""
        if not self.path.is_dir():
            return []
        return sorted(c for c in self.path.iterdir() if not c.name.startswith(".") and c.is_dir())

    def runs(self) -> list[str]:
        """Names of the complete runs, sorted (by their manifests; `open` checks their files)."""
        names = []
        for child in self._folders():
            try:
                manifest = read_manifest(child)
            except CorruptRunError:
                continue
            if manifest["status"] == "complete" and _NAME.fullmatch(child.name) and ".." not in child.name:
                names.append(child.name)
        return names

    def incomplete(self) -> list[str]:
        """Names of recordings in progress or interrupted (kept under `.incomplete/`)."""
        folder = self.path / INCOMPLETE_DIR
        if not folder.is_dir():
            return []
        return sorted(c.name for c in folder.iterdir() if c.is_dir() and _NAME.fullmatch(c.name))

    def damaged(self) -> list[str]:
        """Folders in the store that are not complete runs: no readable manifest, a manifest that does not
        say complete, or a name that is not a run name (named, so a user can delete them)."""
        complete = set(self.runs())
        return [child.name for child in self._folders() if child.name not in complete]

    def first_damage(self, names: Iterable[str]) -> CorruptRunError | None:
        """After DuckDB failed reading runs `names`: the error naming the first damaged file among them
        (opening checks footers, `Run.verify` every page), or None when they all read cleanly (a name
        that does not open for another reason is skipped: it cannot be what DuckDB failed on)."""
        runs = []
        for name in names:
            try:
                runs.append(self.open(name))
            except CorruptRunError as exc:
                return exc
            except RouteScopeError:
                continue
        return first_damage(runs)

    def unpublished(self) -> list[str]:
        """Interrupted recordings that had finished (manifest "complete", every file checked) but were not
        moved into place: the process died during the last step of publishing. `recover` moves them."""
        names = []
        for name in self.incomplete():
            path = self.incomplete_path(name)
            if owner_alive(path) or self.run_path(name).exists():
                continue
            try:
                Run(path)
            except CorruptRunError:
                continue
            names.append(name)
        return names

    def recover(self) -> list[str]:
        """Finish publishing the runs `unpublished` lists (one rename each); return their names."""
        names = self.unpublished()
        for name in names:
            self.incomplete_path(name).rename(self.run_path(name))
        return names

    def run_path(self, name: str) -> Path:
        return self.path / check_run_name(name)

    def incomplete_path(self, name: str) -> Path:
        return self.path / INCOMPLETE_DIR / check_run_name(name)

    def exists(self, name: str) -> bool:
        """Whether a complete run (or any folder) of that name is in the store."""
        return self.run_path(name).exists()

    def open(self, name: str) -> Run:
        """Open a complete run by name."""
        path = self.run_path(name)
        if not path.is_dir():
            hint = (
                f" (an interrupted recording of it exists; see `routescope runs --store {self.path}`)"
                if self.incomplete_path(name).exists()
                else ""
            )
            available = ", ".join(self.runs()) or "none"
            raise RunNotFoundError(f"no run {name!r} in {self.path}{hint}; runs: {available}")
        return Run(path)

    def clean(self) -> list[str]:
        """Finish publishing what `recover` can, then delete interrupted recordings (not ones still being
        written) and trash; return the names deleted."""
        self.recover()
        removed = [name for name in self.incomplete() if not owner_alive(self.incomplete_path(name))]
        for name in removed:
            shutil.rmtree(self.incomplete_path(name))
        if (self.path / TRASH_DIR).is_dir():
            shutil.rmtree(self.path / TRASH_DIR)
        return removed

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"
