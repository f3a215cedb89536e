"""A 1,000-permutation NMI test against the plain NMI on a 100 M-assignment-row run: wall time, CPU, peak RSS.

Issue (permutation tests): `label_nmi(run, "domain")` with its permutation test — sequences shuffled
between each other, the label × expert tables recomputed for every shuffle — must cost ≤ 3× the plain
`label_nmi(run, "domain", n_permutations=None)` on the synthetic 100 M-row run of `analysis_scale.py`
(8 layers × 64 experts × top-4 × 3.125 M tokens, 6,104 sequences), measured the same way.

1. The run is the one `analysis_scale.py` uses (`_synthetic_run.py`; about 2 minutes and 630 MB to
   generate), cached in `--store` (the same default folder, so either benchmark reuses the other's run).
2. Each side runs in a fresh Python process (`--child`), so interpreter start, imports and memory are its
   own; the sides alternate, `--repeats` rounds of both. wall = the child's lifetime (start-up included)
   less writing its result table; CPU (user + system) and peak RSS (`ru_maxrss`) are the child's own
   `getrusage` right after the call. The call's own wall and CPU time are printed too.
3. Both sides write their table; the `nmi` column must be identical (bit for bit) between them, and the
   test must report `n_permutations` = N for every layer. A difference makes the exit status 1.

The machine is shared, so the load average (1-minute, mean of before and after the child, counting the
child's own threads) is printed next to each figure; under load, wall times grow and CPU times are the
steadier comparison. This prints measurements; it is not a test.

    .venv/bin/python benchmarks/permutation_nmi.py [--rows N] [--store DIR] [--permutations N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _synthetic_run import Shape, synthetic_run

TARGET_RATIO = 3.0
DEFAULT_STORE = Path(tempfile.gettempdir()) / "routescope-analysis-scale"
"""The cache folder of `analysis_scale.py`: both benchmarks use the same run."""
LABEL = "domain"
SIDES = ("plain", "test")


def child(side: str, run_path: Path, permutations: int, out: Path) -> None:
    """Compute `label_nmi` (with the test when `side == "test"`), print its timings as one JSON line, then
    write its table to `out`."""
    from routescope import analysis
    from routescope.store import Run

    run = Run(run_path)
    n_permutations = permutations if side == "test" else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    table = analysis.label_nmi(run, LABEL, n_permutations=n_permutations, seed=0)
    call, call_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, rss_mb = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
    written = time.perf_counter()
    table.to_parquet(out)
    after = time.perf_counter() - written
    summary = {"call": call, "call_cpu": call_cpu, "cpu": cpu, "rss_mb": rss_mb, "after": after}
    sys.stdout.write(json.dumps(summary) + "\n")


def measure(side: str, run_path: Path, permutations: int, out: Path) -> dict:
    """Run one side in a child: wall = its lifetime less writing the table; CPU and peak RSS as the child
    read them from the kernel right after the call."""
    command = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--run",
        str(run_path),
        "--permutations",
        str(permutations),
        "--out",
        str(out),
    ]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - start
    lines = finished.stdout.splitlines()
    if finished.returncode != 0 or not lines:
        raise SystemExit(f"{side} child failed with status {finished.returncode}")
    result = json.loads(lines[-1])
    result.update(wall=wall - result["after"], load=(load + os.getloadavg()[0]) / 2)
    return result


def check(plain: Path, test: Path, permutations: int) -> list[str]:
    """Problems with the two sides' tables (empty when the NMIs are identical and the test ran)."""
    a, b = pd.read_parquet(plain), pd.read_parquet(test)
    if a["layer"].tolist() != b["layer"].tolist():
        return [f"layers {a['layer'].tolist()} against {b['layer'].tolist()}"]
    problems = []
    if not np.array_equal(a["nmi"].to_numpy(), b["nmi"].to_numpy()):
        gap = np.abs(a["nmi"].to_numpy() - b["nmi"].to_numpy()).max()
        problems.append(f"nmi differs (largest gap {gap:.3g})")
    if (b["n_permutations"] != permutations).any():
        problems.append(f"the test did not run {permutations:,} permutations on every layer")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000, help="assignment rows (default 100 M)")
    parser.add_argument(
        "--store", type=Path, default=DEFAULT_STORE, help=f"run cache folder (default {DEFAULT_STORE})"
    )
    parser.add_argument("--permutations", type=int, default=1000, help="permutations of the test (1,000)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of both sides (default 2)")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.run, args.permutations, args.out)
        return

    print(f"run of {args.rows:,} assignment rows in {args.store}", flush=True)
    run = synthetic_run(args.store, Shape(rows=args.rows), progress=lambda m: print(m, flush=True))
    rounds: list[dict[str, dict]] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="permutation-nmi-") as scratch:
        for repeat in range(args.repeats):
            results = {}
            for side in SIDES:
                what = f"{args.permutations:,}-permutation test" if side == "test" else "plain NMI"
                print(f"round {repeat + 1}: {what} of {LABEL} ...", flush=True)
                out = Path(scratch) / f"{side}-{repeat}.parquet"
                results[side] = measure(side, run.path, args.permutations, out)
                r = results[side]
                print(
                    f"  label_nmi {r['call']:.1f} s wall, {r['call_cpu']:.1f} s CPU "
                    f"(+ {r['wall'] - r['call']:.1f} s start-up)",
                    flush=True,
                )
            found = check(
                Path(scratch) / f"plain-{repeat}.parquet",
                Path(scratch) / f"test-{repeat}.parquet",
                args.permutations,
            )
            problems += [f"round {repeat + 1}: {p}" for p in found]
            print(
                f"  nmi identical on both sides: {'yes' if not found else 'NO: ' + '; '.join(found)}",
                flush=True,
            )
            rounds.append(results)
    _print_table(rounds, args.rows, args.permutations)
    if problems:
        sys.exit(1)


def _print_table(rounds: list[dict[str, dict]], rows: int, permutations: int) -> None:
    print()
    print(f"label_nmi of {LABEL} on {rows:,} rows; test = {permutations:,} permutations between sequences")
    print("| round | side | wall s | label_nmi s | CPU s | peak RSS MB | load | wall ratio | CPU ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, results in enumerate(rounds, 1):
        plain = results["plain"]
        for side in SIDES:
            r = results[side]
            ratios = ["", ""]
            if side == "test":
                ratios = [f"{r[k] / plain[k]:.2f}×" for k in ("wall", "cpu")]
            print(
                f"| {i} | {side} | {r['wall']:.1f} | {r['call']:.1f} | {r['cpu']:.1f} | {r['rss_mb']:,.0f} | "
                f"{r['load']:.1f} | {ratios[0]} | {ratios[1]} |"
            )
    for i, results in enumerate(rounds, 1):
        ratio = results["test"]["wall"] / results["plain"]["wall"]
        verdict = "meets" if ratio <= TARGET_RATIO else "misses"
        print(f"round {i}: test ÷ plain = {ratio:.2f}× wall ({verdict} the ≤ {TARGET_RATIO:.0f}× target)")
    print(f"cores: {os.cpu_count()}; load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
