"""What the Interventions page runs, without Streamlit: a probe's settings, the runs it will write, the
recording of all of them under one progress callback, and the result tables (with their figures) of any
probe run in the store.

The probes are `routescope.probes` (`ablation_study`, `probe_force`, `probe_noise`, `probe_batch`)
and the tables `routescope.analysis` (ablation, forcing, stability, batching); this module turns the
page's inputs into those calls and checks everything it can — names, settings, layers, experts, labels —
before the first run is written, so a mistake leaves the store unchanged. Every probe here records its
unedited base run beside the edited one (`NAME.base`; `NAME.alone` for the batch probe), so the Compare
page can line them up. `probe_result(store, run)` finds a probe run's companions by the names and the
manifest entries the probes give them, so the page shows the same result after "Run probe" and later,
from the store alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeAlias

import pandas as pd
import plotly.graph_objects as go

from routescope.hooks import LoadedModel
from routescope.probes import Sampling, probe_of
from routescope.store import InputError, Run, Store

from ..figures import figure_ablation, figure_set_share
from ..figures.registry import FigureRequest, draw
from ..figures.theme import Width
from ..inputs import Inputs
from ..requests import PROBE_KINDS as PROBE_KINDS
from ..requests import Ablate as Ablate
from ..requests import Batch as Batch
from ..requests import DiffusionRequest, ProbeRequest, companion_names
from ..requests import Force as Force
from ..requests import Noise as Noise
from ..requests import ProbeSettings as ProbeSettings
from ..requests import Reroute as Reroute
from ..requests import parse_ints as parse_ints
from .recording import Progress, check_new_run

MAX_SEEDS = 10
"""At most this many random ablations from the page (each is a recording with the quality measure)."""
PageInputs: TypeAlias = Inputs | Sampling | DiffusionRequest
"""Text inputs with their labels, or what a diffusion model samples."""


def parse_where(text: str) -> dict[str, str]:
    """`"domain=code"` (several separated by commas) → {"domain": "code"}; blank → {}."""
    where: dict[str, str] = {}
    for part in (p for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"where {part.strip()!r} must look like LABEL=VALUE, e.g. domain=code")
        where[key.strip()] = value.strip()
    return where


def domain_subset(inputs: Inputs, n: int, values: Sequence[str] = (), label: str = "domain") -> Inputs:
    """At most `n` inputs taking turns over the values of `label` (only `values`, if given), so a small
    subset still covers every value; kept in their original order, labels alongside."""
    if n < 1:
        raise InputError(f"choose at least one input, not {n}")
    column = inputs.labels.get(label)
    if column is None:
        return Inputs(texts=inputs.texts[:n], labels={k: v[:n] for k, v in inputs.labels.items()})
    wanted = [str(v) for v in values] or list(dict.fromkeys(str(v) for v in column))
    unknown = sorted(set(wanted) - {str(v) for v in column})
    if unknown:
        raise InputError(f"no input has {label} = {unknown[0]!r}")
    queues = {value: [i for i, v in enumerate(column) if str(v) == value] for value in wanted}
    chosen: list[int] = []
    while len(chosen) < n and any(queues.values()):
        for value in wanted:
            if queues[value] and len(chosen) < n:
                chosen.append(queues[value].pop(0))
    chosen.sort()
    return Inputs(
        texts=[inputs.texts[i] for i in chosen],
        labels={k: [v[i] for i in chosen] for k, v in inputs.labels.items()},
    )


def run_names(name: str, settings: ProbeSettings) -> list[str]:
    """Every run the probe writes, in the order it records them (`requests.companion_names`)."""
    return companion_names(name, settings)


def check_settings(settings: ProbeSettings) -> None:
    """Refuse settings no model could take, before a model is loaded."""
    if isinstance(settings, Ablate):
        if settings.experts and settings.top is not None:
            raise InputError("disable a list of experts or the top r, not both")
        if not settings.experts and settings.top is None and not settings.shared:
            raise InputError("choose experts to disable, the top r, and/or the shared expert")
        if not 0 <= settings.seeds <= MAX_SEEDS:
            raise InputError(f"random ablations: 0 to {MAX_SEEDS}, not {settings.seeds}")
    elif isinstance(settings, Force) and not settings.experts:
        raise InputError("give the experts to force the tokens to, e.g. 0, 1")
    elif isinstance(settings, Batch) and (settings.batch_size or 0) < 2:
        raise InputError(f"the batch probe needs a batch of at least 2 inputs, not {settings.batch_size}")


def check_names(store: Store, name: str, settings: ProbeSettings, overwrite: bool) -> list[str]:
    """The run names the probe will write, each checked (valid, not taken unless `overwrite`)."""
    name = check_new_run(store, name, overwrite)
    return [check_new_run(store, run, overwrite) for run in run_names(name, settings)]


class StagedProgress:
    """One progress callback over the probe's recordings, in `run_names` order: each recording reports
    `(done, total)` and ends with `done == total`, so the next call belongs to the next run.
    `report(fraction, text)` receives the share of the whole probe done and a line naming the run."""

    def __init__(self, names: Sequence[str], report: Callable[[float, str], None]) -> None:
        self.names = list(names)
        self.report = report
        self.stage = 0
        self._finished = False

    def __call__(self, done: int, total: int) -> None:
        if self._finished:
            self.stage = min(self.stage + 1, len(self.names) - 1)
        self._finished = done >= total
        fraction = (self.stage + min(done / max(total, 1), 1.0)) / len(self.names)
        self.report(
            fraction,
            f"recording {self.names[self.stage]} ({self.stage + 1} of {len(self.names)}): {done} of {total}",
        )


def probe_request(inputs: PageInputs, settings: ProbeSettings, *, name: str, overwrite: bool) -> ProbeRequest:
    """The page's probe as the request the CLI builds for the same inputs."""
    if isinstance(inputs, Sampling) and not isinstance(inputs, DiffusionRequest):
        inputs = DiffusionRequest(**dataclasses.asdict(inputs))
    return ProbeRequest(name=name, settings=settings, inputs=inputs, overwrite=overwrite)


def run_probe(
    model: LoadedModel,
    inputs: PageInputs,
    settings: ProbeSettings,
    *,
    store: Store,
    name: str,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Run:
    """Record the probe's runs (`run_names(name, settings)`, in that order) and return its own run."""
    check_settings(settings)
    runs = probe_request(inputs, settings, name=name, overwrite=overwrite).execute(
        model, store=store, progress=progress
    )
    return runs[1]


# --- Results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ResultTable:
    """One table of a probe's result, with the figure drawn from it (a builder taking a column width)."""

    key: str
    """Short and stable: names the chart's widget key and the downloaded files."""
    title: str
    table: pd.DataFrame
    figure: Callable[[Width], go.Figure] | None = None


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """A probe run with its companions and tables."""

    probe: str
    run: str
    runs: list[str]
    """Every run of the probe, the base first."""
    base: str | None
    edit: pd.DataFrame
    """Per edited router: what the probe did there (empty for the batch probe)."""
    tables: list[ResultTable]
    note: str | None = None


def is_probe_result(run: Run) -> bool:
    """A run whose result the page shows: an ablation (not a random one), a forced or noisy run, or the
    batched run of a batch probe (not the base runs beside them)."""
    entry = probe_of(run) or {}
    kind = entry.get("probe")
    if kind == "ablate":
        return entry.get("params", {}).get("random_seed") is None
    return kind in ("force", "noise") or (kind == "batch" and bool(entry.get("base")))


def _open_base(store: Store, run: Run, entry: Mapping[str, Any]) -> Run | None:
    base = entry.get("base")
    if not base:
        return None
    if not store.exists(str(base)):
        raise InputError(f"probe run {run.name!r} compares with run {base!r}, which is not in the store")
    return store.open(str(base))


def _randoms(store: Store, run: Run, base: Run) -> list[Run]:
    """The random ablations recorded with `run` (`NAME.random-0`, `-1`, …, against the same base)."""
    found: list[Run] = []
    while store.exists(name := f"{run.name}.random-{len(found)}"):
        other = store.open(name)
        entry = probe_of(other) or {}
        if entry.get("base") != base.name or entry.get("params", {}).get("random_seed") != len(found):
            break
        found.append(other)
    return found


def edit_table(entry: Mapping[str, Any], run: Run) -> pd.DataFrame:
    """`router, layer, disabled, forced, input_noise, logit_noise, shared_off`: the edit per router."""
    layers = {r.path: r.layer for r in run.info.routers}
    rows = [
        {
            "router": path,
            "layer": layers.get(path, -1),
            "disabled": ", ".join(map(str, edit.get("disable", []))),
            "forced": ", ".join(map(str, edit.get("force", []))),
            "input_noise": float(edit.get("input_noise", 0.0)),
            "logit_noise": float(edit.get("logit_noise", 0.0)),
            "shared_off": bool(edit.get("drop_shared", False)),
        }
        for path, edit in entry.get("intervention", {}).get("routers", {}).items()
    ]
    columns = ["router", "layer", "disabled", "forced", "input_noise", "logit_noise", "shared_off"]
    return pd.DataFrame(rows, columns=columns)


def forced_experts(entry: Mapping[str, Any]) -> list[int]:
    """The forced expert set (the union over routers, when they differ)."""
    chosen = entry.get("params", {}).get("experts") or {}
    sets = chosen.values() if isinstance(chosen, Mapping) else [chosen]
    return sorted({int(e) for experts in sets for e in experts})


def companions(store: Store, run: Run) -> list[Run]:
    """Every run of probe run `run`'s comparison, the base first: base, `run`, its random ablations."""
    entry = probe_of(run)
    if entry is None or not is_probe_result(run):
        raise InputError(f"run {run.name!r} is not a probe run (ablate, force, noise or batch)")
    base = _open_base(store, run, entry)
    if base is None:
        return [run]
    randoms = _randoms(store, run, base) if entry["probe"] == "ablate" else []
    return [base, run, *randoms]


def probe_result(store: Store, run: Run) -> ProbeResult:
    """The tables of probe run `run` against its base (and random ablations), with their figures."""
    runs = companions(store, run)
    entry = probe_of(run) or {}
    kind = str(entry["probe"])
    base = runs[0] if len(runs) > 1 else None
    names = [r.name for r in runs]
    result = partial(
        ProbeResult, probe=kind, run=run.name, runs=names, base=None if base is None else base.name
    )
    edit = edit_table(entry, run)
    if base is None:
        return result(edit=edit, tables=[], note="this probe run names no base run to compare with")
    if kind == "ablate":
        return result(edit=edit, tables=ablation_tables(entry, base, run, runs[2:]))
    if kind == "force":
        return result(edit=edit, tables=[force_table(entry, base, run)])
    if kind == "noise":
        return result(edit=edit, tables=noise_tables(base, run))
    from routescope.analysis.batching import batch_dependence

    table = batch_dependence(base, run)
    size = entry.get("params", {}).get("batch_size")
    batch = ResultTable(
        key="batch",
        title=f"Decisions that change when the inputs share a batch of {size} (against one at a time)",
        table=table,
        figure=lambda width: draw("batch-dependence", table, FigureRequest(run=base, other=run, width=width)),
    )
    return result(edit=edit, tables=[batch])


def ablation_tables(
    entry: Mapping[str, Any], base: Run, ablated: Run, randoms: Sequence[Run]
) -> list[ResultTable]:
    """Loss per label value (text) or denoising loss per timestep bucket and class accuracy (the DiT)."""
    from routescope.analysis.ablation import ablation_accuracy, ablation_denoising, ablation_loss

    metrics = entry.get("metrics") or {}
    seeds = f"{len(randoms)} random ablation{'s' if len(randoms) != 1 else ''} of the same size"
    if "loss" in metrics:
        by = base.label_columns[0] if base.label_columns else None
        loss = ablation_loss(base, ablated, randoms, by=by)
        return [
            ResultTable(
                key="loss",
                title=f"Next-token loss (nats per token): base, ablated and {seeds}",
                table=loss,
                figure=lambda width: figure_ablation(loss, group=by or "group", width=width),
            )
        ]
    tables = []
    if "denoising" in metrics:
        denoising = ablation_denoising(base, ablated, randoms)
        tables.append(
            ResultTable(
                key="denoising",
                title=f"Denoising loss (ε-MSE) per timestep bucket: base, ablated and {seeds}",
                table=denoising,
                figure=lambda width: figure_ablation(
                    denoising, group="bucket", value_title="ε-prediction MSE", width=width
                ),
            )
        )
    if "classes" in metrics:
        accuracy = ablation_accuracy(base, ablated, randoms)
        tables.append(
            ResultTable(
                key="accuracy",
                title="Share of the generated digits recognised as the requested class",
                table=accuracy,
                figure=lambda width: figure_ablation(
                    accuracy, group="class", value_title="class accuracy", width=width
                ),
            )
        )
    return tables


def force_table(entry: Mapping[str, Any], base: Run, forced: Run) -> ResultTable:
    """`set_share` of the forced expert set in the base run and in the forced run (column `run`), by the
    label the tokens were selected by (else the first label column)."""
    from routescope.analysis.forcing import set_share

    experts = forced_experts(entry)
    where = entry.get("params", {}).get("where") or {}
    label = next(iter(where), None) or (forced.label_columns[0] if forced.label_columns else None)
    if label is not None and label not in forced.label_columns:
        label = None
    both = [set_share(run, experts, label).assign(run=run.name) for run in (base, forced)]
    table = pd.concat(both, ignore_index=True)
    table = table[["run", *[c for c in table.columns if c != "run"]]]
    return ResultTable(
        key="set-share",
        title=f"Share of decisions dispatched only to experts {experts}, in the base and the forced run",
        table=table,
        figure=lambda width: figure_set_share(table, label=label, width=width),
    )


def noise_tables(base: Run, noisy: Run) -> list[ResultTable]:
    """The top-1 flip rate per margin bucket and its correlation with margin and entropy per layer."""
    from routescope.analysis.stability import flip_correlation, flip_rate

    rates = flip_rate(base, noisy)
    return [
        ResultTable(
            key="flip-rate",
            title="Top-1 flip rate under noise, by the base run's top-1 − top-2 margin",
            table=rates,
            figure=lambda width: draw("flips", rates, FigureRequest(run=base, other=noisy, width=width)),
        ),
        ResultTable(
            key="flip-correlation",
            title="Flips against margin and entropy, per layer (layer −1: all layers)",
            table=flip_correlation(base, noisy),
        ),
    ]
