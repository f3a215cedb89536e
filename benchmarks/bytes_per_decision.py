"""Bytes on disk per routing decision of a recorded run.

Records the bundled tiny Mixtral (`build_tiny_mixtral()`: 4 layers, 8 experts, top-2) on 16 × 512 random
token ids (4..259) with `routescope.record()`, once without and once with `probs=True`, and reports

    bytes per decision = (size of assignments.parquet + decisions.parquet) ÷ rows of decisions

(one decision row = one token × router × step × call), plus each table's share and the other tables'
sizes for reference. Target: ≤ 16 B per decision for a run without probs. The numbers are deterministic
for a given seed and library versions (no timing); this prints measurements and asserts nothing.

    .venv/bin/python benchmarks/bytes_per_decision.py [--batch N] [--seq-len N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import routescope
import torch
from routescope.models.tiny_mixtral import build_tiny_mixtral

TARGET = 16.0
TABLES = ("assignments", "decisions", "tokens", "samples", "steps")


def measure(run_path: Path) -> tuple[int, dict[str, int]]:
    """Decision rows of a run and the size in bytes of each table's file."""
    rows = pq.ParquetFile(run_path / "decisions.parquet").metadata.num_rows
    manifest = json.loads((run_path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"]["decisions"] == rows
    return rows, {table: (run_path / f"{table}.parquet").stat().st_size for table in TABLES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="sequences (default 16)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per sequence (default 512)")
    parser.add_argument("--quick", action="store_true", help="4 × 512 tokens: a smoke run")
    args = parser.parse_args()
    batch = 4 if args.quick else args.batch

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    model, tokenizer = build_tiny_mixtral()
    generator = torch.Generator().manual_seed(0)
    token_lists = torch.randint(4, 260, (batch, args.seq_len), generator=generator).tolist()

    results = {}
    with tempfile.TemporaryDirectory(prefix="routescope-bytes-") as tmp:
        for probs in (False, True):
            run = routescope.record(model, token_lists, store=Path(tmp) / "store", name=f"probs-{probs}",
                                    probs=probs, batch_size=8, progress=False, tokenizer=tokenizer)
            results[probs] = measure(run.path)

    n_routers = len(model.model.layers)
    print(f"bytes per decision: tiny Mixtral, {batch}×{args.seq_len} tokens, {n_routers} routers, top-2")
    print(f"{'table':<24}{'bytes':>12}{'B/decision':>12}{'bytes':>12}{'B/decision':>12}")
    print(f"{'':<24}{'-- probs=False --':>24}{'-- probs=True --':>24}")
    (rows, sizes), (rows_p, sizes_p) = results[False], results[True]
    for table in TABLES:
        print(f"{table + '.parquet':<24}{sizes[table]:>12,}{sizes[table] / rows:>12.2f}"
              f"{sizes_p[table]:>12,}{sizes_p[table] / rows_p:>12.2f}")
    fact, fact_p = (s["assignments"] + s["decisions"] for s in (sizes, sizes_p))
    print(f"{'assignments+decisions':<24}{fact:>12,}{fact / rows:>12.2f}"
          f"{fact_p:>12,}{fact_p / rows_p:>12.2f}")
    print(f"decision rows: {rows:,} (probs=False), {rows_p:,} (probs=True)")
    per_decision = fact / rows
    verdict = "MET" if per_decision <= TARGET else "MISSED"
    print(f"target (probs=False) ≤ {TARGET:.0f} B/decision: {per_decision:.2f} → {verdict}")


if __name__ == "__main__":
    main()
