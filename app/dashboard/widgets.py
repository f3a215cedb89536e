"""Pieces every page uses: the store, a run picker, one-line errors, a progress bar, images.

A user mistake (a bad run name, a model that does not load, a damaged run) is a `RouteScopeError`; inside
`user_errors()` it becomes an `st.error` with its one-line message and the page stops there — never a
traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import streamlit as st

from routescope.hooks import RouteScopeError, Run, Store

from . import cache, state
from .markup import literal
from .recording import Progress
from .settings import store_folder

IMAGE_PIXELS = 96
"""Width and height, in pixels, at which the small generated images are drawn."""


def show_error(exc: RouteScopeError) -> None:
    """A user mistake as one `st.error` line (its message, read literally)."""
    st.error(literal(str(exc)), icon="⚠️")


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a RouteScopeError raised inside as one `st.error` line and stop the page."""
    try:
        yield
    except RouteScopeError as exc:
        show_error(exc)
        st.stop()


def open_store() -> Store:
    """The dashboard's store (from `routescope app --store`)."""
    with user_errors():
        return Store(store_folder())


def pick_run(store: Store, key: str, *, accept: Callable[[Run], bool] | None = None) -> Run:
    """A run selector (the run last picked or recorded first); stops the page when there is none.

    `accept` narrows the list (e.g. diffusion runs only) — it opens each run's manifest, not its tables.
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
        st.info(f"No run to show in {store.path}: record one on the Run page.")
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


def progress_bar(label: str) -> Progress:
    """An `st.progress` bar driven by `progress(done, total)` callbacks."""
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{label}: {done} of {total}")

    return update


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
