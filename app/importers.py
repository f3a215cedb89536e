"""`routescope.importers`: engine routing traces (vLLM, SGLang, Megatron, OLMoE, llama.cpp) as runs.

The parsing lives with the other sources in `routescope.hooks.importers`; this module is the public
entry point the CLI (`routescope import`), notebooks and scripts use: `import_trace(kind, files, ...)`,
one function per engine, and the tokenizer lookup (a local folder or a bundled model's; never a hub).
Formats, what each keeps and worked examples: docs/import.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from routescope.hooks.importers import SOURCES, TraceError, import_source
from routescope.store import InputError, Run, Store

KINDS = tuple(SOURCES)
"""Import kinds: vllm, sglang, megatron, olmoe, llamacpp."""

PathLike = Path | str


def load_tokenizer(spec: str | None) -> Any:
    """A tokenizer for token texts: `bundled:NAME` (a bundled model's) or a local folder; no hub access."""
    if spec is None:
        return None
    if spec.startswith("bundled:"):
        from routescope.models import load_bundled

        try:
            return load_bundled(spec.removeprefix("bundled:"))[1]
        except KeyError:
            raise InputError(f"unknown bundled model {spec!r}", field="tokenizer") from None
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise InputError(f"tokenizer {spec!r} is not a local folder (no hub downloads)", field="tokenizer")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{folder}: no tokenizer there ({str(exc).splitlines()[0][:80]})", field="tokenizer"
        ) from None


def import_trace(
    kind: str,
    files: Sequence[PathLike],
    store: Store | PathLike,
    name: str,
    tokenizer: str | None = None,
    labels: PathLike | None = None,
    label_column: Sequence[str] | str | None = None,
    overwrite: bool = False,
    *,
    n_experts: int | None = None,
    progress: bool = False,
    **options: Any,
) -> Run:
    """Import engine trace `files` of `kind` as run `name` of `store` and return it.

    `tokenizer` (a local folder or `bundled:NAME`) gives token texts; `labels` is a JSONL file with one
    object per request, in order (`label_column` picks columns; default all); `n_experts` checks ids
    against the model's expert count (else it is inferred as the largest id + 1). `options` go to the
    engine's source (SGLang JSONL: `layers=` or `top_k=`). A bad file raises one `InputError` line naming
    the file and record, and leaves nothing in the store.
    """
    if kind not in SOURCES:
        raise InputError(f"unknown import kind {kind!r}; kinds: {', '.join(KINDS)}", field="kind")
    columns = [label_column] if isinstance(label_column, str) else label_column
    source = SOURCES[kind](
        list(files),
        tokenizer=load_tokenizer(tokenizer),
        tokenizer_name=tokenizer,
        labels=labels,
        label_columns=columns,
        n_experts=n_experts,
        **options,
    )
    return import_source(source, store=store, name=name, overwrite=overwrite, progress=progress)


def import_vllm(files: Sequence[PathLike], store: Store | PathLike, name: str, **kwargs: Any) -> Run:
    """vLLM `routed_experts`: `.jsonl` of request outputs or `.npz` (see `import_trace`)."""
    return import_trace("vllm", files, store, name, **kwargs)


def import_sglang(files: Sequence[PathLike], store: Store | PathLike, name: str, **kwargs: Any) -> Run:
    """SGLang `meta_info.routed_experts` JSONL (give `layers=` or `top_k=`) or recorder dumps (`.pt`)."""
    return import_trace("sglang", files, store, name, **kwargs)


def import_megatron(files: Sequence[PathLike], store: Store | PathLike, name: str, **kwargs: Any) -> Run:
    """Megatron-Core `router_trace_rank{r}.jsonl` files, ranks merged."""
    return import_trace("megatron", files, store, name, **kwargs)


def import_olmoe(files: Sequence[PathLike], store: Store | PathLike, name: str, **kwargs: Any) -> Run:
    """OLMoE analysis JSONL (`input_ids`, `exp_ids [T][k][L]`)."""
    return import_trace("olmoe", files, store, name, **kwargs)


def import_llamacpp(files: Sequence[PathLike], store: Store | PathLike, name: str, **kwargs: Any) -> Run:
    """llama.cpp moe-trace CSV (`layer,expert` rows): counts only."""
    return import_trace("llamacpp", files, store, name, **kwargs)


__all__ = [
    "KINDS",
    "TraceError",
    "import_llamacpp",
    "import_megatron",
    "import_olmoe",
    "import_sglang",
    "import_trace",
    "import_vllm",
    "load_tokenizer",
]
