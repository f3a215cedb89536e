"""Runs with planted routing, written through the real store writer, for analysis tests with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from routescope.store import Run, Store
from routescope.store.manifest import RouterInfo
from routescope.store.schema import (
    STEPS,
    assignments_schema,
    decisions_schema,
    samples_schema,
    tokens_schema,
)
from routescope.store.writer import RunWriter


def planted_routers(
    layers: list[int], n_experts: int, k: int, zero_experts: tuple[int, ...] = (), choice: str = "token"
) -> list[dict[str, object]]:
    """One plain top-k FFN router per layer (router id = its index), as the manifest stores it."""
    return [
        RouterInfo(
            id=i,
            layer=layer,
            path=f"layers.{layer}.gate",
            call_count=1,
            n_experts=n_experts,
            top_k=k,
            zero_experts=zero_experts,
            choice=choice,
        ).to_dict()
        for i, layer in enumerate(layers)
    ]


def planted_run(
    store: Store,
    name: str,
    *,
    experts: dict[int, list[list[int]]],
    n_experts: int = 4,
    probs: dict[int, np.ndarray] | None = None,
    labels: dict[str, list[str]] | None = None,
    nll: np.ndarray | None = None,
    output_norm: dict[int, np.ndarray] | None = None,
    weights: dict[int, np.ndarray] | None = None,
    predicted: np.ndarray | None = None,
    zero_experts: tuple[int, ...] = (),
    choice: str = "token",
) -> Run:
    """A run of one-token samples: `experts[layer][sample]` lists the experts chosen (rank order) for
    that sample's only token at `layer`; optional `probs[layer]` is `[samples, E]`; `labels` per sample;
    `nll` per sample (a token-loss run; `predicted`, the predicted next token, defaults to the token
    id); `output_norm[layer]` and `weights[layer]` are `[samples, k]` (an expert-stats run; weights
    default to 1/k). A sample's list may have any length (variable k, 0 included: the decision row stays);
    `zero_experts` are the routers' zero-computation experts, `choice` their `token`/`expert` mode."""
    layers = sorted(experts)
    n_samples = len(experts[layers[0]])
    k = max(len(chosen) for layer in layers for chosen in experts[layer])
    label_columns = sorted(labels or {})
    routers = planted_routers(layers, n_experts, k, zero_experts, choice)
    schemas = {
        "samples": samples_schema(label_columns),
        "tokens": tokens_schema(nll is not None),
        "assignments": assignments_schema(output_norm is not None),
        "decisions": decisions_schema(probs is not None),
        "steps": STEPS,
    }
    manifest = {
        "model": {"spec": "planted"},
        "routers": routers,
        "labels": label_columns,
        "options": {
            "probs": probs is not None,
            "token_loss": nll is not None,
            "expert_stats": output_norm is not None,
        },
    }
    with RunWriter(store, name, schemas=schemas, manifest=manifest, overwrite=True) as writer:
        for router, layer in enumerate(layers):
            counts = np.array([len(chosen) for chosen in experts[layer]])
            chosen = np.asarray([e for row in experts[layer] for e in row], dtype=np.int64)
            rows = pd.DataFrame(
                {
                    "sample": np.repeat(np.arange(n_samples), counts),
                    "position": 0,
                    "step": 0,
                    "router": router,
                    "layer": layer,
                    "call": 0,
                    "rank": np.concatenate([np.arange(c) for c in counts]).astype(np.int64),
                    "expert": chosen,
                    "weight": 1.0 / np.repeat(np.maximum(counts, 1), counts)
                    if weights is None
                    else np.asarray(weights[layer]).reshape(-1),
                    "dropped": False,
                }
            )
            if output_norm is not None:
                rows["output_norm"] = np.asarray(output_norm[layer], np.float32).reshape(-1)
            writer.write("assignments", pa.Table.from_pandas(rows, preserve_index=False))
            p = probs[layer] if probs is not None else np.full((n_samples, n_experts), 1.0 / n_experts)
            entropy = -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=1)
            top = np.sort(p, axis=1)[:, ::-1]
            decisions = {
                "sample": np.arange(n_samples),
                "position": 0,
                "step": 0,
                "router": router,
                "layer": layer,
                "call": 0,
                "entropy": entropy,
                "margin": top[:, 0] - top[:, 1],
                "max_prob": top[:, 0],
            }
            table = pa.Table.from_pandas(pd.DataFrame(decisions), preserve_index=False)
            if probs is not None:
                table = table.append_column("probs", pa.array(list(p.astype(np.float32))))
            writer.write("decisions", table)
        tokens = {
            "sample": np.arange(n_samples),
            "position": np.zeros(n_samples),
            "token_id": np.arange(n_samples) % 3,
            "token": [str(i % 3) for i in range(n_samples)],
            "generated": np.zeros(n_samples, bool),
            "stack": ["decoder"] * n_samples,
            "row": pa.nulls(n_samples, pa.int32()),
            "col": pa.nulls(n_samples, pa.int32()),
        }
        if nll is not None:
            tokens["nll"] = pa.array(np.asarray(nll, np.float32), pa.float32(), mask=np.isnan(nll))
            tokens["predicted"] = np.arange(n_samples) % 3 if predicted is None else np.asarray(predicted)
        writer.write("tokens", pa.table(tokens))
        writer.write(
            "samples",
            pa.table(
                {
                    "sample": np.arange(n_samples),
                    "text": ["x"] * n_samples,
                    "n_tokens": np.ones(n_samples),
                    "n_generated": np.zeros(n_samples),
                    "generated": pa.nulls(n_samples, pa.string()),
                    **{c: (labels or {})[c] for c in label_columns},
                }
            ),
        )
        writer.write("steps", pa.table({"step": [0], "timestep": [None], "sigma": [None]}))
        path = writer.publish()
    return Run(path)
