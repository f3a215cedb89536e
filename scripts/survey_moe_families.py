"""Try to record every transformers MoE family on a tiny random config; print one status line per family.

The registry walk (`tests/moe_registry.py`) lists the families; this tells which of them RouteScope records
with its generic mechanism, and the one-line error it gives for the others, to keep docs/routers.md honest.
It builds each family from generic small config values (hidden 32, 2 layers, 8 experts, top-2), so a
family whose config needs more than that is reported as `not built` with transformers' error: that is a
limit of this survey, not a RouteScope refusal. Only a `RouteScopeError` is a refusal.

    python scripts/survey_moe_families.py [module ...] > survey.tsv   # a few seconds per family
"""

from __future__ import annotations

import signal
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

import routescope
from routescope.store.errors import RouteScopeError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.moe_registry
from tests.moe_registry import MoeFamily, moe_families

SMALL: dict[str, Any] = {
    "vocab_size": 300,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "max_position_embeddings": 128,
    "hidden_size": 32,
    "intermediate_size": 64,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,  # MLA families (DeepSeek-V2 and kin) need as many as heads
    "head_dim": 8,
    "num_experts": 8,
    "num_local_experts": 8,
    "n_routed_experts": 8,
    "moe_num_experts": 8,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 0,
    "n_group": 1,
    "topk_group": 1,
    "q_lora_rank": 16,
    "kv_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
    "tie_word_embeddings": False,
}
INPUTS = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]


class _Timeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout


def _build(model_type: str) -> torch.nn.Module:
    config = AutoConfig.for_model(model_type, **SMALL)
    for sub in ("text_config",):
        inner = getattr(config, sub, None)
        if inner is not None:
            for key, value in SMALL.items():
                setattr(inner, key, value)
    torch.manual_seed(0)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    try:
        return auto.from_config(config).eval()
    except ValueError as exc:  # no LM head class for this config: the base model has the routers too
        if "Unrecognized configuration class" not in str(exc):
            raise
        return AutoModel.from_config(config).eval()


def _line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


def survey(family: MoeFamily, store: str) -> tuple[str, str]:
    """(status, detail) for one family: `records`, `refused`, `crashed` (the model's forward) or `not built`.
    Tries the family's text model types first and never its vision/audio towers (the experts are in the
    language model)."""
    towers = ("vision", "audio", "sam_", "asr", "timestamp")
    types = sorted(
        (t for t in family.model_types if not any(part in t for part in towers)),
        key=lambda t: (not t.endswith("_text"), t != family.module, t),
    )
    errors = []
    for model_type in types:
        signal.alarm(60)
        try:
            model = _build(model_type)
        except (_Timeout, Exception) as exc:  # any build failure is reported, not raised
            errors.append(f"{model_type}: {_line(exc)}")
            continue
        finally:
            signal.alarm(0)
        signal.alarm(60)
        try:
            run = routescope.record(model, INPUTS, store=store, name="s", overwrite=True, progress=False)
        except RouteScopeError as exc:
            return "refused", f"{model_type}: {type(exc).__name__}: {exc}"
        except (_Timeout, Exception) as exc:  # the model's own forward failed on the generic config
            return "crashed", f"{model_type}: {_line(exc)}"
        finally:
            signal.alarm(0)
        conventions = "/".join(sorted({r["convention"] for r in run.routers}))
        kinds = "/".join(sorted({r["kind"] for r in run.routers}))
        return "records", f"{model_type}: {len(run.routers)} routers, {conventions}, {kinds}"
    return "not built", "; ".join(errors)[:300] or "no text model type"


def main(names: list[str]) -> None:
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _alarm)
    families = moe_families()
    with tempfile.TemporaryDirectory() as store:
        for name in names or list(families):
            status, detail = survey(families[name], store)
            sys.stdout.write(f"{name}\t{status}\t{detail}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
