"""Cost of `record(expert_stats=True)` and `record(token_loss=True)` over a plain `record()` (issue 17).

Models: the bundled tiny Mixtral (4 layers, hidden 256, 8 experts, top-2) and the bundled moe-lm
(Qwen2-MoE: 4 layers, hidden 160, 16 experts, top-2, a shared expert), CPU, float32, 2 threads. Input: a
batch of 8 × 256 random token ids. Variants run round-robin (the order rotates every round) into fresh
run names of a temporary store; the table gives the median over rounds and the ratio to plain `record()`.
Targets (issue 17): expert_stats ≤ 1.5 (one more evaluation of the chosen experts), token_loss ≤ 1.05.
This prints measurements; it is not a test and asserts nothing.

    .venv/bin/python benchmarks/record_statistics.py [--rounds N] [--quick]
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

TARGETS = {"expert_stats": 1.5, "token_loss": 1.05}
VARIANTS: dict[str, dict[str, bool]] = {
    "record": {},
    "expert_stats": {"expert_stats": True},
    "token_loss": {"token_loss": True},
}


def measure(spec: str, rounds: int, batch: int, seq_len: int, vocab: int) -> dict[str, list[float]]:
    """Seconds per round of each variant on one bundled model."""
    model = routescope.load_model(spec)
    ids = torch.randint(4, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0)).tolist()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="routescope-bench-") as tmp:
        store = routescope.Store(Path(tmp) / "store")
        counter = iter(range(1_000_000))

        def variant(options: dict[str, bool]) -> Callable[[], None]:
            def run() -> None:
                routescope.record(
                    model,
                    ids,
                    store=store,
                    name=f"r{next(counter)}",
                    batch_size=batch,
                    progress=False,
                    **options,
                )

            return run

        runs = {name: variant(options) for name, options in VARIANTS.items()}
        for run in runs.values():  # warm-up
            run()
        names = list(runs)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="3 rounds: a smoke run")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    load_before = os.getloadavg()[0]
    for spec, vocab in (("bundled:tiny-mixtral", 260), ("bundled:moe-lm", 200)):
        times = measure(spec, rounds, batch=8, seq_len=256, vocab=vocab)
        base = statistics.median(times["record"])
        print(f"{spec}: 8×256 tokens, {rounds} rounds (median)")
        for name in VARIANTS:
            median = statistics.median(times[name])
            target = TARGETS.get(name)
            verdict = (
                ""
                if target is None
                else f"  target ≤ {target:.2f}: {'MET' if median / base <= target else 'MISSED'}"
            )
            print(f"  {name:<14}{median * 1e3:>9.1f} ms  ratio {median / base:.3f}{verdict}")
    busy = load_before >= 0.5 * (os.cpu_count() or 1)
    note = ": other work was running, so treat these numbers as unreliable" if busy else ""
    print(f"1-min load average before the run: {load_before:.2f}{note}")


if __name__ == "__main__":
    main()
