"""llama.cpp's moe-trace CSV (`examples/moe-trace`, PR #28544; written to `MOE_TRACE_OUT`): counts only.

One `layer,expert` row per routed activation (a header line `layer,expert` is allowed). The rows say
neither the token nor the rank, so the run keeps counts: one assignment row per layer × expert whose
`weight` is the count (common.CountRows), which `load` and `balance` read; everything per decision
refuses on such a run. The file is read in blocks with pyarrow's CSV reader and counted with bincount.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pc

from .common import CountRows, TraceSource, bad

COLUMNS = ["layer", "expert"]


class LlamacppSource(TraceSource):
    """Expert counts per layer from llama.cpp moe-trace `.csv` files (summed over the files)."""

    engine = "llamacpp"
    capabilities = ("counts",)

    def read(self) -> Iterator[CountRows]:
        counts = np.zeros((0, 0), np.int64)
        for path in self.files:
            counts = self._add(path, counts)
        if counts.size == 0:
            raise bad(self.files[0], None, "holds no layer,expert rows")
        if self.n_experts is not None and counts.shape[1] > self.n_experts:
            raise bad(
                self.files[0], None, f"expert id {counts.shape[1] - 1} out of range for {self.n_experts}"
            )
        layers = [int(i) for i in np.flatnonzero(counts.sum(axis=1))]
        experts = max(counts.shape[1], self.n_experts or 0)
        full = np.zeros((1, len(layers), experts), np.int64)
        full[0, :, : counts.shape[1]] = counts[layers]
        yield CountRows(full, np.zeros(1, np.int64), layers)

    def _add(self, path: Path, counts: np.ndarray) -> np.ndarray:
        with path.open("rb") as handle:
            header = handle.readline().decode("utf-8", "replace").strip().replace(" ", "")
        skip = 1 if header == "layer,expert" else 0
        options = pc.ReadOptions(column_names=COLUMNS, skip_rows=skip, block_size=16 << 20)
        convert = pc.ConvertOptions(column_types={"layer": pa.int64(), "expert": pa.int64()})
        line = 1 + skip
        try:
            reader = pc.open_csv(path, read_options=options, convert_options=convert)
            for batch in reader:
                layer, expert = (np.asarray(batch.column(c).fill_null(-1)) for c in COLUMNS)
                odd = (layer < 0) | (expert < 0)
                if odd.any():
                    raise bad(
                        path, f"line {line + int(np.argmax(odd))}", "negative or missing layer or expert"
                    )
                rows, cols = (
                    max(counts.shape[0], int(layer.max()) + 1),
                    max(counts.shape[1], int(expert.max()) + 1),
                )
                grown = np.zeros((rows, cols), np.int64)
                grown[: counts.shape[0], : counts.shape[1]] = counts
                grown += np.bincount(layer * cols + expert, minlength=rows * cols).reshape(rows, cols)
                counts, line = grown, line + batch.num_rows
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise bad(path, None, f"not a layer,expert CSV ({str(exc).splitlines()[0][:100]})") from None
        return counts
