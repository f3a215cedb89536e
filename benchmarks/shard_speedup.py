"""Sharded recording: wall time of n concurrent `routescope record --shard i/n` processes (+ merge) against
one process recording the same inputs, on the bundled LM.

Model and inputs: `bundled:moe-lm` on `bundled:domains` (100 texts, 5 domains) by default. Variants, each
a fresh `python -m routescope` process per recording, so model loading and start-up count as they do for
a user (timed round-robin, median over rounds):

* one process, T threads (T = the machine's cores): the baseline;
* n shard processes at once, T/n threads each, then `routescope merge`: the sharded wall time includes
  the merge.

`speed-up` = baseline ÷ sharded. The merged run's tables are checked against the baseline's (row counts
and the sorted expert column). This prints measurements; it is not a test and asserts nothing.

    .venv/bin/python benchmarks/shard_speedup.py [--shards N] [--rounds R] [--model SPEC] [--dataset SPEC]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from routescope.store import Store

KEYS = ["sample", "step", "router", "call", "position", "rank"]


def _record(
    store: Path, name: str, model: str, dataset: str, threads: int, shard: str | None
) -> subprocess.Popen:
    argv = [sys.executable, "-m", "routescope", "record", model, "--dataset", dataset]
    argv += ["--store", str(store), "--name", name, "--overwrite"]
    if shard:
        argv += ["--shard", shard]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a recording failed:\n{err.decode()}")


def single(store: Path, name: str, model: str, dataset: str, threads: int) -> float:
    start = time.perf_counter()
    _wait([_record(store, name, model, dataset, threads, None)])
    return time.perf_counter() - start


def sharded(store: Path, name: str, model: str, dataset: str, threads: int, shards: int) -> float:
    start = time.perf_counter()
    per_process = max(threads // shards, 1)
    _wait([_record(store, name, model, dataset, per_process, f"{i}/{shards}") for i in range(shards)])
    merge = [
        sys.executable,
        "-m",
        "routescope",
        "merge",
        "--store",
        str(store),
        "--name",
        name,
        "--overwrite",
    ]
    subprocess.run(merge, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads of the baseline")
    parser.add_argument("--model", default="bundled:moe-lm")
    parser.add_argument("--dataset", default="bundled:domains")
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="shard-bench-"))
    times: dict[str, list[float]] = {"single": [], "sharded": []}
    for round_ in range(args.rounds):
        order = ["single", "sharded"] if round_ % 2 == 0 else ["sharded", "single"]
        for variant in order:
            if variant == "single":
                seconds = single(store, "one", args.model, args.dataset, args.threads)
            else:
                seconds = sharded(store, "many", args.model, args.dataset, args.threads, args.shards)
            times[variant].append(seconds)
            print(f"round {round_ + 1} {variant:8s} {seconds:7.2f} s", flush=True)
    runs = Store(store)
    one, many = runs.open("one"), runs.open("many")
    rows_equal = one.manifest["rows"] == many.manifest["rows"]
    experts_equal = np.array_equal(
        one.assignments().sort_values(KEYS)["expert"].to_numpy(),
        many.assignments().sort_values(KEYS)["expert"].to_numpy(),
    )
    base, split = statistics.median(times["single"]), statistics.median(times["sharded"])
    print()
    print(f"model {args.model}, inputs {args.dataset}: {one.manifest['rows']['assignments']} assignment rows")
    print(
        f"cores {os.cpu_count()}, baseline threads {args.threads}, {args.shards} shards × "
        f"{max(args.threads // args.shards, 1)} threads"
    )
    print(f"| variant | median wall s (of {args.rounds}) |")
    print("|---|---|")
    print(f"| 1 process | {base:.2f} |")
    print(f"| {args.shards} shard processes + merge | {split:.2f} |")
    print(f"speed-up {base / split:.2f}×; rows equal: {rows_equal}; experts equal: {experts_equal}")


if __name__ == "__main__":
    main()
