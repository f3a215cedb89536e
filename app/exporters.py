"""Export a run in the formats other engines read, so that a load or a placement computed here is used by
the engine that serves or trains the model (`routescope export`, docs/export.md).

- `sglang-eplb`: SGLang's `--init-expert-location FILE.json`, `{"logical_count": [[...]]}` of shape
  [num_layers, num_logical_experts]: routed (non-dropped) assignments per model layer and expert, zero
  rows for layers without a router (SGLang's `init_by_eplb` adds the leading steps dimension itself and
  hands the counts to its EPLB rebalancer).
- `olmoe-jsonl`: OLMoE's analysis JSONL, one sequence per line, `{"input_ids": [T], "exp_ids":
  [T][k][L]}` (token × rank × MoE layer, layers in depth order); the positions routed at every layer
  (a generated run's last token, never fed back, is left out).
- `megatron-jsonl`: Megatron-Core RouterTracer records, one per (step, block, layer): `{step, stage:
  "pre_dispatch", block, layer, rank: 0, num_tokens, topk, top_indices}`, the tokens of every sample of
  that step in (sample, position) order; `block` is the router's stack (`decoder`).

Id exports keep every chosen expert (dropped ones too: the router chose them, as Megatron's
pre-dispatch trace does). Every file is written to a temporary name beside `out` and renamed over it
once complete, so a failed export leaves no partial file; what a run lacks is a one-line `InputError`.
Reading goes through `routescope.store` and DuckDB (`routescope.analysis.connect`), one (step, layer)
record (Megatron) or 64 samples (OLMoE) per query, so memory is bounded by that, not by the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd

from routescope.analysis import expert_load
from routescope.analysis.frames import sql
from routescope.store import InputError, RouterInfo, Run
from routescope.store.capabilities import missing_message

ExportKind = Literal["sglang-eplb", "olmoe-jsonl", "megatron-jsonl"]
EXPORT_KINDS: tuple[ExportKind, ...] = ("sglang-eplb", "olmoe-jsonl", "megatron-jsonl")
NEEDS: dict[str, tuple[str, ...]] = {
    "sglang-eplb": (),
    "olmoe-jsonl": ("ids", "ranks", "token_ids", "positions"),
    "megatron-jsonl": ("ids", "ranks"),
}
"""What each format needs of a run (store/capabilities.py): loads only, or ids with token ids."""
BATCH = 64
"""Samples (OLMoE) read per query: memory stays bounded by a batch, not the run."""


def _one_router_per_layer(run: Run, kind: str) -> list[RouterInfo]:
    routers = sorted(run.info.routers, key=lambda r: r.layer)
    layers = [r.layer for r in routers]
    if len(set(layers)) != len(layers):
        raise InputError(f"{kind} needs one router per layer; run {run.name!r} has several at one layer")
    if any((r.call_count or 1) > 1 for r in routers):
        raise InputError(
            f"{kind} needs routers called once per pass; run {run.name!r} calls one several times"
        )
    return routers


def logical_count(run: Run, num_layers: int | None = None) -> np.ndarray:
    """`[num_layers, E]` routed assignments per model layer and expert (SGLang's `logical_count`);
    `num_layers` defaults to the deepest MoE layer + 1 (dense layers before it get zero rows)."""
    routers = _one_router_per_layer(run, "sglang-eplb")
    sizes = {r.n_experts for r in routers}
    if len(sizes) != 1:
        raise InputError(
            f"sglang-eplb needs the same number of experts at every layer; "
            f"run {run.name!r} has {sorted(sizes)}"
        )
    deepest = max(r.layer for r in routers) + 1
    layers = deepest if num_layers is None else int(num_layers)
    if layers < deepest:
        raise InputError(
            f"num_layers={layers} is fewer than the run's MoE layers reach (layer {deepest - 1})"
        )
    counts = np.zeros((layers, sizes.pop()), dtype=np.int64)
    load = expert_load(run, ("layer",))
    counts[load["layer"].to_numpy(dtype=int), load["expert"].to_numpy(dtype=int)] = load["count"].to_numpy()
    return counts


def _top_k(run: Run, routers: list[RouterInfo], kind: str) -> int:
    if any(r.choice == "expert" for r in routers):
        raise InputError(
            f"{kind} needs a fixed top-k per token; run {run.name!r} has expert-choice routers "
            "(0 … E experts per token)"
        )
    ks = {r.top_k for r in routers}
    if len(ks) != 1:
        raise InputError(f"{kind} needs the same top-k at every layer; run {run.name!r} has {sorted(ks)}")
    return ks.pop()


def _olmoe_lines(run: Run) -> Iterator[str]:
    kind = "olmoe-jsonl"
    if run.info.is_diffusion:
        raise InputError(f"{kind} needs a text run with token ids; run {run.name!r} is a diffusion run")
    routers = _one_router_per_layer(run, kind)
    if len({r.stack for r in routers}) != 1:
        raise InputError(f"{kind} needs the routers of one stack; run {run.name!r} has several")
    k, n_layers = _top_k(run, routers, kind), len(routers)
    index = {r.id: i for i, r in enumerate(routers)}
    stack = routers[0].stack.replace("'", "''")
    samples = sql(run, "SELECT DISTINCT sample FROM assignments ORDER BY sample")["sample"].tolist()
    for start in range(0, len(samples), BATCH):
        low, high = samples[start], samples[min(start + BATCH, len(samples)) - 1]
        rows = sql(
            run,
            f"""SELECT sample, position, router, rank, expert FROM assignments
                WHERE sample BETWEEN {low} AND {high} AND call = 0 ORDER BY sample, position, router, rank""",
        )
        tokens = sql(
            run,
            f"""SELECT sample, position, token_id FROM tokens
                WHERE sample BETWEEN {low} AND {high} AND stack = '{stack}' ORDER BY sample, position""",
        )
        for sample, part in rows.groupby("sample", sort=True):
            yield json.dumps(_olmoe_record(run, int(sample), part, tokens, index, k, n_layers))


def _olmoe_record(
    run: Run,
    sample: int,
    part: pd.DataFrame,
    tokens: pd.DataFrame,
    index: dict[int, int],
    k: int,
    n_layers: int,
) -> dict[str, list]:
    per_position = part.groupby("position").size()
    complete = per_position[per_position == k * n_layers].index.to_numpy()
    if len(complete) == 0 or not np.array_equal(complete, np.arange(len(complete))):
        raise InputError(
            f"olmoe-jsonl needs every position of a sample routed at every layer with {k} experts; "
            f"sample {sample} of run {run.name!r} is not"
        )
    part = part[part["position"] < len(complete)]
    grid = np.empty((len(complete), n_layers, k), dtype=np.int64)
    where = (part["position"].to_numpy(), part["router"].map(index).to_numpy(), part["rank"].to_numpy())
    grid[where] = part["expert"].to_numpy()
    ids = tokens[tokens["sample"] == sample].set_index("position")["token_id"].reindex(range(len(complete)))
    if ids.isna().any():
        raise InputError(f"olmoe-jsonl needs token ids; sample {sample} of run {run.name!r} lacks some")
    return {"input_ids": ids.astype(int).tolist(), "exp_ids": grid.transpose(0, 2, 1).tolist()}


def _megatron_lines(run: Run) -> Iterator[str]:
    kind = "megatron-jsonl"
    routers = _one_router_per_layer(run, kind)
    steps = sql(run, "SELECT DISTINCT step FROM assignments ORDER BY step")["step"].tolist()
    for step in steps:
        for router in routers:  # one query per record: memory holds one (step, layer), not the run
            rows = sql(
                run,
                f"""SELECT rank, expert FROM assignments
                    WHERE step = {int(step)} AND router = {router.id} AND call = 0
                    ORDER BY sample, position, rank""",
            )
            if rows.empty:
                continue
            k = router.top_k
            ranks = rows["rank"].to_numpy()
            if len(ranks) % k or not np.array_equal(ranks, np.tile(np.arange(k), len(ranks) // k)):
                raise InputError(
                    f"{kind} needs {k} experts for every token; run {run.name!r} has tokens with another "
                    f"number at layer {router.layer}, step {step}"
                )
            top = rows["expert"].to_numpy(dtype=np.int64).reshape(-1, k)
            record = {
                "step": int(step),
                "stage": "pre_dispatch",
                "block": router.stack,
                "layer": router.layer,
                "rank": 0,
                "num_tokens": len(top),
                "topk": k,
                "top_indices": top.tolist(),
            }
            yield json.dumps(record)


def _write_atomically(out: Path, write: Callable[[IO[str]], None], overwrite: bool) -> Path:
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; choose another --out or overwrite it", field="overwrite")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise InputError(f"cannot write --out {out}: folder {out.parent} does not exist")
    temporary = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            write(handle)
        temporary.replace(out)
    except OSError as exc:
        raise InputError(f"cannot write --out {out}: {exc.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return out


def export_run(
    kind: str, run: Run, out: str | Path, *, overwrite: bool = False, num_layers: int | None = None
) -> Path:
    """Write `run` as `kind` (one of `EXPORT_KINDS`, see the module docstring) to `out`, atomically; returns
    the path. `num_layers` (sglang-eplb) is the model's number of layers, dense ones included."""
    if kind not in EXPORT_KINDS:
        raise InputError(f"unknown export kind {kind!r}; kinds: {', '.join(EXPORT_KINDS)}")
    if num_layers is not None and kind != "sglang-eplb":
        raise InputError(f"{kind} takes no num_layers (only sglang-eplb does)")
    lacking = missing_message(kind, run.info.engine, run.info.caps, NEEDS[kind])
    if lacking:
        raise InputError(lacking)
    path = Path(out)
    if kind == "sglang-eplb":
        counts = logical_count(run, num_layers)
        return _write_atomically(path, lambda h: json.dump({"logical_count": counts.tolist()}, h), overwrite)
    lines = _olmoe_lines(run) if kind == "olmoe-jsonl" else _megatron_lines(run)

    def write(handle: IO[str]) -> None:
        for line in lines:
            handle.write(line + "\n")

    return _write_atomically(path, write, overwrite)
