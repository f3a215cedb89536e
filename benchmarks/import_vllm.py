"""Importing a vLLM routed-experts JSONL against reading the same file with pyarrow's JSON reader.

Writes a synthetic vLLM trace (`prompt_token_ids`, empty `output_token_ids`, `routed_experts`
`[tokens][48 layers][top-8 of 128]`, 512 tokens per request; default 10 M decisions = token × layer),
then, each in a fresh subprocess so peak RSS is its own:

- baseline: `pyarrow.json.read_json(path)` into one table (what "reading the file" costs at best);
- import: `routescope.importers.import_trace("vllm", [path], ...)` — parse in 16 MB blocks (the next one
  in a thread), check, write the run's Parquet tables (assignments: 8 rows per decision) and publish.

It prints wall seconds, peak RSS above the process's size after its imports, and the speed ratio
pyarrow_seconds / import_seconds (target ≥ 0.5), and asserts nothing. Memory of the import is bounded by
a block (plus the writer's row groups), not by the file; pyarrow's read_json holds the whole table.

    .venv/bin/python benchmarks/import_vllm.py [--decisions N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAYERS, TOP_K, EXPERTS, TOKENS_PER_REQUEST = 48, 8, 128, 512


def write_trace(path: Path, decisions: int, seed: int = 0) -> int:
    """A vLLM JSONL of about `decisions` token × layer decisions; returns the tokens written."""
    rng = np.random.default_rng(seed)
    tokens = max(1, decisions // LAYERS)
    with path.open("w", encoding="utf-8") as handle:
        done = 0
        while done < tokens:
            n = min(TOKENS_PER_REQUEST, tokens - done)
            scores = rng.random((n, LAYERS, EXPERTS), dtype=np.float32)
            ids = np.argpartition(scores, -TOP_K, axis=2)[:, :, -TOP_K:]
            record = {"prompt_token_ids": rng.integers(0, 50_000, n).tolist(), "output_token_ids": []}
            record["routed_experts"] = ids.tolist()
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            done += n
    return tokens


def child(mode: str, path: str, store: str) -> None:
    """Run one measurement and print `seconds peak_rss_mb rows` (module imports happen before the clock
    starts: `import routescope.importers` loads torch, a fixed ~3 s a long import does not notice)."""
    import pyarrow.json as pj

    from routescope.importers import import_trace

    base = _rss_mb()
    start = time.perf_counter()
    if mode == "pyarrow":
        rows = pj.read_json(path).num_rows
    else:
        run = import_trace("vllm", [path], store, "bench", n_experts=EXPERTS, overwrite=True)
        rows = run.manifest["rows"]["decisions"]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{seconds:.3f} {peak - base:.0f} {rows}")


def _rss_mb() -> float:
    """Resident memory now (MB): the baseline after imports, so the peak reported is the work's own."""
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    return 0.0


def measure(mode: str, path: Path, store: Path) -> tuple[float, float, int]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path), str(store)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, peak, rows = done.stdout.split()[-3:]
    return float(seconds), float(peak), int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1 M decisions")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    decisions = 1_000_000 if args.quick else args.decisions
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vllm.jsonl"
        start = time.perf_counter()
        tokens = write_trace(path, decisions)
        size = path.stat().st_size / 2**20
        print(
            f"trace: {tokens} tokens × {LAYERS} layers = {tokens * LAYERS} decisions, "
            f"top-{TOP_K} of {EXPERTS}"
        )
        print(f"       {size:.0f} MB JSONL, written in {time.perf_counter() - start:.1f} s")
        base_s, base_mb, _ = measure("pyarrow", path, Path(folder) / "store")
        import_s, import_mb, rows = measure("import", path, Path(folder) / "store")
        print(f"pyarrow.json.read_json : {base_s:7.2f} s  peak RSS +{base_mb:5.0f} MB")
        print(
            f"routescope import vllm : {import_s:7.2f} s  peak RSS +{import_mb:5.0f} MB  ({rows} decisions)"
        )
        print(f"speed ratio (pyarrow s / import s): {base_s / import_s:.2f}  (target ≥ 0.5)")
        print(f"import throughput: {rows / import_s / 1e6:.2f} M decisions/s, {size / import_s:.0f} MB/s")


if __name__ == "__main__":
    main()
