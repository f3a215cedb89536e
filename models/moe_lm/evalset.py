"""The held-out evaluation set of moe-lm (`bundled:domains`): short labelled texts from held-out documents.

Each text is at most `max_tokens` tokens (under the model's 256-token context), cut at a line break where
one is near, and the texts of a domain are taken round-robin from its held-out documents (first pieces of
every document, then second pieces, ...) so that one long document does not fill the set. The set is
written as `domains.jsonl`, one `{"text": ..., "domain": ...}` object per line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FILE_NAME = "domains.jsonl"


def _pieces(tokenizer: Any, doc: str, max_tokens: int, min_tokens: int) -> list[str]:
    """Cut `doc` into texts of ≤ max_tokens tokens, preferring to end each at a newline."""
    encoding = tokenizer(doc, return_offsets_mapping=True, add_special_tokens=False)
    offsets: list[tuple[int, int]] = encoding["offset_mapping"]
    pieces: list[str] = []
    start = 0
    while start < len(offsets):
        end = min(start + max_tokens, len(offsets))
        if end < len(offsets):
            # the last token in the window's final quarter whose text ends with a newline
            for i in range(end - 1, start + (3 * max_tokens) // 4, -1):
                if doc[offsets[i][0] : offsets[i][1]].endswith("\n"):
                    end = i + 1
                    break
        text = doc[offsets[start][0] : offsets[end - 1][1]].strip()
        if end - start >= min_tokens and text:
            pieces.append(text)
        start = end
    return pieces


def build_eval_texts(
    tokenizer: Any,
    heldout: Mapping[str, Sequence[str]],
    texts_per_domain: int,
    max_tokens: int = 240,
    min_tokens: int = 48,
) -> list[dict[str, str]]:
    """`texts_per_domain` records `{"text", "domain"}` per domain, grouped by domain in `heldout`'s order."""
    records: list[dict[str, str]] = []
    for domain, docs in heldout.items():
        per_doc = [_pieces(tokenizer, doc, max_tokens, min_tokens) for doc in docs]
        chosen: list[str] = []
        depth = 0
        while len(chosen) < texts_per_domain and any(depth < len(p) for p in per_doc):
            for pieces in per_doc:
                if depth >= len(pieces) or len(chosen) >= texts_per_domain:
                    continue
                # re-encoding a cut text can differ at its edges; keep it inside the context
                if len(tokenizer(pieces[depth], add_special_tokens=False)["input_ids"]) <= max_tokens + 8:
                    chosen.append(pieces[depth])
            depth += 1
        records.extend({"text": text, "domain": domain} for text in chosen)
    return records


def write_eval_set(records: Sequence[Mapping[str, str]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(dict(record), ensure_ascii=False) + "\n")


def read_eval_set(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
