"""Bytes on disk per routing decision of a recorded run.

Records the bundled tiny Mixtral (`build_tiny_mixtral()`: 4 layers, 8 experts, top-2) on 16 × 512 random
token ids (4..259) with `routescope.record()`, once without and once with `probs=True`, and reports

    bytes per decision = (size of assignments.parquet + decisions.parquet) ÷ rows of decisions

(one decision row = one token × router × step × call), plus each table's share and the other tables'
sizes for reference. Target: ≤ 16 B per decision for a run without probs. `--candidates` also re-encodes
the two fact tables in memory with candidate Parquet settings (float encodings, float16 or rounded
statistics, zstd level) and reports their B/decision and whether DuckDB reads the result. The numbers are
deterministic for a given seed and library versions (no timing); this prints measurements, asserts
nothing.

    .venv/bin/python benchmarks/bytes_per_decision.py [--batch N] [--seq-len N] [--max-new-tokens N]
        [--candidates] [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

import routescope
from routescope.models.tiny_mixtral import build_tiny_mixtral

TARGET = 16.0
TABLES = ("assignments", "decisions", "tokens", "samples", "steps")
FLOATS = ("weight", "entropy", "margin", "max_prob")
STATS = ("entropy", "margin", "max_prob")


def measure(run_path: Path) -> tuple[int, dict[str, int]]:
    """Decision rows of a run and the size in bytes of each table's file."""
    rows = pq.ParquetFile(run_path / "decisions.parquet").metadata.num_rows
    manifest = json.loads((run_path / "manifest.json").read_text(encoding="utf-8"))
    if manifest["rows"]["decisions"] != rows:
        raise RuntimeError(f"manifest says {manifest['rows']['decisions']} decisions, the file {rows}")
    return rows, {table: (run_path / f"{table}.parquet").stat().st_size for table in TABLES}


def _round_mantissa(column: pa.ChunkedArray, bits: int) -> pa.Array:
    """float32 values rounded to `bits` mantissa bits (still float32: the low bytes become zero)."""
    raw = column.to_numpy().astype(np.float32).view(np.uint32)
    drop = np.uint32(23 - bits)
    rounded = ((raw + (np.uint32(1) << (drop - np.uint32(1)))) >> drop) << drop
    return pa.array(rounded.astype(np.uint32).view(np.float32))


def _stats_as(table: pa.Table, how: str) -> pa.Table:
    """The decisions table with entropy/margin/max_prob as float16 (`f16`) or rounded float32 (`rN`)."""
    for name in STATS:
        index = table.schema.get_field_index(name)
        if how == "f16":
            values, field = pc.cast(table[name], pa.float16()), pa.field(name, pa.float16(), nullable=False)
        else:
            values, field = _round_mantissa(table[name], int(how[1:])), table.schema.field(index)
        table = table.set_column(index, field, values)
    return table


def _options(schema: pa.Schema, level: int, encode: bool) -> dict[str, Any]:
    """Parquet writer options: zstd `level`; with `encode`, floats without dictionary (BYTE_STREAM_SPLIT
    for float32, PLAIN for float16, which DuckDB cannot read split) and DELTA_BINARY_PACKED positions."""
    options: dict[str, Any] = {"compression": "zstd", "compression_level": level}
    if not encode:
        return options
    encodings = {
        name: "BYTE_STREAM_SPLIT" if schema.field(name).type == pa.float32() else "PLAIN"
        for name in schema.names
        if name in FLOATS
    }
    encodings["position"] = "DELTA_BINARY_PACKED"
    if "probs" in schema.names:
        encodings["probs.list.element"] = "BYTE_STREAM_SPLIT"
    options["use_dictionary"] = [n for n in schema.names if n not in encodings and n != "probs"]
    options["column_encoding"] = encodings
    return options


def _encoded(table: pa.Table, options: dict[str, Any]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=max(table.num_rows, 1), **options)
    return sink.getvalue()


def _duckdb_reads(data: bytes, folder: Path) -> str:
    try:
        import duckdb
    except ImportError:
        return "n/a"
    path = folder / "candidate.parquet"
    path.write_bytes(data)
    try:
        duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()
    except duckdb.Error:
        return "no"
    return "yes"


def candidates(run_paths: dict[bool, Path], folder: Path) -> None:
    """Re-encode the fact tables of both runs in memory with candidate settings and print B/decision."""
    tables = {
        probs: {t: pq.read_table(path / f"{t}.parquet") for t in ("assignments", "decisions")}
        for probs, path in run_paths.items()
    }
    variants = [
        ("zstd 3, dictionaries everywhere (old default)", 3, False, None),
        ("zstd 19, dictionaries", 19, False, None),
        ("floats BSS + position DELTA, zstd 3 (lossless)", 3, True, None),
        ("floats BSS + position DELTA, zstd 9 (lossless)", 9, True, None),
        ("  + stats float16 (PLAIN), zstd 3", 3, True, "f16"),
        ("  + stats float32 rounded to 13 mantissa bits", 3, True, "r13"),
        ("  + stats float32 rounded to 10 mantissa bits", 3, True, "r10"),
    ]
    print()
    print("candidate encodings (fact tables re-encoded in memory, one row group each; weights float32)")
    print(f"{'variant':<48}{'A':>7}{'D':>7}{'A+D':>7}{'A+D probs':>11}{'DuckDB':>8}")
    for label, level, encode, stats in variants:
        cells = []
        duck = ""
        for probs in (False, True):
            assignments = tables[probs]["assignments"]
            decisions = tables[probs]["decisions"]
            if stats is not None:
                decisions = _stats_as(decisions, stats)
            a = _encoded(assignments, _options(assignments.schema, level, encode))
            d = _encoded(decisions, _options(decisions.schema, level, encode))
            rows = decisions.num_rows
            cells.append((len(a) / rows, len(d) / rows))
            if probs:
                duck = _duckdb_reads(d, folder)
        (a_b, d_b), (a_p, d_p) = cells
        print(f"{label:<48}{a_b:>7.2f}{d_b:>7.2f}{a_b + d_b:>7.2f}{a_p + d_p:>11.2f}{duck:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="sequences (default 16)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per sequence (default 512)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=0, help="generate and record N new tokens per sequence"
    )
    parser.add_argument("--candidates", action="store_true", help="also try candidate Parquet settings")
    parser.add_argument("--quick", action="store_true", help="4 sequences: a smoke run")
    args = parser.parse_args()
    batch = 4 if args.quick else args.batch

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    model, tokenizer = build_tiny_mixtral()
    generator = torch.Generator().manual_seed(0)
    token_lists = torch.randint(4, 260, (batch, args.seq_len), generator=generator).tolist()

    results = {}
    with tempfile.TemporaryDirectory(prefix="routescope-bytes-") as tmp:
        runs = {}
        for probs in (False, True):
            run = routescope.record(
                model,
                token_lists,
                store=Path(tmp) / "store",
                name=f"probs-{probs}",
                probs=probs,
                batch_size=8,
                progress=False,
                tokenizer=tokenizer,
                max_new_tokens=args.max_new_tokens,
            )
            runs[probs] = run.path
            results[probs] = measure(run.path)

        n_routers = len(model.model.layers)
        generating = f" + {args.max_new_tokens} generated" if args.max_new_tokens else ""
        print(
            f"bytes per decision: tiny Mixtral, {batch}×{args.seq_len} tokens{generating}, "
            f"{n_routers} routers, top-2"
        )
        print(f"{'table':<24}{'bytes':>12}{'B/decision':>12}{'bytes':>12}{'B/decision':>12}")
        print(f"{'':<24}{'-- probs=False --':>24}{'-- probs=True --':>24}")
        (rows, sizes), (rows_p, sizes_p) = results[False], results[True]
        for table in TABLES:
            print(
                f"{table + '.parquet':<24}{sizes[table]:>12,}{sizes[table] / rows:>12.2f}"
                f"{sizes_p[table]:>12,}{sizes_p[table] / rows_p:>12.2f}"
            )
        fact, fact_p = (s["assignments"] + s["decisions"] for s in (sizes, sizes_p))
        print(
            f"{'assignments+decisions':<24}{fact:>12,}{fact / rows:>12.2f}"
            f"{fact_p:>12,}{fact_p / rows_p:>12.2f}"
        )
        print(f"decision rows: {rows:,} (probs=False), {rows_p:,} (probs=True)")
        per_decision = fact / rows
        verdict = "MET" if per_decision <= TARGET else "MISSED"
        print(f"target (probs=False) ≤ {TARGET:.0f} B/decision: {per_decision:.2f} → {verdict}")
        if args.candidates:
            candidates(runs, Path(tmp))


if __name__ == "__main__":
    main()
