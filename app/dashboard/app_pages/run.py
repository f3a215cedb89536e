"""Run page: choose a model and inputs, record a new run with a progress bar, and look at what it made.

The recording runs as a background job (`jobs.py`): a click elsewhere does not stop it, and the page
follows it again when it is opened again (other pages show it in the sidebar).

Text models: typed text (one input per line), an uploaded .txt/.jsonl file or the bundled domain set;
the page then shows the inputs and any generated text. Vision-language models also take uploaded images,
one per input or several for a single input (`recording.uploaded_images`, as `--image` on the command
line). The diffusion model: classes, samples per class,
steps, CFG scale and seed; the page shows the generated digits and x̂₀ at chosen steps.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from routescope.dashboard import cache, state
from routescope.dashboard.app_pages import PAGES
from routescope.dashboard.forms import choose_model, sampling_form
from routescope.dashboard.job_view import own, show_failure, start_writing, watch
from routescope.dashboard.jobs import Report, Work
from routescope.dashboard.markup import literal
from routescope.dashboard.recording import (
    TextOptions,
    check_new_run,
    dataset_inputs,
    image_request,
    text_request,
    typed_inputs,
    uploaded_images,
    uploaded_inputs,
)
from routescope.dashboard.widgets import open_store, pick_run, show_error, show_images
from routescope.inputs import Inputs
from routescope.requests import DEFAULT_STEPS, RecordRequest
from routescope.store import InputError, ModelSpecError, RouteScopeError, Run, Store

DEFAULT_MODEL = "moe-lm"
EXAMPLE_TEXT = "The river rose after a week of rain.\nx = [n * n for n in range(10)]\n"
INPUT_SOURCES = {"typed": "Typed text", "file": "A file (.txt / .jsonl)", "dataset": "Bundled domain set"}
TRAJECTORY_POINTS = 6


def text_inputs() -> tuple[Callable[[], Inputs], TextOptions]:
    """How to read the inputs (called on Record, so a bad file is reported then) and the text options."""
    source = st.radio(
        "Inputs",
        list(INPUT_SOURCES),
        format_func=INPUT_SOURCES.__getitem__,
        horizontal=True,
        key=state.RUN_INPUT_SOURCE,
    )
    read: Callable[[], Inputs]
    if source == "typed":
        text = st.text_area("One input per line", value=EXAMPLE_TEXT, height=120, key=state.RUN_TEXT)
        read = partial(typed_inputs, text)
    elif source == "file":
        upload = st.file_uploader("Inputs file", type=["txt", "jsonl"], key=state.RUN_FILE)
        columns = st.columns(2)
        text_column = columns[0].text_input(".jsonl text column", value="text", key=state.RUN_TEXT_COLUMN)
        labels = columns[1].text_input(
            ".jsonl label columns (comma-separated)", placeholder="domain", key=state.RUN_LABEL_COLUMNS
        )
        read = partial(
            _uploaded, upload, text_column.strip(), [c.strip() for c in labels.split(",") if c.strip()]
        )
    else:
        st.caption("bundled:domains: moe-lm's held-out set, 100 texts in 5 domains, label `domain`")
        read = partial(dataset_inputs, "bundled:domains")
    images = st.file_uploader(
        "Images (vision-language models; optional)",
        type=["png", "jpg", "jpeg", "webp", "bmp"],
        accept_multiple_files=True,
        key=state.RUN_IMAGES,
        help="one image per input, or several for a single input; the model's own processor places them "
        "(tokens get modality, image and patch row/col)",
    )
    if images:
        read = partial(_with_images, read, list(images))
    max_new = st.number_input("Tokens to generate after each input", 0, 256, 0, key=state.RUN_MAX_NEW_TOKENS)
    columns = st.columns(3)
    probs = columns[0].checkbox("Keep full router probabilities", key=state.RUN_PROBS)
    token_loss = columns[1].checkbox(
        "Keep per-token loss",
        key=state.RUN_TOKEN_LOSS,
        help="each token's next-token loss and prediction: loss colouring, loss by expert and by uncertainty",
    )
    expert_stats = columns[2].checkbox(
        "Keep expert output norms",
        key=state.RUN_EXPERT_STATS,
        help="each chosen expert's output norm: saliency (REAP, EAN, max activation); one more pass of the "
        "chosen experts",
    )
    options = TextOptions(
        probs=probs, max_new_tokens=int(max_new), token_loss=token_loss, expert_stats=expert_stats
    )
    return read, options


def _uploaded(upload: UploadedFile | None, text_column: str, label_columns: list[str]) -> Inputs:
    if upload is None:
        raise InputError("upload a .txt or .jsonl file first")
    return uploaded_inputs(upload.name, upload.getvalue(), text_column, label_columns)


def _with_images(read: Callable[[], Inputs], images: list[UploadedFile]) -> Inputs:
    return uploaded_images(read(), [(image.name, image.getvalue()) for image in images])


def record_form(store: Store) -> None:
    """Model, inputs, name and the Record button; starts the recording as a background job, follows it
    with a progress bar (also when the page is opened again while it runs) and remembers the new run."""
    spec, diffusion = choose_model("run")
    if diffusion:
        read_sampling = sampling_form("run", steps=DEFAULT_STEPS, max_per_class=64, save_x0=True)
        columns = st.columns(2)
        probs = columns[0].checkbox("Keep full router probabilities", key=state.RUN_PROBS)
        expert_stats = columns[1].checkbox("Keep expert output norms", key=state.RUN_EXPERT_STATS)
    else:
        read_inputs, text_options = text_inputs()
    columns = st.columns([3, 1])
    name = columns[0].text_input("Run name", value="my-run", key=state.RUN_NAME)
    overwrite = columns[1].checkbox("Replace a run of that name", key=state.RUN_OVERWRITE)
    if st.button("Record", type="primary", key=state.RUN_RECORD):
        try:
            name = check_new_run(store, name, overwrite)
            if not spec:
                raise ModelSpecError("type a hub id or a local checkpoint folder")
            if diffusion:
                request = image_request(
                    read_sampling(), probs=probs, name=name, overwrite=overwrite, expert_stats=expert_stats
                )
            else:
                request = text_request(read_inputs(), text_options, name=name, overwrite=overwrite)
            work = recording_job(spec, request, store)
            own(state.RUN_JOB, start_writing(store, name, f"recording {name}", work))
        except RouteScopeError as exc:
            show_error(exc)
            return
    job = watch(state.RUN_JOB)
    if job is None:
        return
    if job.status == "failed":
        show_failure(job)
        return
    run = job.result
    state.set_last_recorded(run.name)
    st.success(f"Recorded run {literal(run.name)}: {run.info.rows['decisions']} routing decisions.")


def recording_job(spec: str, request: RecordRequest, store: Store) -> Work:
    """The background job: load the model (cached per process), then execute `request` with progress."""

    def work(report: Report) -> Run:
        report(0.0, f"loading {spec}")
        return request.execute(
            cache.model(spec),
            store=store,
            progress=lambda done, total: report(done / max(total, 1), f"{done} of {total}"),
        )

    return work


def show_text_run(run: Run) -> None:
    samples = cache.table(run, "table.samples")
    columns = ["sample", *run.label_columns, "n_tokens", "text"]
    if int(samples["n_generated"].sum()) > 0:
        columns += ["n_generated", "generated"]
    st.dataframe(samples[columns], hide_index=True, width="stretch")


def show_diffusion_run(run: Run) -> None:
    samples = cache.table(run, "table.samples")
    cond = samples[samples["branch"] == "cond"].sort_values("sample")
    st.markdown("**Generated images**")
    captions = [f"#{s} · class {c}" for s, c in zip(cond["sample"], cond["class"], strict=True)]
    show_images(list(cache.images(run)), captions)
    if "x0" not in run.info.tables:
        st.caption("This run was recorded without x̂₀ (save_x0), so there is no denoising trajectory.")
        return
    st.markdown("**Denoising trajectory: x̂₀, the predicted clean image, at chosen steps**")
    steps, x0 = cache.x0(run)
    timesteps = cache.table(run, "table.steps").set_index("step")["timestep"]
    columns = st.columns([1, 3])
    sample = columns[0].selectbox(
        "Sample",
        cond["sample"].tolist(),
        format_func=lambda s: f"#{s} · class {cond.set_index('sample').loc[s, 'class']}",
        key=state.scoped(state.RUN_TRAJECTORY_SAMPLE, run.name),
    )
    spread = np.unique(np.linspace(0, len(steps) - 1, min(TRAJECTORY_POINTS, len(steps))).round().astype(int))
    chosen = columns[1].multiselect(
        "Steps",
        steps.tolist(),
        default=steps[spread].tolist(),
        key=state.scoped(state.RUN_TRAJECTORY_STEPS, run.name),
    )
    index = {int(s): i for i, s in enumerate(steps)}
    position = cond["sample"].tolist().index(sample)
    picked = sorted(int(s) for s in chosen)
    show_images(
        [x0[index[s], position] for s in picked],
        [f"step {s} (t = {timesteps.get(s, float('nan')):.0f})" for s in picked],
    )


def main() -> None:
    st.title("Run")
    st.caption("Record a model's routing into a new run, then browse it here and on the other pages.")
    store = open_store()
    record_form(store)
    st.divider()
    st.subheader("A run's output")
    run = pick_run(store, state.RUN_RESULT_RUN)
    model = run.info.model
    st.caption(f"model {literal(model.get('spec') or model.get('class'))} · {len(run.info.routers)} routers")
    if run.info.is_diffusion:
        show_diffusion_run(run)
    else:
        show_text_run(run)
    tokens = next(p for p in PAGES if p.url_path == "tokens")
    st.page_link(tokens.path, label="Browse its routing token by token", icon=":material/arrow_forward:")


if __name__ == "__main__":
    main()
