"""Fuzzing the run reader: whatever is wrong with a store's files, reading it either gives back exactly what
was written or raises a one-line `RouteScopeError` that names the damaged file — never another exception,
never silently different numbers — and `routescope runs` still lists the store.

Hypothesis draws the damage: bit flips and truncations anywhere in any table file, manifests with fields
missing, of the wrong type, from a future schema version, not JSON or not UTF-8, foreign Parquet files in
place of a table, and junk folders and files in the store. Each example works on a fresh copy of a small
run written by the real writer (`tests/planted.py`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from routescope.cli import main
from routescope.store import RouteScopeError, Store
from routescope.store.schema import CORE_TABLES, MANIFEST_REQUIRED, SCHEMA_VERSION
from tests.planted import planted_run

TABLES = ("samples", "tokens", "assignments", "decisions", "steps")
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COUNTS: dict[str, int] = {}
"""Examples tried per fuzz test (reported in docs/reliability.md)."""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with run `r` (3 layers, 8 experts, probabilities, a label column) and an untouched `ok`."""
    store = Store(tmp_path_factory.mktemp("pristine") / "store")
    rng = np.random.default_rng(0)
    experts = {layer: [list(rng.choice(8, 2, replace=False)) for _ in range(200)] for layer in range(3)}
    probs = {layer: rng.dirichlet(np.ones(8), 200) for layer in range(3)}
    labels = {"domain": [("code", "prose", "math")[i % 3] for i in range(200)]}
    for name in ("r", "ok"):
        planted_run(store, name, experts=experts, n_experts=8, probs=probs, labels=labels)
    return store.path


@contextlib.contextmanager
def damaged_copy(pristine: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "store"
        shutil.copytree(pristine, target)
        yield target


def original(pristine: Path) -> dict[str, pa.Table]:
    run = Store(pristine).open("r")
    return {table: run.read_table(table) for table in TABLES}


def read_everything(store_path: Path) -> dict[str, pa.Table]:
    """Everything a user can read of run `r`: the listing, the run, each table as Arrow and pandas."""
    store = Store(store_path)
    store.runs(), store.incomplete(), store.damaged(), store.unpublished()
    run = store.open("r")
    tables = {table: run.read_table(table) for table in TABLES}
    run.samples(), run.tokens(), run.assignments(), run.decisions(), run.steps()
    run.verify()
    return tables


def check_reader(store_path: Path, pristine: Path, damaged: str) -> str:
    """Read run `r`: same data as written, or a one-line RouteScopeError naming `damaged`. The other
    run is unaffected and `routescope runs` lists the store (exit 0). Returns "same" or "refused"."""
    try:
        tables = read_everything(store_path)
    except RouteScopeError as exc:
        message = str(exc)
        assert "\n" not in message
        assert damaged in message, message
        outcome = "refused"
    else:
        for table, expected in original(pristine).items():
            assert tables[table].equals(expected), f"{table} read back different data without an error"
        outcome = "same"
    ok = Store(store_path).open("ok")
    ok.verify()
    assert ok.assignments().equals(Store(pristine).open("ok").assignments())
    lines = runs_listing(store_path)
    assert "ok\tcomplete\tplanted\t200 tokens\t1200 assignments" in lines
    problem = open_error(store_path)
    if problem:  # found on opening (manifest, footers): the listing says why
        assert any(line.startswith(f"r\tdamaged\t({problem}") for line in lines), (problem, lines)
    else:  # found only by reading the pages (or nothing wrong): listed complete, `verify` tells
        assert any(line.startswith("r\tcomplete\t") for line in lines), lines
    return outcome


def open_error(store_path: Path) -> str | None:
    """The message of opening run `r`, or None if it opens."""
    try:
        Store(store_path).open("r")
    except RouteScopeError as exc:
        return str(exc)
    return None


def runs_listing(store_path: Path, *extra: str) -> list[str]:
    """`routescope runs` in-process: exit 0, printable lines."""
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing), contextlib.redirect_stderr(io.StringIO()):
        assert main(["runs", "--store", str(store_path), *extra]) == 0
    lines = listing.getvalue().splitlines()
    assert all(line.replace("\t", " ").isprintable() for line in lines)
    return lines


def count(test: str) -> None:
    COUNTS[test] = COUNTS.get(test, 0) + 1


@FUZZ
@given(table=st.sampled_from(TABLES), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_bit_flip_anywhere_in_a_table(pristine: Path, table: str, where: float, bit: int) -> None:
    count("bit flips")
    with damaged_copy(pristine) as store:
        path = store / "r" / f"{table}.parquet"
        data = bytearray(path.read_bytes())
        data[int(where * len(data))] ^= 1 << bit
        path.write_bytes(bytes(data))
        check_reader(store, pristine, f"{table}.parquet")


@FUZZ
@given(table=st.sampled_from(TABLES), keep=st.floats(0, 1, exclude_max=True))
def test_truncated_table(pristine: Path, table: str, keep: float) -> None:
    count("truncations")
    with damaged_copy(pristine) as store:
        path = store / "r" / f"{table}.parquet"
        data = path.read_bytes()
        path.write_bytes(data[: int(keep * len(data))])
        assert check_reader(store, pristine, f"{table}.parquet") == "refused"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def edit_manifest(edit: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        manifest = json.loads(path.read_text())
        result = edit(manifest)
        path.write_text(json.dumps(manifest if result is None else result))

    return apply


MANIFEST_DAMAGE = st.one_of(
    st.sampled_from(MANIFEST_REQUIRED).map(lambda key: edit_manifest(lambda m: m.pop(key))),
    st.tuples(st.sampled_from([*MANIFEST_REQUIRED, "labels", "rows"]), JSON).map(
        lambda kv: edit_manifest(lambda m: m.__setitem__(kv[0], kv[1]))
    ),
    st.sampled_from([SCHEMA_VERSION + 1, 99, 0, -1, "1", 1.5, True, None]).map(
        lambda v: edit_manifest(lambda m: m.__setitem__("schema_version", v))
    ),
    st.tuples(st.sampled_from(["id", "layer", "n_experts", "top_k"]), JSON).map(
        lambda kv: edit_manifest(lambda m: m["routers"][0].__setitem__(kv[0], kv[1]))
    ),
    st.sampled_from(['x"; DROP TABLE', "../../etc/passwd", "Assignments", "a b"]).map(
        lambda t: edit_manifest(lambda m: m["tables"].append(t))
    ),
    JSON.map(lambda value: edit_manifest(lambda m: value)),
    st.binary(max_size=64).map(lambda raw: lambda path: path.write_bytes(raw)),
    st.floats(0, 1, exclude_max=True).map(
        lambda keep: lambda path: path.write_bytes(path.read_bytes()[: int(keep * path.stat().st_size)])
    ),
)


@FUZZ
@given(damage=MANIFEST_DAMAGE)
@example(
    damage=edit_manifest(lambda m: m.__setitem__("status", ""))
)  # once found: named the run, not the file
def test_damaged_manifest(pristine: Path, damage: Callable[[Path], None]) -> None:
    count("manifests")
    with damaged_copy(pristine) as store:
        damage(store / "r" / "manifest.json")
        outcome = check_reader(store, pristine, "manifest.json")
        if outcome == "same":  # a damage that left every field the reader needs in order
            Store(store).open("r").verify()


FOREIGN_TYPES = st.sampled_from([pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.float32(), pa.string()])


@FUZZ
@given(
    table=st.sampled_from(TABLES),
    columns=st.lists(
        st.tuples(
            st.sampled_from([*sorted({n for s in CORE_TABLES.values() for n in s.names}), "zz"]),
            FOREIGN_TYPES,
        ),
        max_size=8,
        unique_by=lambda c: c[0],
    ),
    rows=st.integers(0, 300),
)
def test_foreign_parquet_in_place_of_a_table(
    pristine: Path, table: str, columns: list[tuple[str, pa.DataType]], rows: int
) -> None:
    count("foreign files")
    with damaged_copy(pristine) as store:
        data = pa.table(
            {name: pa.array(np.arange(rows) % 7, pa.int64()).cast(kind) for name, kind in columns}
            or {"zz": pa.array(np.arange(rows))}
        )
        pq.write_table(data, store / "r" / f"{table}.parquet")
        assert check_reader(store, pristine, f"{table}.parquet") == "refused"


JUNK_NAMES = st.one_of(
    st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"), min_size=1, max_size=12
    ),
    st.binary(min_size=1, max_size=8).filter(
        lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")
    ),
)
JUNK_KINDS = st.sampled_from(
    ["empty dir", "file", "dir with junk manifest", "dir with a table as folder", "link loop"]
)


def make_junk(store: Path, name: str | bytes, kind: str, under_incomplete: bool) -> None:
    parent = store / ".incomplete" if under_incomplete else store
    parent.mkdir(exist_ok=True)
    raw = os.fsencode(parent) + b"/" + (name if isinstance(name, bytes) else os.fsencode(name))
    path = Path(os.fsdecode(raw))
    if path.name in ("r", "ok", ".incomplete", ".", "..") or path.exists() or path.is_symlink():
        return
    if kind == "file":
        path.write_bytes(b"\xff\xfejunk")
    elif kind == "link loop":
        path.symlink_to(path)
    else:
        path.mkdir()
        if kind == "dir with junk manifest":
            (path / "manifest.json").write_bytes(b'{"schema_version": 1, "status": "complete"')
        elif kind == "dir with a table as folder":
            manifest = json.loads((store / "ok" / "manifest.json").read_text())
            (path / "manifest.json").write_text(json.dumps(manifest))
            (path / "samples.parquet").mkdir()


@FUZZ
@given(junk=st.lists(st.tuples(JUNK_NAMES, JUNK_KINDS, st.booleans()), min_size=1, max_size=5))
def test_junk_in_the_store_folder(pristine: Path, junk: list[tuple[str | bytes, str, bool]]) -> None:
    count("junk stores")
    with damaged_copy(pristine) as store:
        for name, kind, under_incomplete in junk:
            make_junk(store, name, kind, under_incomplete)
        assert check_reader(store, pristine, "r") == "same"
        runs_listing(store, "--clean")
        assert {"ok", "r"} <= set(Store(store).runs())  # a junk folder with a good manifest is listed
        assert check_reader(store, pristine, "r") == "same"


def test_fuzz_counts_are_reported() -> None:
    """Runs last in this file: the number of examples each fuzz test tried (for docs/reliability.md)."""
    assert all(n >= 100 for n in COUNTS.values())
    print(f"fuzz examples tried: {COUNTS} (total {sum(COUNTS.values())})")
