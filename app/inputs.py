"""Read recording inputs from the command line: repeated `--text`, a `.txt` file or a `.jsonl` file.

`.txt`: one sample per non-empty line. `.jsonl`: one JSON object per line; the text comes from
`--text-column` (default `text`) and each `--label-column` becomes a label of the run. Vision-language
models take images: `--image PATH` (one per `--text`, or several for a single `--text`), or an `image`
field in the `.jsonl` rows (a path or a list of paths, relative to the file's folder; null: no image).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routescope.store import InputError


@dataclass
class Inputs:
    texts: list[str]
    labels: dict[str, list[str | None]] = field(default_factory=dict)
    targets: list[str] | None = None
    """Decoder targets of encoder–decoder models (`--target-column` of a .jsonl file)."""
    images: list[list[Any]] | None = None
    """Images per input (vision-language models): file paths, or decoded images (the dashboard's uploads);
    None: a text-only recording."""


IMAGE_FIELD = "image"
"""The `.jsonl` field that holds an input's image path (or list of paths)."""


def attach_images(inputs: Inputs, images: Sequence[Any] | None, *, noun: str = "--image") -> Inputs:
    """Images (`--image PATH` options, or the dashboard's uploads) onto the inputs: one per text, or all of
    them onto a single text. `noun` names them in errors."""
    if not images:
        return inputs
    if inputs.images is not None:
        raise InputError(
            f"give images either with {noun} or in the .jsonl image field, not both", field="images"
        )
    texts = len(inputs.texts)
    if len(images) == texts:
        inputs.images = [[image] for image in images]
    elif texts == 1:
        inputs.images = [list(images)]
    else:
        one_each = (
            "one --image per --text (or one --text)" if noun == "--image" else "one per input (or one input)"
        )
        raise InputError(f"{len(images)} {noun} for {texts} inputs; give {one_each}", field="images")
    return inputs


def _row_images(value: object, folder: Path, where: str) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) and item for item in items):
        raise InputError(f"{where}: field {IMAGE_FIELD!r} is not a path or a list of paths", field="images")
    return [str(folder / item) for item in items]  # absolute paths stay absolute


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
    images: list[list[str]] = []
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
        images.append(_row_images(row.get(IMAGE_FIELD), path.parent, f"{path}:{number}"))
        if result.targets is not None:
            result.targets.append(str(row[target_column]))
        for column in label_columns:
            result.labels[column].append(None if row[column] is None else str(row[column]))
    if not result.texts:
        raise InputError(f"input file {path} has no rows")
    if any(images):
        result.images = images
    return result
