"""Dashboard pages on runs of 1 M tokens × 8 layers: first visit and cached render time of every page, and
the memory of the app process.

Issue 5 (performance): on a run of 1 M tokens × 8 layers, rendering a page after its first visit (its
tables cached) must take ≤ 1 s; the first visit and the app process's memory are reported.

1. Two runs are generated once through the real `RunWriter` and cached in `--store`:
   - text: `_synthetic_run.py` (planted routing; 1 M tokens × 8 layers × top-4 of 64 experts = 32 M
     assignment rows, 512-token samples, one domain label each), plus a copy of its folder under a
     second name for the Compare page;
   - diffusion: 8 images × 2 CFG branches × 250 sampler steps × a 16 × 16 patch grid = 1.02 M patch
     tokens × 8 layers × top-2 of 16 experts, routing planted by patch position and step (little by
     class), with x̂₀ of every step (as `record_diffusion(save_x0=True)` writes it).
2. A child process (so generation does not count in its memory) opens the dashboard with Streamlit's
   `AppTest` (in-process, the pages' real code and caches) and visits each page on each run: first visit
   = switching to the page on that run (its tables computed and cached); cached = the median of three
   reruns of the page (what a widget change that needs no new table costs). RSS is the child's resident
   memory after all visits (`/proc/self/status`) and its peak (`getrusage`).

The machine is shared, so the load average is printed next to the table. This prints measurements; it
is not a test.

    .venv/bin/python benchmarks/dashboard_pages.py [--store DIR] [--tokens N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from _synthetic_run import Shape, _router_call, synthetic_run

from routescope.hooks.tables import token_table
from routescope.store import Run, Store
from routescope.store.schema import ASSIGNMENTS, DECISIONS, IMAGES, STEPS, TOKENS, samples_schema
from routescope.store.writer import RunWriter

TARGET_CACHED_S = 1.0
DEFAULT_STORE = Path(tempfile.gettempdir()) / "routescope-dashboard-bench"
GRID = 16
"""Patch grid of the synthetic diffusion run (16 × 16 patches of a 32 × 32 image)."""
PAGES = {
    "text": ["run", "tokens", "experts", "balance", "embeddings", "compare"],
    "diffusion": ["run", "tokens", "experts", "noise_steps", "balance", "embeddings"],
}


def text_run(store: Path, tokens: int) -> tuple[Run, Run]:
    """The synthetic text run and its copy (same routing, another name) for the Compare page."""
    shape = Shape(rows=tokens * 8 * 4, layers=8, experts=64, top_k=4)
    run = synthetic_run(store, shape, progress=lambda m: print(m, flush=True))
    copy = Store(store).run_path(run.name + "-copy")
    if not copy.exists():
        shutil.copytree(run.path, copy)
    return run, Store(store).open(copy.name)


def diffusion_run(store: Path, *, images: int = 8, steps: int = 250, layers: int = 8, seed: int = 0) -> Run:
    """A DiT-like run with planted routing (position and step biases, a weak class bias) and x̂₀."""
    name = f"synthetic-dit-i{images}-s{steps}-l{layers}-g{GRID}-seed{seed}"
    if Store(store).exists(name):
        return Store(store).open(name)
    rng = np.random.default_rng(seed)
    shape = Shape(layers=layers, experts=16, top_k=2, drop_rate=0.0, seed=seed)
    patches, samples = GRID * GRID, 2 * images
    classes = np.arange(images) % 10
    position_bias = rng.normal(0.0, 1.5, (layers, patches, shape.experts)).astype(np.float32)
    step_bias = np.cumsum(rng.normal(0.0, 0.15, (layers, steps, shape.experts)), axis=1).astype(np.float32)
    class_bias = rng.normal(0.0, 0.1, (layers, 10, shape.experts)).astype(np.float32)
    expert_bias = rng.normal(0.0, 0.3, (layers, shape.experts)).astype(np.float32)
    routers = [
        {
            "id": layer,
            "path": f"blocks.{layer}.moe.gate",
            "layer": layer,
            "call_count": 1,
            "kind": "ffn",
            "stack": "decoder",
            "n_experts": shape.experts,
            "top_k": shape.top_k,
            "shared_experts": [],
        }
        for layer in range(layers)
    ]
    labels = ["class", "branch", "pair"]
    manifest = {
        "kind": "diffusion",
        "model": {"spec": "synthetic-dit", "source": "object", "class": "SyntheticDiT", "family": None},
        "tokenizer": None,
        "routers": routers,
        "labels": labels,
        "seed": seed,
        "patch_grid": [GRID, GRID],
        "options": {
            "probs": False,
            "steps": steps,
            "cfg_scale": 4.0,
            "classes": classes.tolist(),
            "save_x0": True,
        },
    }
    schemas = {
        "samples": samples_schema(labels),
        "tokens": TOKENS,
        "assignments": ASSIGNMENTS,
        "decisions": DECISIONS,
        "steps": STEPS,
        "images": IMAGES,
        "x0": IMAGES,
    }
    sample = np.repeat(np.arange(samples, dtype=np.int32), patches)
    position = np.tile(np.arange(patches, dtype=np.int32), samples)
    sample_class = np.concatenate([classes, classes])[sample]
    clean = rng.random((images, 2 * GRID, 2 * GRID)).astype(np.float32)
    with RunWriter(Store(store), name, schemas=schemas, manifest=manifest, overwrite=True) as writer:
        for step in range(steps):
            for layer in range(layers):
                biases = [expert_bias[layer], position_bias[layer][position], step_bias[layer][step]]
                assignments, decisions = _router_call(
                    rng, shape, layer, sample, position, [*biases, class_bias[layer][sample_class]]
                )
                writer.write("assignments", _at_step(assignments, step))
                writer.write("decisions", _at_step(decisions, step))
            noise = rng.random(clean.shape).astype(np.float32)
            x0 = clean + (noise - clean) * (1 - (step + 1) / steps)
            writer.write("x0", _images(x0, step))
        writer.write("images", _images(clean, -1))
        grid_rows, grid_cols = np.divmod(np.arange(patches), GRID)
        for s in range(samples):
            writer.write(
                "tokens",
                token_table(
                    s,
                    range(patches),
                    range(patches),
                    lambda p: f"{p // GRID},{p % GRID}",
                    generated=False,
                    stack="decoder",
                    rows=grid_rows,
                    cols=grid_cols,
                ),
            )
        writer.write(
            "samples",
            pa.table(
                {
                    "sample": np.arange(samples, dtype=np.int32),
                    "text": pa.nulls(samples, pa.string()),
                    "n_tokens": np.full(samples, patches, np.int32),
                    "n_generated": np.zeros(samples, np.int32),
                    "generated": pa.nulls(samples, pa.string()),
                    "class": [str(c) for c in np.concatenate([classes, classes])],
                    "branch": ["cond"] * images + ["uncond"] * images,
                    "pair": [str(i) for i in range(images)] * 2,
                },
                schema=schemas["samples"],
            ),
        )
        timesteps = np.linspace(999, 0, steps)
        writer.write(
            "steps",
            pa.table(
                {"step": np.arange(steps, dtype=np.int32), "timestep": timesteps, "sigma": timesteps / 999},
                schema=STEPS,
            ),
        )
        path = writer.publish()
    return Run(path)


def _at_step(table: pa.Table, step: int) -> pa.Table:
    """`table` (written by `_router_call` at step 0) moved to sampler step `step`."""
    index = table.schema.get_field_index("step")
    return table.set_column(index, table.schema.field(index), pa.array(np.full(len(table), step, np.int32)))


def _images(pixels: np.ndarray, step: int) -> pa.Table:
    n, height, width = pixels.shape
    return pa.table(
        {
            "sample": np.arange(n, dtype=np.int32),
            "step": np.full(n, step, np.int32),
            "height": np.full(n, height, np.int32),
            "width": np.full(n, width, np.int32),
            "pixels": list(np.clip(pixels, 0, 1).reshape(n, -1)),
        },
        schema=IMAGES,
    )


def child(store: Path, runs: dict[str, str]) -> None:
    """Visit every page on each run in one AppTest session; print one JSON line of timings and memory."""
    from streamlit.testing.v1 import AppTest

    from routescope.dashboard import ENTRY_SCRIPT, STORE_ENV, state

    os.environ[STORE_ENV] = str(store)
    start = time.perf_counter()
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=900).run()
    timings: dict[str, dict[str, float]] = {"(app start)": {"first": time.perf_counter() - start}}
    for kind, name in runs.items():
        for page in PAGES[kind]:
            at.session_state[state.CURRENT_RUN] = name
            begin = time.perf_counter()
            at.switch_page(f"app_pages/{page}.py").run()
            first = time.perf_counter() - begin
            if at.exception:
                raise SystemExit(f"{page} on {name}: {at.exception[0].value}")
            reruns = []
            for _ in range(3):
                begin = time.perf_counter()
                at.run()
                reruns.append(time.perf_counter() - begin)
            charts = len(at.get("plotly_chart"))
            timings[f"{page} ({kind})"] = {
                "first": first,
                "cached": statistics.median(reruns),
                "charts": charts,
            }
            print(
                f"  {page:12s} on {kind:9s}: first {first:6.2f} s, cached {statistics.median(reruns):.2f} s",
                flush=True,
            )
    rss = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"timings": timings, "rss_mb": rss / 1024, "peak_rss_mb": peak / 1024}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--tokens", type=int, default=1_000_000, help="tokens of the synthetic text run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.store, json.loads(args.runs))
        return
    text, _ = text_run(args.store, args.tokens)
    dit = diffusion_run(args.store)
    for run in (text, dit):
        rows = run.manifest["rows"]
        print(
            f"{run.name}: {rows['tokens']:,} tokens, {rows['decisions']:,} decisions, "
            f"{rows['assignments']:,} assignments",
            flush=True,
        )
    runs = {"text": text.name, "diffusion": dit.name}
    command = [sys.executable, __file__, "--child", "--store", str(args.store), "--runs", json.dumps(runs)]
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    print(finished.stdout.rsplit("\n", 2)[0], flush=True)
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    load = os.getloadavg()[0]
    print()
    print(f"| page (run) | first visit s | cached s (≤ {TARGET_CACHED_S:g}) | charts |")
    print("|---|---:|---:|---:|")
    for page, t in result["timings"].items():
        cached = f"{t['cached']:.2f}" if "cached" in t else ""
        flag = " ✗" if t.get("cached", 0) > TARGET_CACHED_S else ""
        print(f"| {page} | {t['first']:.2f} | {cached}{flag} | {t.get('charts', '')} |")
    print(
        f"\napp process RSS {result['rss_mb']:.0f} MB after all visits, peak {result['peak_rss_mb']:.0f} MB; "
        f"load average {load:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
