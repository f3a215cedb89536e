"""Writing figures (SVG, PDF, PNG) and tables (CSV, LaTeX, Markdown) to files.

Figures go through kaleido 1.x, which renders plotly.js in a headless Chromium it drives over the
DevTools protocol (the `choreographer` package). Starting that browser costs seconds, so
`export_figures` renders a whole batch in one browser. The browser is found from `BROWSER_PATH` (the
variable choreographer reads), else the first of `BROWSERS` on `PATH` (Debian's `chromium` here), else
kaleido's own search (a Chrome fetched with `kaleido_get_chrome`); see docs/figures.md for other
machines. MathJax is switched off (it would be fetched from a CDN; figures use plain text) and plotly.js
comes from the installed plotly package, so nothing is downloaded.

Sizes come from each figure's layout (set by `theme.paper_layout`): SVG and PDF keep 96 CSS pixels per
inch, so a single-column figure is 3.3 in wide; PNG is rendered at `dpi` (pixel width =
⌊layout width × dpi / 96⌋).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from choreographer.errors import ChromeNotFoundError

from routescope.store import InputError
from routescope.store.errors import ExportError

from ..tables import render
from .theme import CSS_DPI

FIGURE_SUFFIXES = (".svg", ".pdf", ".png")
TABLE_SUFFIXES = {".csv": "csv", ".tex": "latex", ".md": "markdown"}
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
DEFAULT_DPI = 300


def browser_path() -> str | None:
    """The Chromium that renders figures: `$BROWSER_PATH` if set, else the first of `BROWSERS` on PATH,
    else None (kaleido then looks for a Chrome it downloaded itself and for the usual install paths)."""
    configured = os.environ.get("BROWSER_PATH")
    if configured:
        if not (Path(configured).is_file() and os.access(configured, os.X_OK)):
            raise ExportError(f"BROWSER_PATH={configured!r} is not an executable browser")
        return configured
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


NO_BROWSER = (
    "no Chromium or Chrome found for figure export; install one (e.g. `apt install chromium`) "
    "or set BROWSER_PATH to its executable (see docs/figures.md)"
)


def check_figure_path(path: str | Path) -> Path:
    """`path` as a Path if it names an SVG, PDF or PNG file in an existing folder, else a one-line error."""
    out = Path(path)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise InputError(f"{out}: figures are written as {', '.join(FIGURE_SUFFIXES)}, not {out.suffix!r}")
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist")
    return out


def export_figures(
    figures: Iterable[tuple[go.Figure, str | Path]], *, dpi: float = DEFAULT_DPI, timeout: float = 90
) -> list[Path]:
    """Write every (figure, path) pair, the format taken from the suffix, with one browser for all."""
    import kaleido  # only export needs the browser driver

    jobs = []
    for fig, path in figures:
        out = check_figure_path(path)
        fmt = out.suffix.lower().lstrip(".")
        opts = {"format": fmt, "width": fig.layout.width or 700, "height": fig.layout.height or 500}
        opts["scale"] = dpi / CSS_DPI if fmt == "png" else 1
        jobs.append({"fig": fig, "path": out, "opts": opts})
    if not jobs:
        return []
    kopts: dict[str, object] = {"mathjax": False, "timeout": timeout}
    browser = browser_path()
    if browser:
        kopts["path"] = browser
    try:
        kaleido.write_fig_from_object_sync(jobs, kopts=kopts, cancel_on_error=True)
    except ChromeNotFoundError as exc:
        raise ExportError(NO_BROWSER) from exc
    except Exception as exc:  # the browser's failures come as many types; report them in one line
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ExportError(f"figure export failed: {message[:300]}") from exc
    return [job["path"] for job in jobs]


def export_figure(fig: go.Figure, path: str | Path, *, dpi: float = DEFAULT_DPI) -> Path:
    """Write one figure (SVG, PDF or PNG by suffix); for several, `export_figures` shares one browser."""
    return export_figures([(fig, path)], dpi=dpi)[0]


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV (`.csv`), LaTeX booktabs (`.tex`, ready for `\\input`) or Markdown (`.md`)."""
    out = Path(path)
    fmt = TABLE_SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise InputError(f"{out}: tables are written as {', '.join(TABLE_SUFFIXES)}, not {out.suffix!r}")
    text = render(table.reset_index(drop=True), fmt)
    out.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return out
