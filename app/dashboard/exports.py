"""The bytes behind the dashboard's download buttons: a figure as SVG, PDF or PNG, and the table behind it
as CSV or LaTeX, with a file name that says what it holds. No Streamlit here: the export control in
`widgets.py` calls these only when asked, and tests call them directly.

Figures go through `routescope.figures.export_figure` (kaleido driving the system's headless Chromium, the
paper sizes of `routescope.figures.theme`), tables through `routescope.tables.render` (booktabs LaTeX with
every special character escaped) — the same files `routescope figure` and `routescope report` write.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from routescope.store import InputError

from ..figures import export_figure
from ..figures.export import DEFAULT_DPI
from ..tables import render

FIGURE_FORMATS: dict[str, str] = {"svg": "image/svg+xml", "pdf": "application/pdf", "png": "image/png"}
"""Figure format → MIME type."""
TABLE_FORMATS: dict[str, tuple[str, str]] = {
    "csv": ("csv", "text/csv"),
    "latex": ("tex", "application/x-tex"),
}
"""Table format (as `routescope.tables.render` names it) → (file suffix, MIME type)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_stem(*parts: object) -> str:
    """A file name stem from its parts (run, figure, layer, ...): `domains-load-layer0`; anything but
    letters, digits, `.`, `_` and `-` becomes `-`, so a run or label name cannot form a path."""
    words = [_UNSAFE.sub("-", str(p)).strip("-.") for p in parts if p is not None and str(p) != ""]
    return "-".join(w for w in words if w) or "figure"


def figure_bytes(fig: go.Figure, fmt: str, *, dpi: float = DEFAULT_DPI) -> bytes:
    """`fig` rendered as `fmt` (svg, pdf or png at `dpi`) in the figure's own paper size."""
    if fmt not in FIGURE_FORMATS:
        raise InputError(f"figures are exported as {', '.join(FIGURE_FORMATS)}, not {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="routescope-export-") as folder:
        path = export_figure(fig, Path(folder) / f"figure.{fmt}", dpi=dpi)
        return path.read_bytes()


def table_text(table: pd.DataFrame, fmt: str) -> str:
    """`table` as CSV or a LaTeX booktabs tabular (ready for `\\input`), ending in a newline."""
    if fmt not in TABLE_FORMATS:
        raise InputError(f"tables are exported as {', '.join(TABLE_FORMATS)}, not {fmt!r}")
    text = render(table.reset_index(drop=True), fmt)
    return text if text.endswith("\n") else text + "\n"
