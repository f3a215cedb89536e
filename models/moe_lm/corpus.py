"""The labelled five-domain corpus of moe-lm, built offline and deterministically from a seed.

Domains, chosen so that their text differs in kind (which is what gives the routers something to
specialise on):

- `prose`: English from the Python reference topics shipped with every CPython (`pydoc_data.topics`);
- `code`: Python source files of the running interpreter's standard library (top-level modules);
- `arithmetic`: generated, correct exercise lines (`37 + 58 = 95`, products, two-step expressions);
- `json`: generated records with the keys of real application data, in three layouts;
- `chemistry`: generated worksheets of balanced equations, molar masses and mole conversions.

The held-out documents are disjoint from training by source: whole documentation topics and whole source
files are held out, and the generated domains draw their held-out documents from a separate random stream,
with every held-out line of `arithmetic` and `chemistry` (where short lines can repeat) removed from the
training text. `prose` and `code` depend on the Python version that runs the build (its stdlib and topics);
the generated domains depend on the seed only.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .chemistry import chemistry_document
from .synthetic import arithmetic_document, json_document

DOMAINS: tuple[str, ...] = ("prose", "code", "arithmetic", "json", "chemistry")

CODE_MIN_BYTES = 2_000
CODE_MAX_BYTES = 120_000


@dataclass(frozen=True)
class CorpusSizes:
    """Characters per domain: training text (a cap for the finite sources) and held-out text."""

    train_chars: int
    heldout_chars: int


FULL = CorpusSizes(train_chars=2_000_000, heldout_chars=30_000)
SMOKE = CorpusSizes(train_chars=30_000, heldout_chars=3_000)


@dataclass
class Corpus:
    """Documents per domain, for training and held out; `sources` says where each held-out part came from."""

    train: dict[str, list[str]]
    heldout: dict[str, list[str]]
    sources: dict[str, list[str]] = field(default_factory=dict)

    def chars(self) -> dict[str, dict[str, int]]:
        return {
            d: {"train": sum(map(len, self.train[d])), "heldout": sum(map(len, self.heldout[d]))}
            for d in self.train
        }


def stdlib_dir() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(os.__file__).parent


def _prose_documents() -> dict[str, str]:
    from pydoc_data.topics import topics

    return {key: text.strip() for key, text in sorted(topics.items()) if text.strip()}


def _code_documents() -> dict[str, str]:
    """Top-level stdlib modules between 2 kB and 120 kB, by file name (sorted)."""
    files = sorted(stdlib_dir().glob("*.py"))
    docs = {}
    for path in files:
        size = path.stat().st_size
        if CODE_MIN_BYTES <= size <= CODE_MAX_BYTES:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            docs[path.name] = text
    return docs


def _split_sources(
    docs: dict[str, str], rng: random.Random, sizes: CorpusSizes
) -> tuple[list[str], list[str], list[str]]:
    """Shuffle the named documents; hold whole documents out until `heldout_chars`, train on the rest."""
    names = sorted(docs)
    rng.shuffle(names)
    heldout: list[str] = []
    held_names: list[str] = []
    train: list[str] = []
    held_chars = train_chars = 0
    for name in names:
        text = docs[name]
        if held_chars < sizes.heldout_chars and len(text) <= 4 * sizes.heldout_chars:
            heldout.append(text)
            held_names.append(name)
            held_chars += len(text)
        elif train_chars < sizes.train_chars:
            train.append(text)
            train_chars += len(text)
    return train, heldout, held_names


def _generate(
    make: Callable[[random.Random], str],
    rng: random.Random,
    chars: int,
    exclude: frozenset[str] = frozenset(),
) -> list[str]:
    """Documents from `make` until `chars` characters; lines in `exclude` are dropped."""
    docs: list[str] = []
    total = 0
    while total < chars:
        text = make(rng)
        if exclude:
            text = "\n".join(line for line in text.split("\n") if line not in exclude)
        if text:
            docs.append(text)
            total += len(text)
    return docs


GENERATORS: dict[str, tuple[Callable[[random.Random], str], bool]] = {
    # domain → (one document from an rng, whether held-out lines are removed from training)
    "arithmetic": (lambda rng: "\n".join(arithmetic_document(rng, rng.randint(8, 40))), True),
    "json": (lambda rng: json_document(rng, rng.randint(1, 6)), False),
    "chemistry": (lambda rng: "\n".join(chemistry_document(rng, rng.randint(6, 24))), True),
}


def build_corpus(seed: int = 0, sizes: CorpusSizes = FULL) -> Corpus:
    """The corpus for `seed`: the same seed on the same Python gives the same text."""
    train: dict[str, list[str]] = {}
    heldout: dict[str, list[str]] = {}
    sources: dict[str, list[str]] = {}
    for domain, docs in (("prose", _prose_documents()), ("code", _code_documents())):
        rng = random.Random(f"moe-lm:{seed}:{domain}:split")
        train[domain], heldout[domain], names = _split_sources(docs, rng, sizes)
        sources[domain] = names
    for domain, (make, exclude_lines) in GENERATORS.items():
        held = _generate(make, random.Random(f"moe-lm:{seed}:{domain}:heldout"), sizes.heldout_chars)
        exclude = (
            frozenset(line for doc in held for line in doc.split("\n")) if exclude_lines else frozenset()
        )
        rng = random.Random(f"moe-lm:{seed}:{domain}:train")
        train[domain] = _generate(make, rng, sizes.train_chars, exclude)
        heldout[domain] = held
        sources[domain] = [f"generated (seed {seed}, held-out stream)"]
    return Corpus(
        train={d: train[d] for d in DOMAINS}, heldout={d: heldout[d] for d in DOMAINS}, sources=sources
    )
