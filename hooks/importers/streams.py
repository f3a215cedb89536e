"""Overlapping parsing with writing: an importer's batches are produced one ahead in a thread.

Parsing a block of JSON (pyarrow) and encoding Parquet (the run writer) both release the GIL, so reading
the next block while the current one is written uses a second core; memory stays two batches.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from queue import Empty, Queue
from typing import Any, TypeVar

T = TypeVar("T")


def prefetch(batches: Iterator[T], depth: int = 1) -> Iterator[T]:
    """`batches`, produced one ahead in a thread: parsing the next block (pyarrow and numpy release the
    GIL) overlaps with writing this one. Memory: `depth` + 1 batches. An error is raised where it happened
    in order, after the batches before it."""
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                queue.put((True, batch))
            queue.put((False, None))
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put((False, exc))

    worker = threading.Thread(target=produce, name="trace-reader", daemon=True)
    worker.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(Empty):
                queue.get_nowait()
            worker.join(timeout=0.05)
