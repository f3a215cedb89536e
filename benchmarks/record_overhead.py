"""Wall-time overhead of `routescope.record()` over a bare forward pass of the same model on the same tokens.

Model: the bundled tiny Mixtral (`build_tiny_mixtral()`: 4 layers, hidden 256, 8 experts, top-2), CPU,
float32, 2 threads. Input: a batch of 8 × 512 random token ids (4..259), one batch (`--batches N` records
N such batches in one call, against N bare forward passes, to show the per-batch cost without the fixed
per-call cost).

Variants, timed round-robin in one process (the order rotates every round) so that background load on a
shared machine hits them alike; the table gives the median over the rounds:

* bare forward: `model(input_ids=..., attention_mask=...)` under `torch.no_grad()`;
* capture nnsight / capture hooks: `hooks.capture.Capturer.forward` only (router outputs to CPU, no
  decoding, no writing; the Capturer is built once, as `record` builds it once per call);
* record nnsight / record hooks: the WHOLE `routescope.record(...)` call (tokenisation, router discovery
  dry run, capture, decoding, Arrow tables, Parquet, publishing), each round into a fresh run name of a
  temporary store.

`ratio` = median(variant) ÷ median(bare); `paired` = median over rounds of variant ÷ bare of the same
round (less sensitive to slow drifts of machine load). Target: record ÷ bare ≤ 1.10 for both engines.
This prints measurements; it is not a test and asserts nothing.

    .venv/bin/python benchmarks/record_overhead.py [--rounds N] [--quick] [--batches N] [--no-tokenizer]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

import routescope
from routescope.hooks.capture import Capturer
from routescope.hooks.routers import describe_routers
from routescope.models.tiny_mixtral import build_tiny_mixtral

TARGET = 1.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="3 rounds: a smoke run (indicative verdict)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per batch (default 8)")
    parser.add_argument(
        "--batches",
        type=int,
        default=1,
        help="batches per record call (default 1); bare forward runs the same batches one after another",
    )
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per sequence (default 512)")
    parser.add_argument(
        "--no-tokenizer",
        action="store_true",
        help="record without the byte tokenizer (no token texts are decoded)",
    )
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    model, tokenizer = build_tiny_mixtral()
    model.eval()
    if args.no_tokenizer:
        tokenizer = None
    generator = torch.Generator().manual_seed(0)
    all_ids = torch.randint(4, 260, (args.batches * args.batch, args.seq_len), generator=generator)
    token_lists = all_ids.tolist()
    chunks = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)} for ids in all_ids.split(args.batch)]

    probe = {"input_ids": all_ids[:1, :2], "attention_mask": torch.ones_like(all_ids[:1, :2])}
    paths = [spec.path for spec in describe_routers(model, lambda: model(**probe))]
    capturers = {engine: Capturer(model, paths, engine, tokenizer) for engine in ("nnsight", "hooks")}

    with tempfile.TemporaryDirectory(prefix="routescope-bench-") as tmp:
        store = routescope.Store(Path(tmp) / "store")
        counter = iter(range(1_000_000))

        def bare() -> None:
            with torch.no_grad():
                for chunk in chunks:
                    model(**chunk)

        def capture(engine: str) -> Callable[[], None]:
            def run() -> None:
                for chunk in chunks:
                    capturers[engine].forward(dict(chunk))

            return run

        def record(engine: str) -> Callable[[], None]:
            def run() -> None:
                routescope.record(
                    model,
                    token_lists,
                    store=store,
                    name=f"{engine}-{next(counter)}",
                    engine=engine,
                    batch_size=args.batch,
                    progress=False,
                    tokenizer=tokenizer,
                )

            return run

        variants: dict[str, Callable[[], None]] = {
            "bare forward": bare,
            "capture nnsight": capture("nnsight"),
            "capture hooks": capture("hooks"),
            "record nnsight": record("nnsight"),
            "record hooks": record("hooks"),
        }
        names = list(variants)
        load_before = os.getloadavg()[0]
        for fn in variants.values():  # warm-up: lazy imports, nnsight wrapper, allocator, page cache
            fn()
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                start = time.perf_counter()
                variants[name]()
                times[name].append(time.perf_counter() - start)

    bare_times = times["bare forward"]
    bare_median = statistics.median(bare_times)
    print(
        f"record overhead: tiny Mixtral, {args.batches} batch(es) of {args.batch}×{args.seq_len} tokens, "
        f"tokenizer={'no' if tokenizer is None else 'yes'}, torch threads 2, {rounds} rounds (median)"
    )
    print(f"{'variant':<18}{'median ms':>11}{'min ms':>9}{'ratio':>8}{'paired':>8}")
    ratios = {}
    for name in names:
        median = statistics.median(times[name])
        ratios[name] = median / bare_median
        paired = statistics.median(t / b for t, b in zip(times[name], bare_times, strict=True))
        fastest = min(times[name])
        print(f"{name:<18}{median * 1e3:>11.1f}{fastest * 1e3:>9.1f}{ratios[name]:>8.3f}{paired:>8.3f}")
    medians = {name: statistics.median(times[name]) * 1e3 for name in names}
    for engine in ("nnsight", "hooks"):
        capture_ms = medians[f"capture {engine}"] - medians["bare forward"]
        rest_ms = medians[f"record {engine}"] - medians[f"capture {engine}"]
        print(
            f"{engine}: capture − bare {capture_ms:+.1f} ms; record − capture (setup, dry run, decoding, "
            f"writing) {rest_ms:+.1f} ms"
        )
    busy = load_before >= 0.5 * (os.cpu_count() or 1)
    note = ": other work was running, so treat these numbers as unreliable" if busy else ""
    print(f"1-min load average before the run: {load_before:.2f}{note}")
    for engine in ("nnsight", "hooks"):
        ratio = ratios[f"record {engine}"]
        verdict = "MET" if ratio <= TARGET else "MISSED"
        print(f"target record {engine} ÷ bare ≤ {TARGET:.2f}: {ratio:.3f} → {verdict}")


if __name__ == "__main__":
    main()
