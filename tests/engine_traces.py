"""Test helper: write a RouteScope recording's decisions out in each engine's trace format.

Each writer follows the format as the engine's code writes it (docs/import.md, shared/notes/
engine-trace-formats.md), so importing the file back must give the same decisions: agreement 1.0 on
everything the format carries. Only the tests use this; it is not an exporter.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

from routescope.store import Run


def routing(run: Run) -> dict[int, np.ndarray]:
    """Per sample: expert ids [routed tokens, layers, k] in rank order (positions 0..n-1 all routed)."""
    a = run.assignments().sort_values(["sample", "position", "layer", "rank"])
    layers, k = a["layer"].nunique(), int(a["rank"].max()) + 1
    out = {}
    for sample, part in a.groupby("sample"):
        out[int(sample)] = part["expert"].to_numpy().reshape(-1, layers, k).astype(np.int64)
    return out


def tokens(run: Run) -> dict[int, tuple[list[int], list[int]]]:
    """Per sample: (prompt token ids, generated token ids)."""
    t = run.tokens().sort_values(["sample", "position"])
    return {
        int(s): (p.loc[~p.generated, "token_id"].tolist(), p.loc[p.generated, "token_id"].tolist())
        for s, p in t.groupby("sample")
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def vllm_jsonl(run: Run, path: Path, *, split: bool = False, dense: int | None = None) -> Path:
    """One `RequestOutput` per line; `split` uses prompt_routed_experts + routed_experts; `dense` inserts an
    all-zero layer column at that index (a dense layer, as the capturer leaves it)."""
    records = []
    for sample, ids in routing(run).items():
        prompt, output = tokens(run)[sample]
        if dense is not None:
            ids = np.insert(ids, dense, 0, axis=1)
        record: dict[str, Any] = {"prompt_token_ids": prompt, "output_token_ids": output}
        if split:
            record["prompt_routed_experts"] = ids[: len(prompt)].tolist()
            record["routed_experts"] = ids[len(prompt) :].tolist()
        else:
            record["routed_experts"] = ids.tolist()
        records.append(record)
    return write_jsonl(path, records)


def vllm_npz(run: Run, folder: Path) -> list[Path]:
    """One `.npz` per request (int16 ids, as newer vLLM stores them)."""
    paths = []
    for sample, ids in routing(run).items():
        prompt, output = tokens(run)[sample]
        path = folder / f"request{sample}.npz"
        np.savez(
            path,
            prompt_token_ids=np.array(prompt),
            output_token_ids=np.array(output, dtype=np.int64),
            prompt_routed_experts=ids[: len(prompt)].astype(np.int16),
            routed_experts=ids[len(prompt) :].astype(np.int16),
        )
        paths.append(path)
    return paths


def sglang_jsonl(run: Run, path: Path) -> Path:
    """One /generate response per line: meta_info.routed_experts = base64 of int32 (tokens, L, k)."""
    records = []
    for sample, ids in routing(run).items():
        prompt, output = tokens(run)[sample]
        raw = base64.b64encode(ids.astype(np.int32).tobytes()).decode()
        meta = {"prompt_tokens": len(prompt), "completion_tokens": len(output), "routed_experts": raw}
        records.append({"text": "", "input_ids": prompt, "output_ids": output, "meta_info": meta})
    return write_jsonl(path, records)


def sglang_per_token(run: Run, path: Path, n_experts: int) -> Path:
    """A `per_token` recorder dump of a prompt-only run: one batched prefill forward pass holding every
    sample as a sequence (`extend_seq_lens`), physical ids under a shuffled physical → logical map."""
    import torch

    rng = np.random.default_rng(0)
    ids = routing(run)
    samples = sorted(ids)
    layers = ids[samples[0]].shape[1]
    physical_of = np.stack([rng.permutation(n_experts) for _ in range(layers)])  # logical → physical
    every = np.concatenate([ids[s] for s in samples])  # [T, L, k]
    physical = np.take_along_axis(physical_of[None], every, axis=2)
    padded = np.full((layers, len(every), 8), -1, np.int32)
    padded[:, :, : every.shape[2]] = physical.transpose(1, 0, 2)
    record = {
        "forward_pass_id": 0,
        "rank": 0,
        "global_physical_count": torch.zeros(layers, n_experts, dtype=torch.int64),
        "input_ids": torch.tensor([t for s in samples for t in tokens(run)[s][0]]),
        "positions": torch.cat([torch.arange(len(ids[s])) for s in samples]),
        "extend_seq_lens": torch.tensor([len(ids[s]) for s in samples]),
        "forward_mode": 1,
        "topk_ids_of_layer": torch.from_numpy(padded),
    }
    to_logical = torch.from_numpy(np.argsort(physical_of, axis=1))  # physical → logical
    torch.save({"records": [record], "last_physical_to_logical_map": to_logical}, path)
    return path


def sglang_stat(run: Run, path: Path, n_experts: int) -> Path:
    """A `stat` recorder dump: logical_count [1 step, L, E]."""
    import torch

    a = run.assignments()
    layers = sorted(a["layer"].unique())
    counts = np.zeros((1, len(layers), n_experts), np.int64)
    for i, layer in enumerate(layers):
        counts[0, i] = np.bincount(a.loc[a.layer == layer, "expert"], minlength=n_experts)
    torch.save({"rank": 0, "logical_count": torch.from_numpy(counts)}, path)
    return path


def megatron_jsonl(run: Run, folder: Path, *, logits: bool = False) -> list[Path]:
    """RouterTracer files: sample s is traced by rank s (step 0), one record per layer; two rank files.
    `logits` also writes the bfloat16 sidecars `logits_rank{r}.bin` from the run's `decisions.logits`."""
    records: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    sidecars: dict[int, list[bytes]] = {}  # by the records' rank (= sample), as the tracer names them
    scores = run.decisions().sort_values(["sample", "position", "layer"]) if logits else None
    for sample, ids in routing(run).items():
        for layer in range(ids.shape[1]):
            record: dict[str, Any] = {
                "step": 0,
                "stage": "pre_dispatch",
                "block": "decoder",
                "layer": layer,
                "rank": sample,
                "num_tokens": len(ids),
                "topk": ids.shape[2],
                "top_indices": ids[:, layer].tolist(),
            }
            if scores is not None:
                part = scores[(scores["sample"] == sample) & (scores["layer"] == layer)]
                values = np.stack(part["logits"].to_list()).astype(np.float32)
                raw = (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()  # bfloat16, truncated
                offset = sum(len(b) for b in sidecars.setdefault(sample, []))
                record.update(logit_offset=offset, logit_bytes=len(raw), logit_shape=list(values.shape))
                sidecars[sample].append(raw)
            records[sample % 2].append(record)
    for rank, parts in sidecars.items():
        if parts:
            (folder / f"logits_rank{rank}.bin").write_bytes(b"".join(parts))
    return [write_jsonl(folder / f"router_trace_rank{r}.jsonl", rows) for r, rows in records.items()]


def olmoe_jsonl(run: Run, path: Path) -> Path:
    """OLMoE analysis lines: input_ids and exp_ids [T][k][L] (token × rank × layer)."""
    records = []
    for sample, ids in routing(run).items():
        prompt, _ = tokens(run)[sample]
        records.append({"input_ids": prompt, "exp_ids": ids.transpose(0, 2, 1).tolist()})
    return write_jsonl(path, records)


def llamacpp_csv(run: Run, path: Path) -> Path:
    """llama.cpp moe-trace: a `layer,expert` row per routed activation."""
    a = run.assignments()
    lines = ["layer,expert", *(f"{layer},{expert}" for layer, expert in zip(a.layer, a.expert, strict=True))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
