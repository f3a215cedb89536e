"""The standard analysis report on a 100 M-assignment-row run: wall time and peak RSS, DuckDB against pandas.

Issue 4 (performance): on a synthetic run of 100 M assignment rows (8 layers × 64 experts × top-4 ×
3.125 M tokens) the standard report — balance, specialization by domain and by token id, uncertainty,
and co-activation of every layer — must take ≤ 30 s and ≤ 2 GB peak RSS on a 2-core machine, and be
≥ 5× faster than the straightforward pandas implementation of the same report (`_pandas_report.py`)
measured the same way. Vocabulary specialization (the top-1 expert per token id, OLMoE's token-id view)
runs after the report in the same process, timed on its own line and outside the report's figures.

1. The run is generated once through the real writer (`_synthetic_run.py`; about 2 minutes, 630 MB on
   disk) and cached in `--store`; later invocations reuse it.
2. Each engine runs the whole report in a fresh Python process (`--child`), so interpreter start,
   imports and memory are its own. wall = the child's lifetime (start-up included) less what it does
   after the report (the extra analysis, writing its result tables); CPU (user + system) and peak RSS
   (`ru_maxrss`) are the child's own `getrusage` right after the report. Every analysis' wall and CPU
   time is printed too.
3. Both children write their tables; they are compared (integer columns exactly, floats to 1e-9
   relative) and any difference is printed and makes the exit status 1.

The machine is shared, so the load average is printed next to each figure (the 1-minute load average,
mean of before and after the child, which counts the child's own busy threads too): under load, wall
times grow and CPU times are the steadier comparison. pandas at 100 M rows needs about 9 GB;
`--pandas-rows N` runs the baseline on an N-row run instead (DuckDB runs on that run too, for the
ratio), and `--pandas-rows 0` skips it. This prints measurements; it is not a test.

    .venv/bin/python benchmarks/analysis_scale.py [--rows N] [--store DIR] [--pandas-rows N]
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
from collections.abc import Callable
from functools import partial
from pathlib import Path

import _pandas_report
import numpy as np
import pandas as pd
from _synthetic_run import Shape, synthetic_run

from routescope.store import Run

TARGET_WALL_S = 30.0
TARGET_RSS_MB = 2048.0
TARGET_RATIO = 5.0
DEFAULT_STORE = Path(tempfile.gettempdir()) / "routescope-analysis-scale"
EXTRA = "vocabulary"
"""The analysis run after the report, outside its figures."""
KEY_COLUMNS = ("layer", "expert", "domain", "token_id", "expert_a", "expert_b")
"""Columns that identify a row of a result table; both engines' tables are sorted by them to compare."""


def duckdb_report(run: Run) -> dict[str, Callable[[], pd.DataFrame]]:
    """The standard report through `routescope.analysis` (table name → the call that computes it), then
    the extra analysis `EXTRA`."""
    from routescope import analysis

    calls: dict[str, Callable[[], pd.DataFrame]] = {
        "balance": lambda: analysis.balance(run),
        "specialization_domain": lambda: analysis.specialization(run, "domain"),
        "specialization_token_id": lambda: analysis.specialization(run, "token_id"),
        "uncertainty": lambda: analysis.uncertainty(run),
    }
    for layer in sorted({int(r["layer"]) for r in run.routers}):
        calls[f"coactivation_{layer}"] = partial(analysis.coactivation, run, layer)
    calls[EXTRA] = lambda: analysis.vocabulary_specialization(run)
    return calls


def child(engine: str, run_path: Path, out: Path) -> None:
    """Run one engine's report, print its timings as one JSON line, then write its tables to `out`."""
    run = Run(run_path)
    calls = duckdb_report(run) if engine == "duckdb" else _pandas_report.report(run)
    start = time.perf_counter()
    tables: dict[str, pd.DataFrame] = {}
    timings: dict[str, dict[str, float]] = {}
    for name, call in calls.items():
        if name == EXTRA:
            report = time.perf_counter() - start
            cpu, rss_mb = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu0, wall0 = time.process_time(), time.perf_counter()
        tables[name] = call()
        timings[name] = {"wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0}
    extra = timings[EXTRA]["wall"]
    written = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.reset_index(drop=True).to_parquet(out / f"{name}.parquet")
    writing = time.perf_counter() - written
    summary = {"report": report, "cpu": cpu, "rss_mb": rss_mb, "after": extra + writing, "timings": timings}
    sys.stdout.write(json.dumps(summary) + "\n")


def measure(engine: str, run_path: Path, out: Path) -> dict:
    """Run `engine`'s report in a child: wall = the child's lifetime less what it did after the report (the
    extra analysis, writing its tables); CPU and peak RSS as the child read them from the kernel
    (`getrusage`) right after the report."""
    command = [sys.executable, __file__, "--child", engine, "--run", str(run_path), "--out", str(out)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - start
    lines = finished.stdout.splitlines()
    if finished.returncode != 0 or not lines:
        raise SystemExit(f"{engine} child failed with status {finished.returncode}")
    result = json.loads(lines[-1])
    result.update(wall=wall - result["after"], load=(load + os.getloadavg()[0]) / 2)
    return result


def compare(left: Path, right: Path) -> list[str]:
    """Differences between two folders of result tables (empty when every table agrees)."""
    problems = []
    for path in sorted(left.glob("*.parquet")):
        a, b = pd.read_parquet(path), pd.read_parquet(right / path.name)
        if len(a) != len(b):
            problems.append(f"{path.stem}: {len(a)} rows against {len(b)}")
            continue
        if sorted(a.columns) != sorted(b.columns):
            problems.append(f"{path.stem}: columns {sorted(a.columns)} against {sorted(b.columns)}")
            continue
        keys = [c for c in KEY_COLUMNS if c in a.columns]
        a, b = a.sort_values(keys, ignore_index=True), b.sort_values(keys, ignore_index=True)
        problems += [f"{path.stem}.{c} differs" for c in a.columns if not _same(a[c], b[c])]
    return problems


def _same(x: pd.Series, y: pd.Series) -> bool:
    if pd.api.types.is_float_dtype(x) or pd.api.types.is_float_dtype(y):
        return bool(np.allclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-9, atol=0, equal_nan=True))
    if pd.api.types.is_integer_dtype(x) and pd.api.types.is_integer_dtype(y):
        return bool(np.array_equal(x.to_numpy(np.int64), y.to_numpy(np.int64)))
    return x.astype(str).tolist() == y.astype(str).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000, help="assignment rows (default 100 M)")
    parser.add_argument(
        "--store", type=Path, default=DEFAULT_STORE, help=f"run cache folder (default {DEFAULT_STORE})"
    )
    parser.add_argument(
        "--pandas-rows",
        type=int,
        default=None,
        help="rows of the run the pandas baseline runs on (default: --rows; 0 skips pandas)",
    )
    parser.add_argument("--child", choices=["duckdb", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.run, args.out)
        return

    pandas_rows = args.rows if args.pandas_rows is None else args.pandas_rows
    sizes = sorted({args.rows, pandas_rows} - {0}, reverse=True)
    runs = {}
    for rows in sizes:
        print(f"run of {rows:,} assignment rows in {args.store}", flush=True)
        runs[rows] = synthetic_run(args.store, Shape(rows=rows), progress=lambda m: print(m, flush=True))
    results: list[tuple[str, int, dict]] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="analysis-scale-") as scratch:
        for rows in sizes:
            engines = ["duckdb", "pandas"] if rows == pandas_rows else ["duckdb"]
            for engine in engines:
                print(f"{engine} report on {rows:,} rows ...", flush=True)
                result = measure(engine, runs[rows].path, Path(scratch) / f"{engine}-{rows}")
                results.append((engine, rows, result))
                _print_timings(result)
            if len(engines) == 2:
                found = compare(Path(scratch) / f"duckdb-{rows}", Path(scratch) / f"pandas-{rows}")
                problems += [f"{rows:,} rows: {p}" for p in found]
                print(f"  results agree: {'yes' if not found else 'NO: ' + '; '.join(found)}", flush=True)
    _print_table(results)
    if problems:
        sys.exit(1)


def _print_timings(result: dict) -> None:
    startup = result["wall"] - result["report"]
    print(f"  report {result['report']:.1f} s (+ {startup:.1f} s start-up):", flush=True)
    for name, t in result["timings"].items():
        note = "  (extra, not in the report)" if name == EXTRA else ""
        print(f"    {name:26s} wall {t['wall']:7.2f} s  cpu {t['cpu']:7.2f} s{note}", flush=True)


def _print_table(results: list[tuple[str, int, dict]]) -> None:
    duckdb = {rows: r for engine, rows, r in results if engine == "duckdb"}
    print()
    print("| engine | rows | wall s | report s | CPU s | peak RSS MB | load | wall ratio | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for engine, rows, r in results:
        ratios = ["", ""]
        if engine == "pandas":
            ratios = [f"{r[k] / duckdb[rows][k]:.1f}×" for k in ("wall", "cpu")]
        print(
            f"| {engine} | {rows:,} | {r['wall']:.1f} | {r['report']:.1f} | {r['cpu']:.1f} | "
            f"{r['rss_mb']:,.0f} | {r['load']:.1f} | {ratios[0]} | {ratios[1]} |"
        )
    for rows, r in duckdb.items():
        meets = r["wall"] <= TARGET_WALL_S and r["rss_mb"] <= TARGET_RSS_MB
        print(
            f"duckdb at {rows:,} rows {'meets' if meets else 'misses'} the target "
            f"(≤ {TARGET_WALL_S:.0f} s wall, ≤ {TARGET_RSS_MB:,.0f} MB peak RSS)"
        )
    for engine, rows, r in results:
        if engine == "pandas":
            ratio = r["wall"] / duckdb[rows]["wall"]
            verdict = "meets" if ratio >= TARGET_RATIO else "misses"
            target = f"the ≥ {TARGET_RATIO:.0f}× target"
            print(f"pandas ÷ duckdb at {rows:,} rows: {ratio:.1f}× ({verdict} {target})")
    print(f"cores: {os.cpu_count()}; load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
