"""Session-state keys, named once: every widget's `key=` and the few values pages share.

Widget keys are namespaced by page (`run.*`, `tokens.*`), so a new page cannot collide with an old one.
A widget whose option labels depend on the run (or the sample) takes its key through `scoped(key, run,
...)`: Streamlit identifies a keyed widget by its key alone, and its browser side keeps showing the old
label of a value that survives a change of options (sample `#0 · class: 0` after switching to a text run).
Streamlit drops a widget's state when its page is left, so what must survive a page switch (the run being
browsed, the run just recorded) lives under its own non-widget key with a typed getter and setter here.
"""

from __future__ import annotations

import streamlit as st

# Shared between pages (not widget keys).
CURRENT_RUN = "current_run"
"""Name of the run the pages open by default: the last one picked or recorded."""
LAST_RECORDED = "last_recorded"
"""Name of the run the Run page recorded in this session (to confirm it once)."""

# Run page widgets.
RUN_MODEL_SOURCE = "run.model_source"
RUN_BUNDLED = "run.bundled"
RUN_MODEL_SPEC = "run.model_spec"
RUN_INPUT_SOURCE = "run.input_source"
RUN_TEXT = "run.text"
RUN_FILE = "run.file"
RUN_TEXT_COLUMN = "run.text_column"
RUN_LABEL_COLUMNS = "run.label_columns"
RUN_MAX_NEW_TOKENS = "run.max_new_tokens"
RUN_PROBS = "run.probs"
RUN_CLASSES = "run.classes"
RUN_SAMPLES_PER_CLASS = "run.samples_per_class"
RUN_STEPS = "run.steps"
RUN_CFG_SCALE = "run.cfg_scale"
RUN_SEED = "run.seed"
RUN_NAME = "run.name"
RUN_OVERWRITE = "run.overwrite"
RUN_RECORD = "run.record"
RUN_RESULT_RUN = "run.result_run"
RUN_TRAJECTORY_SAMPLE = "run.trajectory_sample"
RUN_TRAJECTORY_STEPS = "run.trajectory_steps"

# Tokens page widgets.
TOKENS_RUN = "tokens.run"
TOKENS_LABEL = "tokens.label"
TOKENS_LABEL_VALUE = "tokens.label_value"
TOKENS_SAMPLE = "tokens.sample"
TOKENS_BRANCH = "tokens.branch"
TOKENS_LAYER = "tokens.layer"
TOKENS_STEP = "tokens.step"
TOKENS_ENTROPY = "tokens.entropy"
TOKENS_MARGIN = "tokens.margin"
TOKENS_POSITION = "tokens.position"
TOKENS_VALUES = "tokens.values"
TOKENS_CHART = "tokens.chart"


def scoped(key: str, *scope: object) -> str:
    """`key` for one run (and sample, ...): `tokens.sample[text]`, `tokens.position[text,3]`."""
    return f"{key}[{','.join(str(part) for part in scope)}]"


def current_run() -> str | None:
    """The run pages open by default, if one was picked or recorded in this session."""
    value = st.session_state.get(CURRENT_RUN)
    return value if isinstance(value, str) else None


def set_current_run(name: str) -> None:
    st.session_state[CURRENT_RUN] = name


def last_recorded() -> str | None:
    """The run this session's Run page recorded last, if any."""
    value = st.session_state.get(LAST_RECORDED)
    return value if isinstance(value, str) else None


def set_last_recorded(name: str) -> None:
    st.session_state[LAST_RECORDED] = name
    set_current_run(name)
