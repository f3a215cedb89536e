"""Reading large JSON-lines traces fast and in bounded memory, and naming the line when one is bad.

vLLM and OLMoE traces are JSONL with nested integer lists (`[tokens][layers][k]`), often gigabytes.
pyarrow's streaming JSON reader parses them in blocks with a fixed schema (so memory stays one block and
an empty list in the first block cannot fix a column's type); nested lists become flat numpy arrays via
their offsets (`nested_ids`). pyarrow's errors name no line, so on failure `locate_problem` re-reads the
file line by line — only then — to say which line is broken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from .common import Requests
from .errors import TraceError, bad, json_objects

BLOCK_BYTES = 16 << 20
"""Bytes parsed per batch (at least 4 first lines: one JSON line must fit in a block)."""


def read_blocks(
    path: Path, schema: pa.Schema, check: Callable[[dict], str | None]
) -> Iterator[pa.RecordBatch]:
    """Record batches of a JSONL file with `schema` (other keys ignored). A file pyarrow cannot parse is a
    `TraceError` naming its first bad line (`check(record)` says what is wrong with a parsed one)."""
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        with path.open("rb") as handle:
            first = len(handle.readline())
        read = pj.ReadOptions(block_size=max(BLOCK_BYTES, 4 * first))
        reader = pj.open_json(path, read_options=read, parse_options=options)
        yield from reader
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise locate_problem(path, check, str(exc).splitlines()[0]) from None


def locate_problem(path: Path, check: Callable[[dict], str | None], fallback: str) -> TraceError:
    """The error for the first line of `path` that is not a JSON object or fails `check`."""
    try:
        for number, record in json_objects(path):
            problem = check(record)
            if problem:
                return bad(path, f"line {number}", problem)
    except TraceError as exc:
        return exc
    return bad(path, None, f"cannot be read as JSON lines ({fallback})")


def request_blocks(
    path: Path, schema: pa.Schema, required: Sequence[str], nesting: dict[str, int]
) -> Iterator[tuple[pa.RecordBatch, Requests]]:
    """Blocks of a JSONL trace with an empty `Requests` that places their records (`line N`); every record
    has the `required` keys, else a `TraceError` names the first line without one."""
    first = 0
    for batch in read_blocks(path, schema, lambda record: json_problem(record, tuple(required), nesting)):
        requests = Requests(np.zeros((0, 0, 0), np.int32), np.zeros(0, np.int64), path, first, jsonl=True)
        require(batch, required, requests.place, path)
        yield batch, requests
        first += batch.num_rows


def require(batch: pa.RecordBatch, columns: Sequence[str], place: Callable[[int], str], path: Path) -> None:
    """Every record of `batch` has `columns` (not null), else a `TraceError` naming the first that lacks
    one."""
    for column in columns:
        nulls = np.asarray(batch.column(column).is_null())
        if nulls.any():
            raise bad(path, place(int(np.argmax(nulls))), f"has no {column!r}")


def nested_ids(column: pa.Array, depth: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A list column nested `depth` times → (flat int values, lengths at each level, outermost first);
    a null list counts as empty."""
    lengths: list[np.ndarray] = []
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    for _ in range(depth):
        lengths.append(np.asarray(array.value_lengths().fill_null(0)))
        array = array.flatten()
    values = array if array.null_count == 0 else array.fill_null(-1)
    return values.to_numpy(zero_copy_only=False), lengths


def uniform(lengths: np.ndarray) -> int | None:
    """The one length every entry has, or None if they differ (an empty level has length 0)."""
    if len(lengths) == 0:
        return 0
    first = int(lengths[0])
    return first if (lengths == first).all() else None


def json_problem(record: dict, required: tuple[str, ...], nested: dict[str, int]) -> str | None:
    """What is wrong with one parsed JSON record: a missing key, or a value not nested as deep as needed."""
    for key in required:
        if record.get(key) is None:
            return f"has no {key!r}"
    for key, depth in nested.items():
        value = record.get(key)
        if value is None:
            continue
        for _ in range(depth):
            if not isinstance(value, list):
                return f"{key!r} is not a list nested {depth} deep"
            if not value:
                break
            value = value[0]
        else:
            if not isinstance(value, int) or isinstance(value, bool):
                return f"{key!r} holds {type(value).__name__} values, not integers"
    return None


def routing_block(
    column: pa.Array, requests: Requests, shape: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """A `[requests][tokens][a][b]` column → (ids [tokens, a, b], tokens per request); every token must
    have the same (a, b) as `shape` (or as the first token), else a `TraceError` naming the request."""
    values, (rows, outer, inner) = nested_ids(column, 3)
    first = (int(outer[0]) if len(outer) else 0, int(inner[0]) if len(inner) else 0)
    a, b = shape if shape and all(shape) else first
    odd = np.flatnonzero(outer != a)
    odd_b = np.repeat(np.arange(len(outer)), outer)[inner != b]
    tokens = [int(t[0]) for t in (odd, odd_b) if len(t)]
    if tokens:
        request = int(np.searchsorted(np.cumsum(rows), min(tokens), side="right"))
        raise bad(
            requests.path,
            requests.place(request),
            f"routing rows of differing shape; expected {a} × {b} per token as in the first record",
        )
    return values.reshape(-1, a, b) if a and b else values.reshape(0, a, b), rows
