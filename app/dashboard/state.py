"""Session-state keys, named once: every widget's `key=` and the few values pages share.

Widget keys are namespaced by page (`run.*`, `tokens.*`, `experts.*`, `noise.*`, `balance.*`, `embed.*`,
`compare.*`, `placement.*`, `probe.*`; `export.*` for the export controls every chart gets), so a new page
cannot collide with an old one. A widget whose option labels depend on the run (or the sample) takes its key
through `scoped(key, run, ...)`: Streamlit identifies a keyed widget by its key alone, and its browser side
keeps showing the old label of a value that survives a change of options (sample `#0 · class: 0` after
switching to a text run).
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
RUN_JOB = "run.job"
"""Id of the recording job this session started on the Run page (watched until it ends, then dropped)."""
PROBE_JOB = "probe.job"
"""Id of the probe job this session started on the Interventions page."""
PRUNE_JOB = "prune.job"
"""Id of the prune study job this session started in the Interventions page's Prune section."""
EMBED_JOB = "embed.job"
"""Id of the UMAP job this session started on the Embeddings page."""
JOBS_WATCHED = "jobs.watched"
"""Ids of other jobs the sidebar showed running in this session (a failure among them is shown once)."""
DEFAULTS_ERROR_SHOWN = "jobs.defaults_error_shown"
"""Whether this session was shown the first start's error."""

# Run page widgets.
RUN_MODEL_SOURCE = "run.model_source"
RUN_BUNDLED = "run.bundled"
RUN_MODEL_SPEC = "run.model_spec"
RUN_INPUT_SOURCE = "run.input_source"
RUN_TEXT = "run.text"
RUN_FILE = "run.file"
RUN_IMAGES = "run.images"
RUN_TEXT_COLUMN = "run.text_column"
RUN_LABEL_COLUMNS = "run.label_columns"
RUN_MAX_NEW_TOKENS = "run.max_new_tokens"
RUN_PROBS = "run.probs"
RUN_TOKEN_LOSS = "run.token_loss"
RUN_EXPERT_STATS = "run.expert_stats"
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
TOKENS_COLOUR = "tokens.colour"
TOKENS_IMAGE = "tokens.image"

# Experts page widgets and charts.
EXPERTS_RUN = "experts.run"
EXPERTS_LABEL = "experts.label"
EXPERTS_LAYER = "experts.layer"
EXPERTS_EXPERT = "experts.expert"
EXPERTS_LOAD_CHART = "experts.load_chart"
EXPERTS_LIFT_CHART = "experts.lift_chart"
EXPERTS_TOKENS_CHART = "experts.tokens_chart"
EXPERTS_PARTNERS_CHART = "experts.partners_chart"
EXPERTS_STEPS_CHART = "experts.steps_chart"
EXPERTS_LABELS_TABLE = "experts.labels_table"
EXPERTS_TOKENS_TABLE = "experts.tokens_table"
EXPERTS_CRITERION = "experts.criterion"
EXPERTS_SALIENCY_CHART = "experts.saliency_chart"
EXPERTS_LOSS_CHART = "experts.loss_chart"
EXPERTS_MODALITY_CHART = "experts.modality_chart"
EXPERTS_MODALITY_LAYER = "experts.modality_layer"
EXPERTS_MODALITY_LIFT_CHART = "experts.modality_lift_chart"
EXPERTS_TOKEN_VIEW = "experts.token_routing_view"
EXPERTS_TOKEN_CHART = "experts.token_routing_chart"

# Noise steps page widgets and charts.
NOISE_RUN = "noise.run"
NOISE_LAYER = "noise.layer"
NOISE_SAMPLE = "noise.sample"
NOISE_BRANCH = "noise.branch"
NOISE_STEP = "noise.step"
NOISE_STEPS_CHART = "noise.steps_chart"
NOISE_LINES_CHART = "noise.lines_chart"
NOISE_SIMILARITY_CHART = "noise.similarity_chart"
NOISE_SENSITIVITY_CHART = "noise.sensitivity_chart"
NOISE_SPATIAL_CHART = "noise.spatial_chart"
NOISE_BRANCHES_CHART = "noise.branches_chart"
NOISE_PATHS_CHART = "noise.paths_chart"

# Balance & uncertainty page widgets and charts.
BALANCE_RUN = "balance.run"
BALANCE_LAYER = "balance.layer"
BALANCE_TOP = "balance.top"
BALANCE_LOAD_CHART = "balance.load_chart"
BALANCE_METRICS_CHART = "balance.metrics_chart"
BALANCE_UNCERTAINTY_CHART = "balance.uncertainty_chart"
BALANCE_ENTROPY_CHART = "balance.entropy_chart"
BALANCE_MARGIN_CHART = "balance.margin_chart"
BALANCE_TABLE = "balance.table"
BALANCE_UNCERTAIN_TABLE = "balance.uncertain_table"
BALANCE_LOSS_CHART = "balance.loss_chart"
BALANCE_LOSS_LABEL = "balance.loss_label"
BALANCE_LOSS_LABEL_CHART = "balance.loss_label_chart"

# Placement page widgets and charts.
PLACEMENT_RUN = "placement.run"
PLACEMENT_THRESHOLDS = "placement.thresholds"
PLACEMENT_DEVICES = "placement.devices"
PLACEMENT_REPLICAS = "placement.replicas"
PLACEMENT_OTHER = "placement.other"
PLACEMENT_COVERAGE_CHART = "placement.coverage_chart"
PLACEMENT_HOT_SET_CHART = "placement.hot_set_chart"
PLACEMENT_DEVICES_CHART = "placement.devices_chart"
PLACEMENT_DEVICES_TABLE = "placement.devices_table"
PLACEMENT_PREDICTABILITY_CHART = "placement.predictability_chart"
PLACEMENT_DRIFT_CHART = "placement.drift_chart"
PLACEMENT_DRIFT_EXPERTS_CHART = "placement.drift_experts_chart"

# Embeddings page widgets and charts.
EMBED_RUN = "embed.run"
EMBED_LAYER = "embed.layer"
EMBED_OF = "embed.of"
EMBED_METHOD = "embed.method"
EMBED_POINTS = "embed.points"
EMBED_COLOUR = "embed.colour"
EMBED_COMPUTE = "embed.compute"
EMBED_CHART = "embed.chart"
EMBED_COMPUTED = "embed.computed"
"""Not a widget: the UMAP embeddings this session asked for (a set of option tuples)."""

# Compare page widgets and charts.
COMPARE_RUN = "compare.run"
COMPARE_OTHER = "compare.other"
COMPARE_KIND = "compare.kind"
COMPARE_LABEL = "compare.label"
COMPARE_LAYER = "compare.layer"
COMPARE_METRIC = "compare.metric"
COMPARE_CHART = "compare.chart"
COMPARE_AGREEMENT_CHART = "compare.agreement_chart"
COMPARE_TABLE = "compare.table"
COMPARE_RANK_CHART = "compare.rank_chart"
COMPARE_FLIPS_CHART = "compare.flips_chart"
COMPARE_REPLAY_CHART = "compare.replay_chart"
COMPARE_SERIES = "compare.series"
COMPARE_SERIES_CHART = "compare.series_chart"

# Interventions page widgets and charts.
PROBE_MODEL_SOURCE = "probe.model_source"
PROBE_BUNDLED = "probe.bundled"
PROBE_MODEL_SPEC = "probe.model_spec"
PROBE_KIND = "probe.kind"
PROBE_LAYERS = "probe.layers"
PROBE_ABLATE_WHICH = "probe.ablate_which"
PROBE_EXPERTS = "probe.experts"
PROBE_TOP = "probe.top"
PROBE_SHARED = "probe.shared"
PROBE_SEEDS = "probe.seeds"
PROBE_FORCE_EXPERTS = "probe.force_experts"
PROBE_WHERE = "probe.where"
PROBE_SIGMA = "probe.sigma"
PROBE_NOISE_ON = "probe.noise_on"
PROBE_NOISE_SEED = "probe.noise_seed"
PROBE_BATCH_SIZE = "probe.batch_size"
PROBE_INPUT_SOURCE = "probe.input_source"
PROBE_TEXT = "probe.text"
PROBE_DOMAINS = "probe.domains"
PROBE_MAX_TEXTS = "probe.max_texts"
PROBE_CLASSES = "probe.classes"
PROBE_SAMPLES_PER_CLASS = "probe.samples_per_class"
PROBE_STEPS = "probe.steps"
PROBE_CFG_SCALE = "probe.cfg_scale"
PROBE_SEED = "probe.seed"
PROBE_NAME = "probe.name"
PROBE_OVERWRITE = "probe.overwrite"
PROBE_START = "probe.start"
PROBE_RESULT_RUN = "probe.result_run"
PROBE_EDIT_TABLE = "probe.edit_table"
PROBE_CHART = "probe.chart"
PROBE_TABLE = "probe.table"
REROUTE_JOB = "probe.reroute.job"
"""Id of the reroute job this session started in the Interventions page's Reroute section."""
REROUTE_MODEL = "probe.reroute.model"
REROUTE_TEXTS = "probe.reroute.texts"
REROUTE_ALTERNATIVES = "probe.reroute.alternatives"
REROUTE_TOKENS = "probe.reroute.tokens"
REROUTE_SEED = "probe.reroute.seed"
REROUTE_OVERWRITE = "probe.reroute.overwrite"
REROUTE_NAME = "probe.reroute.name"
REROUTE_START = "probe.reroute.start"
REROUTE_RUN = "probe.reroute.run"
REROUTE_CHART = "probe.reroute.chart"
REROUTE_TABLE = "probe.reroute.table"

# Interventions page, Prune section widgets (app/dashboard/prune_section.py).
PRUNE_MODEL_SOURCE = "prune.model_source"
PRUNE_BUNDLED = "prune.bundled"
PRUNE_MODEL_SPEC = "prune.model_spec"
PRUNE_CRITERIA = "prune.criteria"
PRUNE_RATIOS = "prune.ratios"
PRUNE_MAX_TEXTS = "prune.max_texts"
PRUNE_NAME = "prune.name"
PRUNE_START = "prune.start"
PRUNE_RESULT_RUN = "prune.result_run"
PRUNE_CHART = "prune.chart"
PRUNE_TABLE = "prune.table"

# Export controls, one set per chart or table (scoped by the chart's own key).
EXPORT_MENU = "export.menu"
EXPORT_FORMAT = "export.format"
EXPORT_WIDTH = "export.width"
EXPORT_PREPARE = "export.prepare"
EXPORT_DOWNLOAD = "export.download"
EXPORT_CSV = "export.csv"
EXPORT_LATEX = "export.latex"
EXPORT_FILE = "export.file"
"""Not a widget: the file the Prepare button rendered, `(format, width, bytes)`, kept for its download."""


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
