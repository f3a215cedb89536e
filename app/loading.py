"""`load_model(spec)`: one entry point for bundled models, checkpoint families, local folders and hub ids.

Weights load through transformers, which reads safetensors (and torch files only with
`weights_only=True`); remote code never runs unless `trust_remote_code=True` is passed on purpose.
A checkpoint family spec (`dit-moe:S-8E2A`) names an architecture whose bare weights file comes with
`weights=`; the family's loader reads it weights-only and matches its keys strictly.
`device_map="auto"` (accelerate, the `large` extra) spreads a model too big for one GPU over the GPUs
(and CPU) of this machine and loads it in `dtype` directly; `remote=True` builds only the architecture, on
the meta device, from the hub config — the weights stay on the NDIF server that runs the traces
(docs/scale.md).
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from routescope.hooks import LoadedModel
from routescope.models import BUNDLED, CHECKPOINT_FAMILIES, bundled_names, load_bundled
from routescope.store import ModelSpecError

BUNDLED_PREFIX = "bundled:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_model(
    spec: str,
    *,
    trust_remote_code: bool = False,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    revision: str | None = None,
    weights: str | None = None,
    vae: str | None = None,
    sampler: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    remote: bool = False,
) -> LoadedModel:
    """Load `bundled:NAME`, `FAMILY:CONFIG` with `weights=FILE` (e.g. `dit-moe:S-8E2A`; diffusion families
    also take `vae=DIR` and `sampler=`), a local checkpoint folder (with config.json) or a hub id.

    `device_map` ("auto", "cpu", "cuda:0", or accelerate's module → device dict) places the model with
    accelerate instead of `device`; `remote=True` (hub ids only) loads no weights: the architecture on
    the meta device, for `record(..., remote=True)`."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("empty model spec; pass bundled:NAME, a checkpoint folder or a hub id")
    if device_map is not None and device is not None:
        raise ModelSpecError("give --device or --device-map, not both")
    if remote:
        if ":" in spec or Path(spec).expanduser().exists() or not _HUB_ID.match(spec):
            raise ModelSpecError(f"remote recording takes a hub id hosted on NDIF (org/model), not {spec!r}")
        with _quiet_hub():
            return _meta_model(spec, trust_remote_code, revision)
    family, colon, _ = spec.partition(":")
    if colon and family in CHECKPOINT_FAMILIES:
        return _place(_from_family(spec, weights, vae, sampler, _dtype(dtype)), None, device)
    if weights or vae or sampler:
        families = ", ".join(f"{name}:CONFIG" for name in CHECKPOINT_FAMILIES)
        raise ModelSpecError(f"weights, vae and sampler go with a checkpoint family spec ({families})")
    if spec.startswith(BUNDLED_PREFIX):
        name = spec[len(BUNDLED_PREFIX) :]
        try:
            model, tokenizer = load_bundled(name)
        except KeyError:
            raise ModelSpecError(
                f"unknown bundled model {name!r}; bundled models: {', '.join(bundled_names())}"
            ) from None
        loaded = LoadedModel(
            model=model,
            tokenizer=tokenizer,
            spec=spec,
            source="bundled",
            sampler=BUNDLED[name].sampler,
            quality=BUNDLED[name].quality,
        )
        if device_map is not None:
            loaded = _place(loaded, dtype, None)
            loaded.model = _dispatch(loaded.model, device_map)
            return loaded
        return _place(loaded, dtype, device)
    placement = _placement(dtype, device_map)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ModelSpecError(f"{spec} is not a checkpoint folder (no config.json in it)")
        loaded = _from_pretrained(str(path), trust_remote_code, revision, local=True, placement=placement)
        loaded.info["path"] = str(path.resolve())
        return loaded if placement else _place(loaded, dtype, device)
    if not _HUB_ID.match(spec) or ".." in spec:
        raise ModelSpecError(f"unknown model {spec!r}: not a bundled model, an existing folder or a hub id")
    loaded = _from_pretrained(spec, trust_remote_code, revision, local=False, placement=placement)
    return loaded if placement else _place(loaded, dtype, device)


def _from_family(
    spec: str, weights: str | None, vae: str | None, sampler: str | None, dtype: torch.dtype | None
) -> LoadedModel:
    family, _, config = spec.partition(":")
    entry = CHECKPOINT_FAMILIES[family]
    if not weights:
        raise ModelSpecError(f"{spec} needs its weights file (.pt or .safetensors)", field="weights")
    if not config:
        raise ModelSpecError(f"{spec}: name a config, e.g. {family}:{entry.configs()[0]}")
    try:
        model, model_sampler, info = entry.load(
            config, weights=weights, vae=vae, sampler=sampler, dtype=dtype
        )
    except ValueError as exc:  # the family's one-line errors: bad config, unreadable or mismatched file
        raise ModelSpecError(str(exc).strip().splitlines()[0]) from None  # whole: it names the fix
    return LoadedModel(model=model, spec=spec, source="local", sampler=model_sampler, info=info)


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ModelSpecError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return resolved


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """Keep transformers' and the hub client's retry chatter off stderr; failures become one-line errors."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "transformers")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR + 10)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _placement(dtype: str | torch.dtype | None, device_map: str | dict[str, Any] | None) -> dict[str, Any]:
    """`from_pretrained` arguments that load the weights in place: accelerate's device map, in `dtype`."""
    if device_map is None:
        return {}
    _need_accelerate()
    resolved = _dtype(dtype)
    return {"device_map": device_map, **({"dtype": resolved} if resolved is not None else {})}


def _need_accelerate() -> None:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise ModelSpecError("--device-map needs accelerate: pip install 'routescope[large]'") from None


def _dispatch(model: torch.nn.Module, device_map: str | dict[str, Any]) -> torch.nn.Module:
    """Place an already-built model (a bundled one) with accelerate, as `from_pretrained` would."""
    _need_accelerate()
    from accelerate import dispatch_model, infer_auto_device_map

    if device_map == "auto":
        no_split = getattr(model, "_no_split_modules", None)
        device_map = infer_auto_device_map(model, no_split_module_classes=list(no_split or []))
    elif isinstance(device_map, str):
        device_map = {"": device_map}
    return dispatch_model(model, device_map=device_map)


def _meta_model(spec: str, trust_remote_code: bool, revision: str | None) -> LoadedModel:
    """The architecture of hub model `spec` on the meta device (no weights) and its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    try:
        config = AutoConfig.from_pretrained(spec, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(spec, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelSpecError(
            f"cannot read the config of {spec!r} from the hub: {_first_line(exc)}; remote recording needs "
            "its config and tokenizer (network or a hub cache)"
        ) from None
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config, trust_remote_code=trust_remote_code)
    return LoadedModel(
        model=model.eval(),
        tokenizer=tokenizer,
        spec=spec,
        source="remote",
        info={"revision": revision or getattr(config, "_commit_hash", None)},
    )


def _from_pretrained(
    where: str,
    trust_remote_code: bool,
    revision: str | None,
    *,
    local: bool,
    placement: dict[str, Any] | None = None,
) -> LoadedModel:
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    with _quiet_hub():
        return _load_parts(where, kwargs, local, placement or {})


def _load_parts(where: str, kwargs: dict[str, Any], local: bool, placement: dict[str, Any]) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from .processors import load_processor

    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        _refuse_custom_code(where, exc)
        reason = _first_line(exc)
        hint = "" if local else "; no network or cache? pass a local checkpoint folder or bundled:NAME"
        raise ModelSpecError(f"cannot load model config for {where!r}: {reason}{hint}") from None
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    if getattr(config, "vision_config", None) is not None:  # a vision-language model: image and text in
        from transformers import AutoModelForImageTextToText
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

        if type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:
            auto = AutoModelForImageTextToText
    try:
        model = auto.from_pretrained(where, config=config, **kwargs, **placement)
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met a pickle that would run code
        raise ModelSpecError(
            f"refused the weights of {where!r}: its torch file holds more than tensors (code could run); "
            "convert it to safetensors from a source you trust"
        ) from None
    except (OSError, ValueError) as exc:
        _refuse_custom_code(where, exc)
        reason = _first_line(exc)
        raise ModelSpecError(f"cannot load weights of {where!r}: {reason}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError, TypeError):
        tokenizer = None  # token-id inputs still work; text inputs will say a tokenizer is needed
    source = "local" if local else "hub"
    return LoadedModel(
        model=model.eval(),
        tokenizer=tokenizer,
        processor=load_processor(where, **kwargs) if local else None,
        spec=where,
        source=source,
        info={"revision": kwargs.get("revision") or getattr(config, "_commit_hash", None)},
    )


def _refuse_custom_code(where: str, exc: Exception) -> None:
    """Transformers refused to run a checkpoint's own code (its config names Python files through
    `auto_map`) because trust_remote_code is off: say which flag allows it, in one line."""
    if "trust_remote_code" in str(exc):
        raise ModelSpecError(
            f"{where!r} ships its own model code, which RouteScope runs only with --trust-remote-code "
            "(read that code first)"
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _place(loaded: LoadedModel, dtype: str | torch.dtype | None, device: str | None) -> LoadedModel:
    if dtype is not None:
        resolved = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if not isinstance(resolved, torch.dtype):
            raise ModelSpecError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        loaded.model = loaded.model.to(resolved)
    if device is not None:
        try:
            loaded.model = loaded.model.to(device)
        except (RuntimeError, AssertionError, ValueError) as exc:  # unknown device, or none of that kind here
            raise ModelSpecError(f"cannot use device {device!r}: {_first_line(exc)}") from None
    return loaded
