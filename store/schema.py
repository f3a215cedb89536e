"""The run store's schema: the one place that says what a run's tables hold.

A run is a star: two fact tables (`assignments`, one row per chosen expert; `decisions`, one row per
token × router × step × call) and dimension tables (`samples`, `tokens`, `steps`, and the manifest's
router list). Integer widths are explicit so that files stay small and DuckDB, pandas and Spark agree on
types. Writers validate every batch against these schemas; readers check the schema version and the
columns before handing a table out. `docs/format.md` documents the same content for users.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
"""Bumped whenever a table or manifest field changes meaning; readers refuse newer versions."""

MANIFEST_FILE = "manifest.json"

SAMPLES_CORE = pa.schema(
    [
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("n_generated", pa.int32(), nullable=False),
        pa.field("generated", pa.string()),
    ]
)
"""Per input sequence. User label columns (`domain`, ...) are appended as strings."""

TOKENS = pa.schema(
    [
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("token_id", pa.int32(), nullable=False),
        pa.field("token", pa.string()),
        pa.field("generated", pa.bool_(), nullable=False),
        pa.field("stack", pa.string(), nullable=False),
        pa.field("row", pa.int32()),
        pa.field("col", pa.int32()),
    ]
)
"""Per (sample, stack, position). `row`/`col` place image-patch tokens on the patch grid (null for text).
Positions count from the first real token (padding never appears);
`stack` is `decoder` for decoder-only models and tells encoder from decoder tokens otherwise."""

KEY_FIELDS = [
    pa.field("sample", pa.int32(), nullable=False),
    pa.field("position", pa.int32()),
    pa.field("step", pa.int32(), nullable=False),
    pa.field("router", pa.int16(), nullable=False),
    pa.field("layer", pa.int16(), nullable=False),
    pa.field("call", pa.int16(), nullable=False),
]
"""Columns that identify one routing decision; both fact tables start with them. `position` is null for the
decisions of a router without positions (`RouterInfo.positions == "none"`, e.g. Switch-DiT's timestep gate):
such a router decides once per (sample, step, call) for all of the sample's tokens, so it has one decision
row per (sample, step, router, call). Token routers always fill it. (Making the column nullable was
additive: files written before read unchanged, and SCHEMA_VERSION stays 1.)"""

ASSIGNMENTS = pa.schema(
    [
        *KEY_FIELDS,
        pa.field("rank", pa.int16(), nullable=False),
        pa.field("expert", pa.int32(), nullable=False),
        pa.field("weight", pa.float32(), nullable=False),
        pa.field("dropped", pa.bool_(), nullable=False),
    ]
)
"""One row per chosen expert; the k rows of one decision are adjacent and ordered by rank."""

DECISIONS = pa.schema(
    [
        *KEY_FIELDS,
        pa.field("entropy", pa.float32(), nullable=False),
        pa.field("margin", pa.float32(), nullable=False),
        pa.field("max_prob", pa.float32(), nullable=False),
    ]
)
"""One row per routing decision; `probs` and `logits` (list<float32>, length n_experts) are appended when
asked. Both are optional columns: readers never require them (runs recorded before `logits` existed have
`probs` only), so adding `logits` did not change the schema version."""

PROBS_FIELD = pa.field("probs", pa.list_(pa.float32()))
LOGITS_FIELD = pa.field("logits", pa.list_(pa.float32()))
"""The raw router scores `probs` was computed from (logits, or pre-sigmoid scores); null where the decode
path has none."""

NLL_FIELD = pa.field("nll", pa.float32())
"""−log p(next token) under the model's own logits (`record(token_loss=True)`); null where there is no next
token (a sequence's last position) and on tokens the model does not predict (encoder inputs)."""
PREDICTED_FIELD = pa.field("predicted", pa.int32())
"""The argmax next-token id at this position (`record(token_loss=True)`)."""
MODALITY_FIELDS = [
    pa.field("modality", pa.string()),
    pa.field("image", pa.int32()),
    pa.field("frame", pa.int32()),
]
"""Runs recorded with images (`record(images=...)`): `modality` is `text`, `image` or `video` for every
token; `image` numbers the input's images (0 …) and `frame` the temporal patch index within one (0 for a
still image) on image tokens, null on text. With these runs `row`/`col` place an image token on its
image's merged patch grid, as they place diffusion patch tokens."""
OUTPUT_NORM_FIELD = pa.field("output_norm", pa.float32())
"""‖f_e(x)‖₂ of the chosen expert's output before its gate weight (`record(expert_stats=True)`); null where
the expert did not run (a token dropped for capacity)."""

SHARED_EXPERTS = pa.schema(
    [
        *KEY_FIELDS,
        pa.field("module", pa.int16(), nullable=False),
        pa.field("output_norm", pa.float32(), nullable=False),
        pa.field("gate", pa.float32()),
    ]
)
"""Runs recorded with `expert_stats=True` whose routers have shared experts: one row per decision and shared
module (`module` indexes the router's `shared_experts` list): ‖output‖₂ of the shared expert for that token
and its learnt gate (the sigmoid of `<module>_gate`; null where the block has none)."""

OUTPUTS = pa.schema(
    [
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("logprobs", pa.list_(pa.float16()), nullable=False),
    ]
)
"""Runs recorded with `output_logprobs=True`: one row per input token, the model's next-token distribution
at that position as log-probabilities over the whole vocabulary (float16: 2 bytes per vocabulary entry and
token; recordings refuse vocabularies over `hooks.output_logprobs.MAX_VOCAB`). Compared between runs by
`output-kl`."""
EXPERT_MEANS = pa.schema(
    [
        pa.field("router", pa.int16(), nullable=False),
        pa.field("layer", pa.int16(), nullable=False),
        pa.field("call", pa.int16(), nullable=False),
        pa.field("expert", pa.int32(), nullable=False),
        pa.field("tokens", pa.int64(), nullable=False),
        pa.field("output_sum", pa.list_(pa.float32()), nullable=False),
    ]
)
"""Runs recorded with `expert_means=True`: per batch, router call and expert, Σ f_e(x) over the batch's real
tokens (every token through every expert of the layer, before any gate; length = hidden size) and how many
tokens that sums. An expert's mean output over the run's tokens is Σ output_sum / Σ tokens over its rows."""

STEPS = pa.schema(
    [
        pa.field("step", pa.int32(), nullable=False),
        pa.field("timestep", pa.float64()),
        pa.field("sigma", pa.float64()),
    ]
)
"""Per generation / denoising step: the scheduler's timestep and noise level where defined."""

IMAGES = pa.schema(
    [
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("pixels", pa.list_(pa.float32()), nullable=False),
    ]
)
"""Diffusion runs: final images (`images`, step = -1) and optionally each step's predicted clean image
(`x0`), one row per conditional sample, pixels row-major in [0, 1]."""

CORE_TABLES: dict[str, pa.Schema] = {
    "samples": SAMPLES_CORE,
    "tokens": TOKENS,
    "assignments": ASSIGNMENTS,
    "decisions": DECISIONS,
    "steps": STEPS,
    "images": IMAGES,
    "x0": IMAGES,
}

RESERVED_COLUMNS = frozenset(name for schema in CORE_TABLES.values() for name in schema.names) | {
    PROBS_FIELD.name,
    LOGITS_FIELD.name,
    NLL_FIELD.name,
    PREDICTED_FIELD.name,
    OUTPUT_NORM_FIELD.name,
    *(extra.name for extra in MODALITY_FIELDS),
}
"""Names a user label column may not take: it would shadow a core column in joins."""

MANIFEST_REQUIRED = (
    "schema_version",
    "name",
    "status",
    "model",
    "routers",
    "tables",
    "created",
)

ROUTER_FIELDS = (
    "id",
    "path",
    "layer",
    "call_count",
    "kind",
    "stack",
    "n_experts",
    "top_k",
    "shared_experts",
    "positions",
)
ROUTER_POSITIONS = ("token", "none")
"""`RouterInfo.positions`: `token` (one decision per token, the default) or `none` (one decision per sample
and step, shared by all its tokens; its fact rows have a null `position`)."""


def samples_schema(label_columns: list[str]) -> pa.Schema:
    """The samples schema with the run's label columns (strings) appended."""
    schema = SAMPLES_CORE
    for column in label_columns:
        schema = schema.append(pa.field(column, pa.string()))
    return schema


def decisions_schema(with_probs: bool, with_logits: bool = False) -> pa.Schema:
    """The decisions schema, with the full `probs` and `logits` list columns when the run recorded them
    (recorders store both with `probs=True`)."""
    schema = DECISIONS.append(PROBS_FIELD) if with_probs else DECISIONS
    return schema.append(LOGITS_FIELD) if with_logits else schema


def tokens_schema(with_loss: bool = False, with_modality: bool = False) -> pa.Schema:
    """The tokens schema, with the nullable `nll` and `predicted` columns when the run recorded token loss
    and `modality`, `image`, `frame` when it recorded images (optional columns: runs without them still
    read)."""
    schema = TOKENS.append(NLL_FIELD).append(PREDICTED_FIELD) if with_loss else TOKENS
    for extra in MODALITY_FIELDS if with_modality else []:
        schema = schema.append(extra)
    return schema


def assignments_schema(with_norms: bool = False) -> pa.Schema:
    """The assignments schema, with the nullable `output_norm` column when the run recorded expert stats."""
    return ASSIGNMENTS.append(OUTPUT_NORM_FIELD) if with_norms else ASSIGNMENTS


def table_file(table: str) -> str:
    """File name of a table inside a run folder."""
    return f"{table}.parquet"
