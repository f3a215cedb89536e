"""Pieces every page uses: the store, a run picker, one-line errors, images, and every
figure's and table's export control.

A user mistake (a bad run name, a model that does not load, a damaged run) is a `RouteScopeError`; inside
`user_errors()` it becomes an `st.error` with its one-line message and the page stops there — never a
traceback. So does a DuckDB error from a damaged data page, named by verifying the run.

`show_figure(build, table, key=..., name=...)` draws a paper figure (`build(width)` returns it at a column
width) with an Export menu beside it: SVG / PDF / PNG at single or double column width, rendered only when
the Prepare button is pressed (a browser start costs seconds), then offered for download; and the table
behind it as CSV or LaTeX. `show_table` gives a bare table the same two table downloads. `show_kind(kind,
run, ...)` does the same for a registered figure kind (`routescope.figures.FIGURES`): its table comes from
the analysis kind the figure names, through `cache`, and it is drawn by the kind's own builder — the
figure `routescope figure --kind` writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from routescope.store import CorruptRunError, RouteScopeError, Run, Store, first_damage

from ..figures.registry import FigureRequest, draw, figure_table
from ..figures.theme import COLUMN_INCHES, Width
from . import cache, state
from .exports import FIGURE_FORMATS, TABLE_FORMATS, figure_bytes, file_stem, table_text
from .markup import literal
from .settings import store_folder

IMAGE_PIXELS = 96
"""Width and height, in pixels, at which the small generated images are drawn."""


WIDGETS: dict[str, str] = {
    "overwrite": "tick “Replace a run of that name”",
    "layer": "choose a “Layer”",
    "by": "choose a label",
    "compare": "choose a second run",
    "name": "choose another “Run name”",
    "expert": "choose an expert",
    "probs": "record it with “Keep full router probabilities”",
}
"""How the dashboard names the option an error concerns (`RouteScopeError.field`): by its widget."""


def render_error(exc: RouteScopeError, widgets: Mapping[str, str] | None = None) -> str:
    """An error's one line as the dashboard shows it: the library's message, and what to do with the
    widget of the option it concerns (`widgets` overrides `WIDGETS` for a page's own labels)."""
    hint = {**WIDGETS, **(widgets or {})}.get(exc.field or "")
    return f"{exc} ({hint})" if hint else str(exc)


def show_error(exc: RouteScopeError, widgets: Mapping[str, str] | None = None) -> None:
    """A user mistake as one `st.error` line (its message, read literally, and its widget named)."""
    st.error(literal(render_error(exc, widgets)), icon="⚠️")


@contextmanager
def user_errors(*, stop: bool = True, runs: Sequence[Run] = ()) -> Iterator[None]:
    """Show a RouteScopeError raised inside as one `st.error` line and stop the page (or, with
    `stop=False`, carry on after the block).

    A DuckDB error is what an analysis meets on a damaged data page (opening a run checks footers only,
    and DuckDB does not check page checksums): as `routescope` does, the runs are verified and the first
    damaged file is named in one line (`runs`, else the run the pages are browsing). If every run reads
    cleanly the error is a bug, and it is raised as it is."""
    try:
        yield
    except RouteScopeError as exc:
        show_error(exc)
        if stop:
            st.stop()
    except duckdb.Error:
        damage = damaged_run(runs)
        if damage is None:
            raise
        show_error(damage)
        if stop:
            st.stop()


def damaged_run(runs: Sequence[Run] = ()) -> CorruptRunError | None:
    """After DuckDB failed on a read: the error naming the first damaged file of `runs` (default: the
    run the pages are browsing, in the dashboard's store), found by `routescope.store.first_damage` as the
    CLI does; None if all read cleanly."""
    if runs:
        return first_damage(runs)
    name = state.current_run()
    if name is None:
        return None
    try:
        return Store(store_folder()).first_damage([name])
    except RouteScopeError:
        return None


def open_store() -> Store:
    """The dashboard's store (from `routescope app --store`)."""
    with user_errors():
        return Store(store_folder())


def pick_run(
    store: Store, key: str, *, accept: Callable[[Run], bool] | None = None, kind: str = "run"
) -> Run:
    """A run selector (the run last picked or recorded first); stops the page when there is none.

    `accept` narrows the list (e.g. diffusion runs only) — it opens each run's manifest, not its tables;
    `kind` names what it accepts in the message shown when no run qualifies ("diffusion run").
    """
    names = store.runs()
    problems = [*store.incomplete(), *store.damaged()]
    if problems:
        st.caption(
            "Not shown (incomplete or damaged; `routescope runs --store STORE --clean` removes interrupted "
            f"ones): {literal(', '.join(problems))}"
        )
    if accept is not None:
        names = [n for n in names if _accepted(store, n, accept)]
    if not names:
        st.info(f"No {kind} to show in {literal(str(store.path))}: record one on the Run page.")
        st.stop()
    current = state.current_run()
    if current in names and st.session_state.get(key) != current:
        st.session_state[key] = current  # follow a run picked on another page or just recorded
    elif st.session_state.get(key) not in names:
        st.session_state[key] = names[0]
    name = str(st.selectbox("Run", names, key=key, on_change=_follow, args=(key,)))
    state.set_current_run(name)
    with user_errors():
        return cache.run(store, name)


def _follow(key: str) -> None:
    state.set_current_run(str(st.session_state[key]))


def _accepted(store: Store, name: str, accept: Callable[[Run], bool]) -> bool:
    try:
        return accept(cache.run(store, name))
    except RouteScopeError:
        return False


def enlarge(image: np.ndarray, pixels: int = IMAGE_PIXELS) -> np.ndarray:
    """A small grey image in [0, 1], scaled up by pixel repetition (no blur) to about `pixels` wide."""
    factor = max(1, pixels // max(image.shape[-1], 1))
    return np.clip(np.kron(image, np.ones((factor, factor), dtype=image.dtype)), 0.0, 1.0)


def show_images(images: Sequence[np.ndarray], captions: Sequence[str], per_row: int = 10) -> None:
    """Images in rows of `per_row` columns, each with its caption."""
    for start in range(0, len(images), per_row):
        columns = st.columns(per_row)
        for column, image, caption in zip(
            columns, images[start : start + per_row], captions[start : start + per_row], strict=False
        ):
            column.image(enlarge(np.asarray(image, dtype=np.float32)), caption=caption)


SHOWN_WIDTH: Width = "double"
"""Column width at which figures are drawn in the page (exports choose their own)."""
TABLE_NAMES = {"csv": "CSV", "latex": "LaTeX"}
WIDTH_NAMES: dict[str, str] = {
    width: f"{name} ({inches} in)"
    for (width, inches), name in zip(COLUMN_INCHES.items(), ("single column", "double column"), strict=True)
}


def show_figure(
    build: Callable[[Width], go.Figure], table: pd.DataFrame, *, key: str, name: str
) -> go.Figure:
    """Draw `build(SHOWN_WIDTH)` (a chart keyed `key`) with its export menu; returns the drawn figure.

    `key` must change whenever the figure does (scope it by run and options), so a prepared file is never
    offered for a figure it was not rendered from. `name` is the downloaded files' stem."""
    fig = build(SHOWN_WIDTH)
    st.plotly_chart(fig, key=key, width="content", config={"displaylogo": False})
    export_menu(build, table, key=key, name=name)
    return fig


def show_kind(
    kind: str,
    run: Run,
    *,
    key: str,
    name: str | None = None,
    table: pd.DataFrame | None = None,
    shown: pd.DataFrame | None = None,
    layer: int | None = None,
    by: str | None = None,
    expert: int | None = None,
    other: Run | None = None,
    series: Sequence[Run] = (),
    **options: Any,
) -> go.Figure:
    """Figure kind `kind` of `run` (and `other`, or the runs of a `series`) with its export menu (as
    `show_figure`). Its table is the cached table of the analysis kind the figure names, unless the page
    passes the `table` it already has; `shown` is the table offered for export (default: the drawn one,
    its `layer` rows where one layer is drawn); `options` go to the builder (metrics, axis names,
    phases). The export's file name defaults to `RUN[-vs-OTHER][-layerL]-KIND`."""
    if name is None:
        parts = [
            run.name,
            *([f"vs-{other.name}"] if other else []),
            *([f"layer{layer}"] if layer is not None else []),
        ]
        name = "-".join([*parts, kind])
    request = FigureRequest(
        run=run, layer=layer, by=by, expert=expert, other=other, series=tuple(series), draw=options
    )
    if table is None:
        analysis, compute_options = figure_table(kind, request)
        second = compute_options.pop("other", None)
        table = (
            cache.table(run, analysis, **compute_options)
            if second is None
            else cache.pair_table(run, second, analysis, **compute_options)
        )
    drawn = table
    if shown is None:
        one_layer = layer is not None and "layer" in table.columns
        shown = table[table["layer"] == layer] if one_layer else table
    return show_figure(
        lambda width: draw(kind, drawn, replace(request, width=width)),
        shown,
        key=key,
        name=name,
    )


def export_menu(
    build: Callable[[Width], go.Figure], table: pd.DataFrame | None, *, key: str, name: str
) -> None:
    """An Export popover: figure format and width, Prepare → Download, and the table as CSV / LaTeX."""
    stem = file_stem(name)
    with st.popover("Export", icon=":material/download:", key=state.scoped(state.EXPORT_MENU, key)):
        columns = st.columns(2)
        fmt = str(
            columns[0].radio(
                "Figure as", list(FIGURE_FORMATS), horizontal=True, key=state.scoped(state.EXPORT_FORMAT, key)
            )
        )
        chosen = columns[1].radio(
            "Width",
            list(WIDTH_NAMES),
            format_func=WIDTH_NAMES.__getitem__,
            key=state.scoped(state.EXPORT_WIDTH, key),
        )
        width: Width = "double" if chosen == "double" else "single"
        file_key = state.scoped(state.EXPORT_FILE, key)
        if st.button("Prepare the figure file", key=state.scoped(state.EXPORT_PREPARE, key)):
            try:
                with st.spinner(f"Rendering {fmt.upper()}…"):
                    st.session_state[file_key] = (fmt, width, figure_bytes(build(width), fmt))
            except RouteScopeError as exc:
                show_error(exc)
        prepared = st.session_state.get(file_key)
        if prepared is not None and prepared[:2] == (fmt, width):
            st.download_button(
                f"Download {stem}.{fmt}",
                prepared[2],
                file_name=f"{stem}.{fmt}",
                mime=FIGURE_FORMATS[fmt],
                key=state.scoped(state.EXPORT_DOWNLOAD, key),
                on_click="ignore",
                type="primary",
            )
        if table is not None:
            table_downloads(table, key=key, stem=stem)


def table_downloads(table: pd.DataFrame, *, key: str, stem: str) -> None:
    """Download buttons for `table` as CSV and LaTeX (rendered when clicked)."""
    columns = st.columns([1] * len(TABLE_FORMATS) + [3])
    for column, (fmt, (suffix, mime)), widget in zip(
        columns, TABLE_FORMATS.items(), (state.EXPORT_CSV, state.EXPORT_LATEX), strict=False
    ):
        column.download_button(
            f"Table as {TABLE_NAMES[fmt]}",
            data=partial(table_text, table, fmt),
            file_name=f"{stem}.{suffix}",
            mime=mime,
            key=state.scoped(widget, key),
            on_click="ignore",
        )


def show_table(table: pd.DataFrame, *, key: str, name: str, height: int | None = None) -> None:
    """A table (values as they are, text escaped by Streamlit) with CSV and LaTeX downloads below it."""
    st.dataframe(table, hide_index=True, width="stretch", height=height or "auto")
    table_downloads(table, key=key, stem=file_stem(name))


def layers_of(run: Run) -> list[int]:
    """The run's MoE layers, in depth order."""
    return sorted({r.layer for r in run.info.routers})


def pick_layer(run: Run, key: str, *, label: str = "Layer") -> int:
    """A layer selector (its key scoped by the run)."""
    return int(st.selectbox(label, layers_of(run), key=state.scoped(key, run.name)))
