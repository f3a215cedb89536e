"""Read recording inputs from the command line: repeated `--text`, a `.txt` file or a `.jsonl` file.

`.txt`: one sample per non-empty line. `.jsonl`: one JSON object per line; the text comes from
`--text-column` (default `text`) and each `--label-column` becomes a label of the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from routescope.store import InputError


@dataclass
class Inputs:
    texts: list[str]
    labels: dict[str, list[str | None]] = field(default_factory=dict)
    targets: list[str] | None = None
    """Decoder targets of encoder–decoder models (`--target-column` of a .jsonl file)."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"input file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"input file {path} is a folder; pass a .txt or .jsonl file") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"input file {path} is not UTF-8 text (byte {exc.start}); convert it to UTF-8"
        ) from None


def read_inputs(
    texts: list[str] | None,
    file: str | None,
    label_columns: list[str],
    text_column: str = "text",
    target_column: str | None = None,
) -> Inputs:
    """Collect texts and labels from the CLI options (exactly one of `texts` and `file`)."""
    if bool(texts) == bool(file):
        raise InputError("give either --text (repeatable) or --file, not both and not neither")
    if target_column and not (file and file.lower().endswith(".jsonl")):
        raise InputError("--target-column needs a .jsonl --file that holds the targets")
    if texts:
        if label_columns:
            raise InputError("--label-column needs a .jsonl --file that holds the labels")
        return Inputs(texts=list(texts))
    path = Path(str(file))
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if label_columns:
            raise InputError("--label-column needs a .jsonl file; a .txt file has no columns")
        lines = [line for line in _read_text(path).splitlines() if line.strip()]
        if not lines:
            raise InputError(f"input file {path} has no non-empty lines")
        return Inputs(texts=lines)
    if suffix != ".jsonl":
        raise InputError(f"input file {path} must end in .txt or .jsonl")
    result = Inputs(texts=[], labels={c: [] for c in label_columns}, targets=[] if target_column else None)
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: expected a JSON object")
        for column in (text_column, *label_columns, *([target_column] if target_column else [])):
            if column not in row:
                raise InputError(
                    f"{path}:{number}: no column {column!r} (columns: {', '.join(map(str, row))})"
                )
        if not isinstance(row[text_column], str):
            raise InputError(f"{path}:{number}: column {text_column!r} is not a string")
        result.texts.append(row[text_column])
        if result.targets is not None:
            result.targets.append(str(row[target_column]))
        for column in label_columns:
            result.labels[column].append(None if row[column] is None else str(row[column]))
    if not result.texts:
        raise InputError(f"input file {path} has no rows")
    return result
