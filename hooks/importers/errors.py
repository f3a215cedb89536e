"""The one-line error of a bad trace file: the file, the record (line N / record N) and the problem.

Every importer raises `TraceError` through `bad(...)`, so messages share one shape —
`FILE, line 3: negative expert id` — and `import_source` can tell a bad trace (remove the partial run)
from other failures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from routescope.store.errors import InputError


class TraceError(InputError):
    """A trace file that cannot be imported as asked; the message names the file and the record."""


def bad(path: Path | str, where: str | None, problem: str) -> TraceError:
    """The one-line error: `FILE, line 3: problem`."""
    return TraceError(f"{path}{', ' + where if where else ''}: {problem}")


def line_number(path: Path, record: int) -> int | None:
    """The line number of the 0-based `record` (non-blank lines) of a text file; for error messages."""
    index = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                if index == record:
                    return number
                index += 1
    return None


def json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is a `TraceError`."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise bad(
                        path, f"line {number}", "not valid JSON (a truncated or foreign file?)"
                    ) from None
                if not isinstance(record, dict):
                    raise bad(path, f"line {number}", "not a JSON object")
                yield number, record
    except UnicodeDecodeError:
        raise bad(path, None, "not a text file (a binary or foreign file?)") from None
