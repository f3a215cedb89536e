"""The placement kinds and the exports on a large synthetic run: wall time and peak RSS of each.

Issue 16 items 4–5: `coverage`, `hot-set`, `placement` (8 devices, 4 replicas), `predictability`,
`drift` (against a second run of the same shape, another seed) and the three exports, on a synthetic run
of `--rows` assignment rows (8 layers × 64 experts × top-4, `_synthetic_run.py`, generated once into
`--store` and reused). Each step runs in this process one after another; its wall time and the process's
peak RSS so far (`ru_maxrss`) are printed. The load kinds aggregate one `GROUP BY layer, expert` in
DuckDB and finish on a [layers × experts] matrix; `predictability` self-joins the top-1 rows of
neighbouring layers (as `transitions`); the id exports stream one step (Megatron) or 64 samples (OLMoE)
per query. This prints measurements; it is not a test.

    .venv/bin/python benchmarks/placement_scale.py [--rows N] [--store DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _synthetic_run import Shape, synthetic_run

from routescope.analysis import compute
from routescope.exporters import export_run


def measure(label: str, step: Callable[[], Any]) -> None:
    start = time.perf_counter()
    step()
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{label:<34} {wall:7.2f} s   peak RSS so far {peak:7.0f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "routescope-bench")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="placement-export-")))
    args = parser.parse_args()
    run = synthetic_run(args.store, Shape(rows=args.rows), progress=lambda m: print(m, flush=True))
    other = synthetic_run(args.store, Shape(rows=args.rows, seed=1), progress=lambda m: print(m, flush=True))
    print(f"run {run.name}: {args.rows:,} assignment rows")
    measure("coverage", lambda: compute("coverage", run))
    measure("hot-set", lambda: compute("hot-set", run))
    measure("placement (8 devices, 4 replicas)", lambda: compute("placement", run, devices=8, replicas=4))
    measure("predictability", lambda: compute("predictability", run))
    measure("drift (second run)", lambda: compute("drift", run, other=other))
    measure(
        "export sglang-eplb", lambda: export_run("sglang-eplb", run, args.out / "eplb.json", overwrite=True)
    )
    for kind, name in (("megatron-jsonl", "router_trace_rank0.jsonl"), ("olmoe-jsonl", "olmoe.jsonl")):
        path = args.out / name
        measure(f"export {kind}", lambda k=kind, p=path: export_run(k, run, p, overwrite=True))
        print(f"{'':<34} {path.stat().st_size / 1e6:7.0f} MB written")


if __name__ == "__main__":
    main()
