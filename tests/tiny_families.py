"""Tiny, randomly initialised MoE models and a byte tokenizer, built offline for tests.

RouteScope's tests need one real model per supported MoE family, not mocks: every family's router returns
something different (a triple, Switch's ``(mask, probs, logits)``), chooses experts differently (DeepSeek-V3
with a correction bias and group limits, GPT-OSS with a biased linear, Switch with a capacity that drops
tokens), and some put dense layers between the sparse ones.  This module builds each family from a config,
with nothing from the hub (~1 s for the first build in a process, which imports transformers' modeling
code, then ~10 ms each), and states the exact router paths by hand so that golden tests compare what
RouteScope *finds* against what we *know* is there.

Shared choices: hidden 32, 2-3 layers, 8 experts (Switch 4), top-2 (Switch top-1), vocab 300 with
``0=<pad>, 1=<s>, 2=</s>``; the byte tokenizer (`routescope.models.tokenizers`) uses the same special ids.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

import routescope
from routescope.models.tokenizers import byte_tokenizer
from routescope.store import Run, Store

FAMILIES: tuple[str, ...] = (
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "deepseek_v3",
    "gpt_oss",
    "switch_transformers",
    "granitemoe",
)


_COMMON: dict[str, Any] = {
    "vocab_size": 300,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 0,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}
_DECODER: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_experts_per_tok": 2,
}

_CONFIGS: dict[str, dict[str, Any]] = {
    "mixtral": {**_DECODER, "num_local_experts": 8},
    "qwen2_moe": {
        **_DECODER,
        "num_experts": 8,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 48,
    },
    "qwen3_moe": {**_DECODER, "num_experts": 8, "moe_intermediate_size": 32, "head_dim": 8},
    "olmoe": {**_DECODER, "num_experts": 8},
    "deepseek_v3": {
        **_DECODER,
        "num_hidden_layers": 3,
        "first_k_dense_replace": 1,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "moe_intermediate_size": 32,
        "n_group": 2,
        "topk_group": 1,
        "num_key_value_heads": 4,
        "q_lora_rank": 16,
        "kv_lora_rank": 16,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "v_head_dim": 8,
        "head_dim": 8,
    },
    "gpt_oss": {
        **_DECODER,
        "num_local_experts": 8,
        "head_dim": 8,
        "sliding_window": 8,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},  # YaRN warns at 128 positions
    },
    "switch_transformers": {
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_heads": 4,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_sparse_encoder_layers": 2,
        "num_sparse_decoder_layers": 2,
        "num_experts": 4,
        "expert_capacity": 2,
        "dropout_rate": 0.0,
    },
    "granitemoe": {**_DECODER, "num_local_experts": 8},
}

_GATES_2 = ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"]
_ROUTER_PATHS: dict[str, list[str]] = {
    "mixtral": _GATES_2,
    "qwen2_moe": _GATES_2,
    "qwen3_moe": _GATES_2,
    "olmoe": _GATES_2,
    "deepseek_v3": ["model.layers.1.mlp.gate", "model.layers.2.mlp.gate"],  # layer 0 is dense
    "gpt_oss": ["model.layers.0.mlp.router", "model.layers.1.mlp.router"],
    "switch_transformers": [
        "encoder.block.0.layer.1.mlp.router",
        "encoder.block.1.layer.1.mlp.router",
        "decoder.block.0.layer.2.mlp.router",  # decoder layer.1 is cross-attention
        "decoder.block.1.layer.2.mlp.router",
    ],
    "granitemoe": ["model.layers.0.block_sparse_moe.router", "model.layers.1.block_sparse_moe.router"],
}


def tiny_model(model_type: str, *, seed: int = 0, **overrides: Any) -> transformers.PreTrainedModel:
    """Build the tiny random model of one family: eval mode, float32, CPU, deterministic for ``seed``.

    ``overrides`` replace config kwargs (``router_paths`` describes the build without overrides).
    Routers whose weight (or GPT-OSS bias) is still all zeros after ``post_init`` get ``normal_(0, 0.02)``.
    DeepSeek-V3's ``e_score_correction_bias`` (zeros in a fresh model) gets ``normal_(0, 0.02)``, the spread
    of its sigmoid scores, so the bias changes the choice on some tokens but not all. Its chosen experts
    also differ from ``topk(logits)`` because of the group limit; pass ``n_group=1, topk_group=1`` to
    isolate the bias.
    """
    if model_type not in _CONFIGS:
        raise ValueError(f"unknown family {model_type!r}; expected one of {FAMILIES}")
    config = AutoConfig.for_model(model_type, **{**_COMMON, **_CONFIGS[model_type], **overrides})
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if model_type == "switch_transformers" else AutoModelForCausalLM
    model = auto.from_config(config)  # SwitchTransformersForConditionalGeneration / *ForCausalLM
    model = model.to(device="cpu", dtype=torch.float32).eval()
    router_class = _router_class(model)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, router_class):
                continue
            prefix = "classifier." if model_type == "switch_transformers" else ""  # Switch wraps a Linear
            weight = module.get_parameter(prefix + "weight")
            if weight.std() == 0:
                weight.normal_(0.0, 0.02)
            if model_type == "deepseek_v3":
                module.get_buffer("e_score_correction_bias").normal_(0.0, 0.02)
            if model_type == "gpt_oss" and module.get_parameter("bias").abs().max() == 0:
                module.get_parameter("bias").normal_(0.0, 0.02)
    return model


def _router_class(model: torch.nn.Module) -> type[torch.nn.Module]:
    """Return the class transformers records ``router_logits`` from (Switch declares it on its stacks)."""
    for module in model.modules():
        recorder = (getattr(module, "_can_record_outputs", None) or {}).get("router_logits")
        if recorder is not None:
            return recorder.target_class
    raise TypeError(f"{type(model).__name__} declares no router_logits recorder")


def router_paths(model_type: str) -> list[str]:
    """Paths (as in ``named_modules()``) of every router of ``tiny_model(model_type)``, in module order.

    Hand-written on purpose: golden tests compare router discovery against this list.
    """
    return list(_ROUTER_PATHS[model_type])


TEXTS = ["Hi moe!", "Routers pick experts", "Padding test"]
"""7, 20 and 12 byte tokens: in batches of 2, sample 0 carries 13 right pads."""


def record_family(model: torch.nn.Module, store: Store, name: str, **options: Any) -> Run:
    """Record `TEXTS` with the byte tokenizer in batches of 2 (quietly); `options` go to `record`."""
    return routescope.record(
        model,
        TEXTS,
        tokenizer=byte_tokenizer(),
        store=store,
        name=name,
        batch_size=2,
        progress=False,
        **options,
    )
