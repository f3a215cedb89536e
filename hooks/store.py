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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CorruptRunError, InvalidNameError, RunNotFoundError, StoreError
from .schema import CORE_TABLES, MANIFEST_FILE, MANIFEST_REQUIRED, SCHEMA_VERSION, table_file

INCOMPLETE_DIR = ".incomplete"
TRASH_DIR = ".trash"
OWNER_FILE = "owner.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_name(name: str) -> str:
    """Return `name` if it is a safe run name (letters, digits, `.`, `_`, `-`; no `/`, `\\` or `..`)."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidNameError(
            f"invalid run name {name!r}: use letters, digits, '.', '_' and '-' only "
            "(no '/', '\\' or '..', at most 128 characters, starting with a letter or digit)"
        )
    return name


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
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CorruptRunError(
            f"{path}: schema version {version!r} is newer than this RouteScope reads ({SCHEMA_VERSION}); "
            "upgrade routescope"
        )
    return manifest


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
        if self.manifest.get("status") != "complete":
            raise CorruptRunError(f"{self.path}: run is not complete; re-record it")

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def routers(self) -> list[dict[str, Any]]:
        """The manifest's router list: id, module path, layer, kind, stack, n_experts, top_k, ..."""
        return list(self.manifest["routers"])

    @property
    def label_columns(self) -> list[str]:
        return list(self.manifest.get("labels", []))

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
        try:
            data = pq.read_table(path, columns=columns)
        except FileNotFoundError:
            raise CorruptRunError(f"{path}: file missing; the run is damaged, re-record it") from None
        except (pa.ArrowException, OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise CorruptRunError(
                f"{path}: not a readable RouteScope table ({reason}); re-record the run"
            ) from None
        expected = CORE_TABLES[table].names
        absent = [c for c in expected if c not in data.column_names and (columns is None or c in columns)]
        if absent:
            raise CorruptRunError(
                f"{path}: foreign table, columns {', '.join(absent)} missing; re-record the run"
            )
        expected_rows = self.manifest.get("rows", {}).get(table)
        if columns is None and expected_rows is not None and data.num_rows != expected_rows:
            raise CorruptRunError(
                f"{path}: {data.num_rows} rows but the manifest says {expected_rows}; re-record the run"
            )
        return data

    def _frame(self, table: str, columns: list[str] | None) -> pd.DataFrame:
        return self.read_table(table, columns).to_pandas()

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


def _stack_images(table: pa.Table) -> np.ndarray:
    frame = table.to_pandas().sort_values("sample")
    if frame.empty:
        return np.zeros((0, 0, 0), dtype=np.float32)
    height, width = int(frame["height"].iloc[0]), int(frame["width"].iloc[0])
    return np.stack([np.asarray(p, dtype=np.float32).reshape(height, width) for p in frame["pixels"]])


class Store:
    """A folder of runs. `Store(path)` never writes; recording creates the folder when needed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(
                f"store path {self.path} is a file, not a folder; pass a folder (it is created if absent)"
            )

    def runs(self) -> list[str]:
        """Names of the complete runs, sorted."""
        if not self.path.is_dir():
            return []
        names = []
        for child in self.path.iterdir():
            if child.name.startswith(".") or not child.is_dir():
                continue
            try:
                manifest = read_manifest(child)
            except CorruptRunError:
                continue
            if manifest.get("status") == "complete":
                names.append(child.name)
        return sorted(names)

    def incomplete(self) -> list[str]:
        """Names of recordings in progress or interrupted (kept under `.incomplete/`)."""
        folder = self.path / INCOMPLETE_DIR
        return sorted(child.name for child in folder.iterdir() if child.is_dir()) if folder.is_dir() else []

    def damaged(self) -> list[str]:
        """Folders in the store that look like runs but cannot be read (named, so a user can delete them)."""
        if not self.path.is_dir():
            return []
        bad = []
        for child in sorted(self.path.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            try:
                read_manifest(child)
            except CorruptRunError:
                bad.append(child.name)
        return bad

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
                " (an interrupted recording of it exists; re-record it)"
                if self.incomplete_path(name).exists()
                else ""
            )
            available = ", ".join(self.runs()) or "none"
            raise RunNotFoundError(f"no run {name!r} in {self.path}{hint}; runs: {available}")
        return Run(path)

    def clean(self) -> list[str]:
        """Delete interrupted recordings (not ones still being written) and trash; return names removed."""
        removed = [name for name in self.incomplete() if not owner_alive(self.incomplete_path(name))]
        for name in removed:
            shutil.rmtree(self.incomplete_path(name))
        if (self.path / TRASH_DIR).is_dir():
            shutil.rmtree(self.path / TRASH_DIR)
        return removed

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"
