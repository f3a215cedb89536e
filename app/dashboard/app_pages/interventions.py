"""Interventions page: set up a causal probe on a model, record it, and see what the edit did.

Choose a bundled model (or a local folder), a probe — disable experts (a list, each layer's top r, the
shared expert; against random ablations of the same size), force tokens to an expert set, add noise to
the routers, or batch the inputs — and its inputs (a subset of the bundled domain set or typed text; classes,
samples and steps for the DiT). "Run probe" records the probe's runs as a background job with one progress
bar (`probing.run_probe`; a click elsewhere does not stop it, and the page follows it again when
opened); below, a probe run's tables are shown with a figure each (`probing.probe_result`):
the loss against random ablations, the share of decisions inside a forced set, the flip rate by margin,
the share of decisions a batch changes. The runs are ordinary runs, open on every other page. Last, the
Prune section (`dashboard/prune_section.py`): a pruning study per saliency criterion and its loss curves.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import streamlit as st

from routescope.dashboard import cache, state
from routescope.dashboard.app_pages import PAGES
from routescope.dashboard.forms import choose_model, sampling_form
from routescope.dashboard.job_view import own, show_failure, start_writing, watch
from routescope.dashboard.jobs import Report, Work
from routescope.dashboard.markup import literal
from routescope.dashboard.probing import (
    PROBE_KINDS,
    Ablate,
    Batch,
    Force,
    Noise,
    PageInputs,
    ProbeSettings,
    StagedProgress,
    check_names,
    check_settings,
    companions,
    domain_subset,
    is_probe_result,
    parse_ints,
    parse_where,
    probe_result,
    run_probe,
)
from routescope.dashboard.prune_section import prune_section
from routescope.dashboard.recording import dataset_inputs, typed_inputs
from routescope.dashboard.widgets import (
    open_store,
    pick_run,
    show_error,
    show_figure,
    show_table,
    user_errors,
)
from routescope.store import ModelSpecError, RouteScopeError, Run, Store

EXAMPLE_TEXT = "The river rose after a week of rain.\nx = [n * n for n in range(10)]\n"
DOMAINS = ("prose", "code", "arithmetic", "json", "chemistry")
PROBE_TITLES = {
    "ablate": "Ablate: disable experts",
    "force": "Force: route tokens to experts",
    "noise": "Noise: perturb the routers",
    "batch": "Batch: alone vs in a batch",
}
ABLATE_CHOICES = {"experts": "These experts", "top": "Each layer's top r most used", "shared": "Shared only"}
INPUT_SOURCES = {"dataset": "Bundled domain set", "typed": "Typed text"}


def layers_field() -> Callable[[], tuple[int, ...] | None]:
    text = st.text_input(
        "Layers to edit (comma-separated; blank: every MoE layer)", placeholder="0, 2", key=state.PROBE_LAYERS
    )

    def read() -> tuple[int, ...] | None:
        return parse_ints(text, "layers") or None

    return read


def ablate_settings() -> Callable[[], ProbeSettings]:
    which = st.radio(
        "Disable",
        list(ABLATE_CHOICES),
        format_func=ABLATE_CHOICES.__getitem__,
        horizontal=True,
        key=state.PROBE_ABLATE_WHICH,
    )
    columns = st.columns(3)
    experts, top = "", 0
    if which == "experts":
        experts = columns[0].text_input("Experts (comma-separated)", value="0", key=state.PROBE_EXPERTS)
    elif which == "top":
        top = int(columns[0].number_input("r", 1, 256, 1, key=state.PROBE_TOP))
    shared = which == "shared" or columns[1].checkbox("Also the shared expert", key=state.PROBE_SHARED)
    seeds = columns[2].number_input(
        "Random ablations (seeds)", 0, 10, 3, key=state.PROBE_SEEDS, disabled=which == "shared"
    )
    layers = layers_field()

    def read() -> ProbeSettings:
        chosen = parse_ints(experts, "experts") if which == "experts" else ()
        return Ablate(
            experts=chosen,
            top=top if which == "top" else None,
            shared=bool(shared),
            seeds=int(seeds),
            layers=layers(),
        )

    return read


def force_settings(diffusion: bool) -> Callable[[], ProbeSettings]:
    columns = st.columns(2)
    experts = columns[0].text_input(
        "Force to experts (at least top-k)", value="0, 1", key=state.PROBE_FORCE_EXPERTS
    )
    where = columns[1].text_input(
        "Only tokens where (LABEL=VALUE; blank: every token)",
        placeholder="class=3" if diffusion else "domain=code",
        key=state.PROBE_WHERE,
    )
    layers = layers_field()

    def read() -> ProbeSettings:
        return Force(experts=parse_ints(experts, "experts"), where=parse_where(where), layers=layers())

    return read


def noise_settings() -> Callable[[], ProbeSettings]:
    columns = st.columns(3)
    sigma = columns[0].number_input("σ", 0.0, 10.0, 0.05, step=0.01, format="%.3f", key=state.PROBE_SIGMA)
    on = columns[1].radio("On the router's", ["input", "logits"], horizontal=True, key=state.PROBE_NOISE_ON)
    seed = columns[2].number_input("Noise seed", 0, 2**31 - 1, 0, key=state.PROBE_NOISE_SEED)
    layers = layers_field()
    st.caption("Input noise is σ × the token's RMS (σ = 0.05 is 5 %); logit noise is in logit units.")

    def read() -> ProbeSettings:
        return Noise(
            sigma=float(sigma), on="logits" if on == "logits" else "input", seed=int(seed), layers=layers()
        )

    return read


def batch_settings() -> Callable[[], ProbeSettings]:
    size = st.number_input("Batch size", 2, 256, 4, key=state.PROBE_BATCH_SIZE)
    st.caption("The inputs are recorded one at a time (NAME.alone) and this many at a time (NAME).")

    def read() -> ProbeSettings:
        return Batch(batch_size=int(size))

    return read


def text_inputs() -> Callable[[], PageInputs]:
    """How to read the text inputs (called on Run probe, so a mistake is reported then)."""
    source = st.radio(
        "Inputs",
        list(INPUT_SOURCES),
        format_func=INPUT_SOURCES.__getitem__,
        horizontal=True,
        key=state.PROBE_INPUT_SOURCE,
    )
    if source == "typed":
        text = st.text_area("One input per line", value=EXAMPLE_TEXT, height=100, key=state.PROBE_TEXT)
        return partial(typed_inputs, text)
    columns = st.columns([3, 2])
    domains = columns[0].multiselect("Domains", list(DOMAINS), default=list(DOMAINS), key=state.PROBE_DOMAINS)
    most = columns[1].slider(
        "Texts at most (taking turns over the domains)", 1, 100, 10, key=state.PROBE_MAX_TEXTS
    )
    return partial(_domain_texts, tuple(domains), int(most))


def _domain_texts(domains: tuple[str, ...], most: int) -> PageInputs:
    return domain_subset(dataset_inputs("bundled:domains"), most, domains)


SETTINGS: dict[str, Callable[[bool], Callable[[], ProbeSettings]]] = {
    "ablate": lambda diffusion: ablate_settings(),
    "force": force_settings,
    "noise": lambda diffusion: noise_settings(),
    "batch": lambda diffusion: batch_settings(),
}


def probe_form(store: Store) -> None:
    """Model, probe, inputs, name and the Run probe button; records the probe's runs and remembers them."""
    spec, diffusion = choose_model("probe")
    kind = str(
        st.radio(
            "Probe", PROBE_KINDS, format_func=PROBE_TITLES.__getitem__, horizontal=True, key=state.PROBE_KIND
        )
    )
    read_settings = SETTINGS[kind](diffusion)
    read_inputs = sampling_form("probe", steps=10, max_per_class=16) if diffusion else text_inputs()
    columns = st.columns([3, 1])
    name = columns[0].text_input("Run name", value=f"{kind}-probe", key=state.PROBE_NAME)
    overwrite = columns[1].checkbox("Replace runs of those names", key=state.PROBE_OVERWRITE)
    if st.button("Run probe", type="primary", key=state.PROBE_START):
        try:
            settings = read_settings()
            check_settings(settings)
            names = check_names(store, name, settings, overwrite)
            if not spec:
                raise ModelSpecError("type a local checkpoint folder or a hub id")
            name = name.strip()
            work = probe_job(spec, read_inputs(), settings, store, name, names, overwrite)
            own(state.PROBE_JOB, start_writing(store, name, f"{kind} probe {name}", work))
        except RouteScopeError as exc:
            show_error(exc, {"overwrite": "tick “Replace runs of those names”"})
            return
    job = watch(state.PROBE_JOB)
    if job is None:
        return
    if job.status == "failed":
        show_failure(job)
        return
    run, names = job.result
    state.set_last_recorded(run.name)
    st.success(f"Recorded runs {literal(', '.join(names))}.")


def probe_job(
    spec: str,
    inputs: PageInputs,
    settings: ProbeSettings,
    store: Store,
    name: str,
    names: list[str],
    overwrite: bool,
) -> Work:
    """The background job: load the model, check the edit against it (`run_probe` does, before the first
    run is written) and record the probe's runs (`names`, the probe's own run `name` among them) under
    one progress bar."""

    def work(report: Report) -> tuple[Run, list[str]]:
        report(0.0, f"loading {spec}")
        model = cache.model(spec)
        progress = StagedProgress(names, report)
        run = run_probe(
            model, inputs, settings, store=store, name=name, overwrite=overwrite, progress=progress
        )
        return run, names

    return work


def show_result(store: Store) -> None:
    """A probe run's tables and figures, against its base (and random ablations)."""
    if not any(_is_probe_run(store, name) for name in store.runs()):
        st.info("No probe run in the store yet: set one up above and press Run probe.")
        return
    run = pick_run(store, state.PROBE_RESULT_RUN, accept=is_probe_result, kind="probe run")
    with user_errors():
        runs = companions(store, run)
    with user_errors(runs=runs):  # a damaged data page of any of them is named
        result = probe_result(store, run)
        st.caption(f"{result.probe} probe · runs {literal(', '.join(result.runs))}")
        if not result.edit.empty:
            with st.expander("The edit, per router"):
                show_table(
                    result.edit, key=state.scoped(state.PROBE_EDIT_TABLE, run.name), name=f"{run.name}-edit"
                )
        if result.note:
            st.info(literal(result.note))
        for table in result.tables:
            st.markdown(f"**{literal(table.title)}**")
            stem = f"{run.name}-{table.key}"
            if table.figure is not None:
                show_figure(
                    table.figure,
                    table.table,
                    key=state.scoped(state.PROBE_CHART, run.name, table.key),
                    name=stem,
                )
            show_table(table.table, key=state.scoped(state.PROBE_TABLE, run.name, table.key), name=stem)
        compare = next(p for p in PAGES if p.url_path == "compare")
        pair = f", and the Compare page lines {literal(run.name)} up with {literal(result.base)}"
        st.markdown(
            f"These are ordinary runs in the store: every page opens them{pair if result.base else ''}."
        )
        st.page_link(compare.path, label="Compare them", icon=":material/compare_arrows:")


def _is_probe_run(store: Store, name: str) -> bool:
    try:
        return is_probe_result(cache.run(store, name))
    except RouteScopeError:
        return False


def main() -> None:
    st.title("Interventions")
    st.caption(
        "Edit the routing inside a model — disable, force or perturb experts, or batch the inputs — record "
        "the edited model beside the unedited one, and see what changed."
    )
    store = open_store()
    probe_form(store)
    st.divider()
    st.subheader("A probe's result")
    show_result(store)
    st.divider()
    prune_section(store)


if __name__ == "__main__":
    main()
