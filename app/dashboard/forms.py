"""Widget groups that the Run and Interventions pages share: the model chooser and the diffusion sampling
settings. Each page passes its widget-key prefix (`run` or `probe`, the keys in `state.py`), so the two
pages keep separate widget state while the widgets, their labels and the request they build are written
once.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from routescope.cli_options import parse_classes
from routescope.models import BUNDLED, bundled_names
from routescope.requests import DiffusionRequest

DEFAULT_MODEL = "moe-lm"
SOURCE_LABELS = {"bundled": "Bundled", "other": "Hub id or local checkpoint folder"}


def choose_model(prefix: str) -> tuple[str, bool]:
    """The model spec and whether it is a diffusion model (only bundled ones bring a sampler)."""
    source = st.radio(
        "Model", list(SOURCE_LABELS), format_func=SOURCE_LABELS.__getitem__, horizontal=True,
        key=f"{prefix}.model_source",
    )  # fmt: skip
    if source == "bundled":
        names = bundled_names()
        name = str(
            st.selectbox(
                "Bundled model",
                names,
                index=names.index(DEFAULT_MODEL),
                format_func=lambda n: f"{n}: {BUNDLED[n].description}",
                key=f"{prefix}.bundled",
            )
        )
        return f"bundled:{name}", BUNDLED[name].sampler is not None
    spec = st.text_input(
        "Hub id or local checkpoint folder",
        placeholder="models/moe_lm/weights or an org/name hub id",
        key=f"{prefix}.model_spec",
    )
    return spec.strip(), False


def sampling_form(
    prefix: str, *, steps: int, max_per_class: int, save_x0: bool = False
) -> Callable[[], DiffusionRequest]:
    """Classes, samples per class, steps, CFG scale and seed; returns how to read them as a request
    (called on the button, so a bad class list is reported then)."""
    columns = st.columns(5)
    classes = columns[0].text_input("Classes", value="0-9", key=f"{prefix}.classes")
    per_class = columns[1].number_input(
        "Samples per class", 1, max_per_class, 1, key=f"{prefix}.samples_per_class"
    )
    chosen_steps = columns[2].number_input("Steps", 1, 1000, steps, key=f"{prefix}.steps")
    cfg = columns[3].number_input("CFG scale", 0.0, 20.0, 4.0, step=0.5, key=f"{prefix}.cfg_scale")
    seed = columns[4].number_input("Seed", 0, 2**31 - 1, 0, key=f"{prefix}.seed")

    def read() -> DiffusionRequest:
        return DiffusionRequest(
            classes=tuple(parse_classes(classes)),
            samples_per_class=int(per_class),
            steps=int(chosen_steps),
            cfg_scale=float(cfg),
            seed=int(seed),
            save_x0=save_x0,
        )

    return read
