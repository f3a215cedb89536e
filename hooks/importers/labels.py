"""Labels for imported requests: a JSONL file beside the trace, one object per request, in order.

Engine traces carry no labels; `routescope import --labels FILE.jsonl [--label-column COL]` gives them
the way `routescope record` takes labels from a JSONL file, so specialization by label works on imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from routescope.store.errors import InputError

from .errors import bad, json_objects


def read_labels(path: Path | str | None, columns: Sequence[str] | None) -> dict[str, list[str | None]]:
    """Label columns from a JSONL file, one object per request in order; all keys unless `columns`."""
    if path is None:
        if columns:
            raise InputError("a label column needs a labels file (.jsonl)", field="labels")
        return {}
    rows = [row for _, row in json_objects(Path(path))]
    names = list(columns or (rows[0].keys() if rows else []))
    for number, row in enumerate(rows, 1):
        missing = [n for n in names if n not in row]
        if missing:
            raise bad(path, f"record {number}", f"has no label {', '.join(missing)}")
    return {n: [None if r[n] is None else str(r[n]) for r in rows] for n in names}
