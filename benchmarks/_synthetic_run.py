"""A large synthetic run with planted routing, written through the real store writer, for scale benchmarks.

The analysis benchmark needs a run of ~100 M assignment rows, far beyond what the bundled models record in
reasonable time, yet it must be a real run (the `RunWriter` files, manifest and row groups) so that the
analyses meet the layout they meet in practice. This module synthesises one, chunk by chunk, in bounded
memory (a chunk of samples at a time; the writer flushes a row group every ≈ 256 k rows).

Planted structure, per layer: router logits = expert bias + domain bias[domain] + token bias[token id] +
Gaussian noise, so experts prefer some domains and some token ids; the router picks the top-k logits
(ranks ordered by logit), the weights are the softmax renormalised over the chosen k, and each decision
stores the entropy, top-1 − top-2 margin and max probability of the full softmax. Token ids follow a
Zipf law over the vocabulary; every sample has one domain label. A small share of non-top-1 assignments
is marked `dropped` (capacity drops), which every analysis must skip.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from routescope.hooks.tables import token_table
from routescope.store import Run, Store
from routescope.store.schema import ASSIGNMENTS, DECISIONS, STEPS, TOKENS, samples_schema
from routescope.store.writer import RunWriter

DOMAINS = ("code", "math", "web", "books", "science", "legal", "chat", "news")


@dataclass(frozen=True, kw_only=True)
class Shape:
    """The size of a synthetic run."""

    rows: int = 100_000_000
    """Assignment rows wanted; the token count is rows // (layers · top_k) (rounded down)."""
    layers: int = 8
    """Routers, one per layer."""
    experts: int = 64
    """Experts per router."""
    top_k: int = 4
    """Experts chosen per decision."""
    seq_len: int = 512
    """Tokens per sample (the last sample may be shorter)."""
    vocab: int = 32_000
    """Token ids 0..vocab-1, drawn from a Zipf law."""
    drop_rate: float = 0.002
    """Share of rank ≥ 1 assignments marked dropped."""
    batch_size: int = 8
    """Samples per written batch, as `record(batch_size=8)` writes them: each batch's router calls are
    written one after another, so a row group mixes every layer (as in a real recording)."""
    seed: int = 0
    """Seed of every random draw."""

    @property
    def tokens(self) -> int:
        return self.rows // (self.layers * self.top_k)

    def name(self) -> str:
        """A run name that changes with every parameter, so a cached run is reused only when identical."""
        return (
            f"synthetic-r{self.rows}-l{self.layers}-e{self.experts}-k{self.top_k}-s{self.seq_len}"
            f"-v{self.vocab}-d{self.drop_rate:g}-b{self.batch_size}-seed{self.seed}"
        )


def synthetic_run(store_dir: Path, shape: Shape, *, progress: Callable[[str], None] | None = None) -> Run:
    """Open the cached run for `shape` in `store_dir`, generating it first if it is not there."""
    store = Store(store_dir)
    name = shape.name()
    if store.exists(name):
        return store.open(name)
    return _generate(store, name, shape, progress or (lambda _: None))


def _zipf(vocab: int) -> np.ndarray:
    weights = 1.0 / (np.arange(vocab) + 2.7) ** 1.07
    return weights / weights.sum()


def _generate(store: Store, name: str, shape: Shape, progress: Callable[[str], None]) -> Run:
    rng = np.random.default_rng(shape.seed)
    n_tokens = shape.tokens
    n_samples = -(-n_tokens // shape.seq_len)
    lengths = np.full(n_samples, shape.seq_len, np.int32)
    lengths[-1] = n_tokens - shape.seq_len * (n_samples - 1)
    domains = rng.integers(0, len(DOMAINS), n_samples)
    token_p = _zipf(shape.vocab)
    permutation = rng.permutation(shape.vocab)  # the most frequent ids are not simply 0, 1, 2, ...
    expert_bias = rng.normal(0.0, 0.5, (shape.layers, shape.experts)).astype(np.float32)
    domain_bias = rng.normal(0.0, 1.0, (shape.layers, len(DOMAINS), shape.experts)).astype(np.float32)
    token_bias = rng.normal(0.0, 0.8, (shape.layers, shape.vocab, shape.experts)).astype(np.float16)

    routers = [
        {
            "id": layer,
            "path": f"model.layers.{layer}.mlp.gate",
            "layer": layer,
            "call_count": 1,
            "kind": "ffn",
            "stack": "decoder",
            "n_experts": shape.experts,
            "top_k": shape.top_k,
            "shared_experts": [],
        }
        for layer in range(shape.layers)
    ]
    schemas = {
        "samples": samples_schema(["domain"]),
        "tokens": TOKENS,
        "assignments": ASSIGNMENTS,
        "decisions": DECISIONS,
        "steps": STEPS,
    }
    manifest = {
        "model": {"spec": "synthetic", "source": "object", "class": "SyntheticRouting", "family": None},
        "tokenizer": "NoneType",
        "routers": routers,
        "labels": ["domain"],
        "seed": shape.seed,
        "options": {"probs": False, "max_new_tokens": 0, "engine": "synthetic"},
    }
    samples_per_chunk = shape.batch_size
    start = time.perf_counter()
    with RunWriter(store, name, schemas=schemas, manifest=manifest, overwrite=True) as writer:
        for first in range(0, n_samples, samples_per_chunk):
            chunk = np.arange(first, min(first + samples_per_chunk, n_samples))
            sample = np.repeat(chunk.astype(np.int32), lengths[chunk])
            position = np.concatenate([np.arange(lengths[s], dtype=np.int32) for s in chunk])
            token_id = permutation[rng.choice(shape.vocab, size=len(sample), p=token_p)].astype(np.int32)
            writer.write(
                "tokens", token_table(sample, position, token_id, _text, generated=False, stack="decoder")
            )
            domain = domains[sample]
            for layer in range(shape.layers):
                assignments, decisions = _router_call(
                    rng,
                    shape,
                    layer,
                    sample,
                    position,
                    [expert_bias[layer], domain_bias[layer][domain], token_bias[layer][token_id]],
                )
                writer.write("assignments", assignments)
                writer.write("decisions", decisions)
            done = min(first + samples_per_chunk, n_samples)
            if done == n_samples or (first // samples_per_chunk) % 100 == 0:
                elapsed = time.perf_counter() - start
                rows = int(lengths[:done].sum()) * shape.layers * shape.top_k
                progress(f"  generated {rows:,} / {shape.rows:,} assignment rows ({elapsed:.0f} s)")
        writer.write(
            "samples",
            pa.table(
                {
                    "sample": np.arange(n_samples, dtype=np.int32),
                    "text": [f"synthetic sample {i}" for i in range(n_samples)],
                    "n_tokens": lengths,
                    "n_generated": np.zeros(n_samples, np.int32),
                    "generated": pa.nulls(n_samples, pa.string()),
                    "domain": [DOMAINS[d] for d in domains],
                },
                schema=schemas["samples"],
            ),
        )
        writer.write(
            "steps",
            pa.table({"step": [0], "timestep": [None], "sigma": [None]}, schema=STEPS),
        )
        path = writer.publish()
    return Run(path)


def _text(token_id: int) -> str:
    return f"t{token_id}"


def _router_call(
    rng: np.random.Generator,
    shape: Shape,
    layer: int,
    sample: np.ndarray,
    position: np.ndarray,
    biases: list[np.ndarray],
) -> tuple[pa.Table, pa.Table]:
    """One router's assignments and decisions for a chunk of tokens (k adjacent rows per token, by rank)."""
    n, k = len(sample), shape.top_k
    logits = rng.standard_normal((n, shape.experts), dtype=np.float32)
    for bias in biases:
        logits += bias
    top = np.argpartition(logits, -k, axis=1)[:, -k:]
    order = np.argsort(-np.take_along_axis(logits, top, axis=1), axis=1, kind="stable")
    chosen = np.take_along_axis(top, order, axis=1)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    entropy = -(probs * np.log(np.clip(probs, 1e-30, None))).sum(axis=1)
    chosen_p = np.take_along_axis(probs, chosen, axis=1)
    weight = chosen_p / chosen_p.sum(axis=1, keepdims=True)
    dropped = rng.random((n, k)) < shape.drop_rate
    dropped[:, 0] = False
    keys = {
        "sample": sample,
        "position": position,
        "step": np.zeros(n, np.int32),
        "router": np.full(n, layer, np.int16),
        "layer": np.full(n, layer, np.int16),
        "call": np.zeros(n, np.int16),
    }
    assignments = pa.table(
        {
            **{column: np.repeat(values, k) for column, values in keys.items()},
            "rank": np.tile(np.arange(k, dtype=np.int16), n),
            "expert": chosen.reshape(-1).astype(np.int32),
            "weight": weight.reshape(-1).astype(np.float32),
            "dropped": dropped.reshape(-1),
        },
        schema=ASSIGNMENTS,
    )
    decisions = pa.table(
        {
            **keys,
            "entropy": entropy.astype(np.float32),
            "margin": (chosen_p[:, 0] - chosen_p[:, 1]).astype(np.float32),
            "max_prob": chosen_p[:, 0].astype(np.float32),
        },
        schema=DECISIONS,
    )
    return assignments, decisions
