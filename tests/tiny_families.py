"""Tiny, randomly initialised MoE models and a byte tokenizer, built offline for tests.

RouteScope's tests need one real model per supported MoE family, not mocks: every family's router returns
something different (a triple, Switch's ``(mask, probs, logits)``), chooses experts differently (DeepSeek-V3
with a correction bias and group limits, GPT-OSS with a biased linear, Switch with a capacity that drops
tokens), and some put dense layers between the sparse ones.  This module builds each family from a config,
with nothing from the hub (~1 s for the first build in a process, which imports transformers' modeling
code, then ~10 ms each), and states the exact router paths by hand so that golden tests compare what
RouteScope *finds* against what we *know* is there.

JetMoE has two routers per layer (attention heads and FFN experts); NLLB-MoE's capacity is shared by every
token of a batch, so its drops depend on the batch (tests/test_families.py runs its reference batched).

Shared choices: hidden 32, 2-3 layers, 8 experts (Switch, NLLB-MoE 4), top-2 (Switch top-1), vocab 300 with
``0=<pad>, 1=<s>, 2=</s>``; the byte tokenizer (`routescope.models.tokenizers`) uses the same special ids.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

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
    "jetmoe",
    "nllb-moe",
)
_GATES_2 = ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"]
_GATE_1 = ["model.layers.1.mlp.gate"]  # layer 0 is dense (or a Mamba layer)
_BASE_GATES_2 = ["layers.0.mlp.gate", "layers.1.mlp.gate"]
_MLP_ROUTERS_2 = ["model.layers.0.mlp.router", "model.layers.1.mlp.router"]
_SPARSE_ROUTERS_2 = ["model.layers.0.block_sparse_moe.router", "model.layers.1.block_sparse_moe.router"]
_FEED_FORWARD_2 = ["model.layers.0.feed_forward.router", "model.layers.1.feed_forward.router"]

GENERIC: dict[str, list[str]] = {
    **dict.fromkeys(("flex_olmo", "minimax", "mellum", "kolibri1", "lara_mini", "cohere2_moe"), _GATES_2),
    **dict.fromkeys(("hunyuan_v1_moe", "inkling2_text", "minimax_m2", "solar_open"), _GATES_2),
    **dict.fromkeys(("granitemoe_swa", "granitemoeshared"), _SPARSE_ROUTERS_2),
    "phimoe": _MLP_ROUTERS_2,
    "aria_text": _MLP_ROUTERS_2,
    **dict.fromkeys(("ernie4_5_moe", "exaone_moe", "glm4_moe"), _GATE_1),
}
"""Families that record with the generic `triple` mechanism from one shared config (`_GENERIC`), with
their router paths."""
WIDE: dict[str, list[str]] = {
    **dict.fromkeys(("axk1", "axk2", "deepseek_v2", "deepseek_v32", "dots3_note_text"), _GATES_2),
    **dict.fromkeys(("glm_moe_dsa", "inkling2_loop_text", "sarvam_mla", "sarvam_moe"), _GATES_2),
    **dict.fromkeys(("minimax_m3_vl_text", "inkling_text", "minicpm5_moe", "param2moe"), _GATES_2),
    "ergo": _GATE_1,  # layer 0 is dense (`num_dense_blocks`)
    **dict.fromkeys(("glm4_moe_lite", "hy_v3", "hy_v4", "laguna"), _GATE_1),
    **dict.fromkeys(("mistral_large4_text", "muse_spark_text", "qwen3_vl_moe_text"), _BASE_GATES_2),
    "openai_privacy_filter": ["layers.0.mlp.router", "layers.1.mlp.router"],
    "llama4_text": _FEED_FORWARD_2,
    "nemotron_h": ["model.layers.1.mixer.gate"],
    "afmoe": ["model.layers.1.mlp.router"],
}
"""Families built from `_WIDE`: `_GENERIC` plus what multi-head latent attention and group-limited routers
need (as many KV heads as heads, LoRA ranks, one group); the `*_text` ones and a few others have no
causal-LM class and are built as their base model (router paths then start at `layers.`)."""
_HYBRID: dict[str, Any] = {"layer_types": ["linear_attention", "full_attention"]}
_SPARSE: dict[str, Any] = {"mlp_layer_types": ["sparse", "sparse"]}
TUNED: dict[str, dict[str, Any]] = {
    "qwen3_next": _HYBRID,
    "qwen3_5_moe_text": _HYBRID,
    "bailing_hybrid": {**_HYBRID, **_SPARSE},
    "kimi_linear": {**_HYBRID, **_SPARSE},
    "beam": _SPARSE,
    "flint": {"mlp_only_layers": []},
    "gemma4_text": {"enable_moe_block": True, "num_experts": 8, "top_k_experts": 2},
    "jamba": {
        **{"attn_layer_offset": 1, "attn_layer_period": 2},
        **{"expert_layer_offset": 0, "expert_layer_period": 1},
    },
    "deepseek_v4": {"mlp_layer_types": ["moe", "moe"]},
    "hy_v4_vl_text": {  # M-RoPE sections must sum to qk_rope_head_dim / 2 = 4
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
    },  # top-k routers (hash-routed layers are not recorded)
    "dots1": {"n_shared_experts": 1},  # the default (None) does not build
    "lfm2_moe": {"num_dense_layers": 0, "layer_types": ["conv", "full_attention"]},  # sigmoid + expert bias
    "mistral4": {"head_dim": 16},  # qk_nope_head_dim + qk_rope_head_dim; no causal-LM class: the base model
    "mimo_v2_flash": {  # DeepSeek-V3-style sigmoid router
        **{"head_dim": 16, "v_head_dim": 16, "sliding_window": 8, "mlp_layer_types": ["sparse", "sparse"]},
        "num_key_value_heads": 2,  # sliding-window layers double it, and need at most the 4 query heads
        "rope_parameters": {  # the default rotary fraction 0.334 leaves no rotary dims
            layer: {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
            for layer in ("full_attention", "sliding_attention")
        },
    },
    "qwen4_exp_text": {  # a GatedDeltaNet layer, then an indexed-attention one (the default: 3 linear first)
        "layer_types": ["linear_attention", "indexed_attention"],
        **{"linear_key_head_dim": 8, "linear_value_head_dim": 8, "linear_num_key_heads": 2},
        **{"linear_num_value_heads": 4, "hc_lowrank": 8, "indexer_n_heads": 2, "indexer_kv_heads": 1},
        **{"indexer_head_dim": 8, "indexer_budget": 8, "indexer_compress_ratio": 2, "num_key_value_heads": 2},
    },
    "glm5_next_text": {  # a KDA linear-attention layer, then a DSA one (NoPE: qk_rope_head_dim 0); both MoE
        **{"mlp_layer_types": ["sparse", "sparse"], "layer_types": ["linear_attention", "indexed_attention"]},
        **{"qk_rope_head_dim": 0, "n_shared_experts": 1, "index_topk": 16, "index_kpool": 4},
        **{"index_head_dim": 8, "index_n_heads": 2, "linear_head_dim": 8, "linear_num_heads": 4},
    },
    "qwen3_omni_moe_text": {  # the thinker's text model; M-RoPE sections must sum to head_dim / 2 = 4
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
    },
    "step3p5": {  # Step-3.7's text model; its default has dense MLPs in the first 3 layers
        **{"mlp_layer_types": ["sparse", "sparse"], "num_local_experts": 8, "share_expert_dim": 32},
        **{"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 8},
    },
    **dict.fromkeys(("deepseek_ocr2_text", "unlimited_ocr_text"), _SPARSE),  # OCR models' DeepSeek-V2 LMs
    "diffusion_gemma_text": {"num_experts": 8, "top_k_experts": 2, "sliding_window": 8},  # prefix encoder
    "kolibri1_1": {  # a sliding-window layer, then an indexed-attention (indexer) one; both MoE
        **{"layer_types": ["sliding_attention", "indexed_attention"], "sliding_window": 8, "head_dim": 16},
        **{"mlp_only_layers": [], "index_layers": [1], "kv_source_layers": [0, 1], "index_num_heads": 1},
        **{"index_topk": 8, "index_pool_size": 32, "index_compression": 4, "index_num_local_tokens": 4},
        "index_num_sink_tokens": 1,
    },
    "longcat_flash": {  # 8 routed + 2 zero-computation (identity) experts, 2 layers of 2 sublayers each
        **{"num_hidden_layers": 4, "zero_expert_num": 2, "moe_topk": 2},  # num_layers = 4 // 2
        **{"ffn_hidden_size": 32, "expert_ffn_hidden_size": 16},
    },
}
"""`_WIDE` plus what makes the family's default layout hold an MoE layer (and, for hybrids, an attention
layer) within 2 layers: their defaults put linear attention or dense MLPs in the first layers."""
_TUNED_PATHS: dict[str, list[str]] = {
    **dict.fromkeys(("qwen3_next", "qwen3_5_moe_text", "bailing_hybrid", "kimi_linear", "beam"), _GATES_2),
    "flint": _GATES_2,
    "kolibri1_1": _GATES_2,
    "gemma4_text": ["model.layers.0.router", "model.layers.1.router"],
    "jamba": _FEED_FORWARD_2,
    "longcat_flash": _MLP_ROUTERS_2,
    "deepseek_v4": _GATES_2,
    "dots1": _GATES_2,
    "lfm2_moe": ["model.layers.0.feed_forward.gate", "model.layers.1.feed_forward.gate"],
    "mistral4": _BASE_GATES_2,
    "mimo_v2_flash": _GATES_2,
    "qwen4_exp_text": _GATES_2,
    "glm5_next_text": _BASE_GATES_2,
    "qwen3_omni_moe_text": _BASE_GATES_2,
    "step3p5": _BASE_GATES_2,
    "diffusion_gemma_text": ["layers.0.router", "layers.1.router"],
    **dict.fromkeys(("deepseek_ocr2_text", "unlimited_ocr_text"), _BASE_GATES_2),
    "hy_v4_vl_text": ["layers.1.mlp.gate"],  # the text model (no causal-LM class); layer 0 is dense
}
_SMALL_AUDIO = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
_SMALL_AUDIO = {**_SMALL_AUDIO, "num_mel_bins": 16}
HAND: dict[str, dict[str, Any]] = {
    "dbrx": {  # transformers 5.24's DbrxAttention reads `rope_theta` and clamps by `clip_qkv` unconditionally
        **{"d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 128},
        "attn_config": {"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
        "ffn_config": {"ffn_hidden_size": 32, "moe_num_experts": 8, "moe_top_k": 2},
    },
    "zaya": {  # top-1 (validate_architecture requires it) of 8 experts + a skip class; a 16-wide router MLP
        **{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
        **{"num_experts": 8, "num_experts_per_tok": 1, "moe_intermediate_size": 32, "head_dim": 8},
        "router_hidden_size": 16,
    },
    "ernie4_5_vl_moe_text": {  # modality-isolated MoE blocks: text and vision experts, each with its router
        **{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        **{"num_key_value_heads": 2, "moe_num_experts": 8, "moe_k": 2, "moe_intermediate_size": [32, 16]},
        **{"moe_num_shared_experts": 1, "mlp_layer_types": ["sparse", "sparse"]},
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
    },
    "nemo_speechlm": {  # Nemotron-3.5-Transcribe on text: the language model is the `nemotron_h` family's
        "text_config": "nemotron_h",  # replaced by the nemotron_h tiny config (below `_CONFIGS`)
        "audio_config": {  # 1-layer, 16-wide speech recognition encoder and diarization model (~1.5M in all)
            "asr_config": _SMALL_AUDIO,
            "diarization_config": {
                **{"model_type": "nemotron3_diarization", "audio_config": _SMALL_AUDIO},
                "head_config": {"hidden_size": 8, "num_speakers": 2, "audio_hidden_size": 16},
                "streaming_config": {"num_speakers": 2, "fifo_length": 8, "speaker_cache_length": 8},
                **{
                    "fifo_length": 8,
                    "speaker_cache_update_period": 8,
                    "chunk_length": 16,
                    "chunk_right_context": 4,
                },
            },
        },
        "word_timestamp_config": {
            **{"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2},
            **{"vocab_size": 32, "blank_token_id": 31},
        },
        "audio_token_id": 299,  # a byte-tokenizer id; text inputs never use it
    },
    "granitemoehybrid": {  # a Mamba-2 layer, then an attention layer, both with an MoE and a shared MLP
        **{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        **{
            "num_key_value_heads": 2,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
            "shared_intermediate_size": 32,
        },
        "layer_types": ["mamba", "attention"],
        **{"mamba_n_heads": 4, "mamba_d_state": 8, "mamba_d_head": 16, "mamba_chunk_size": 16},
    },
}
"""Families whose config shares nothing with `_GENERIC`: written out in full."""
_HAND_PATHS: dict[str, list[str]] = {
    "dbrx": ["transformer.blocks.0.ffn.router", "transformer.blocks.1.ffn.router"],  # logits only
    "granitemoehybrid": _SPARSE_ROUTERS_2,
    "zaya": _GATES_2,
    "nemo_speechlm": ["model.language_model.layers.1.mixer.gate"],
    "ernie4_5_vl_moe_text": ["layers.0.mlp.text_moe.gate", "layers.1.mlp.text_moe.gate"],  # text inputs only
}
FAMILIES = (*FAMILIES, *GENERIC, *WIDE, *TUNED, *HAND)
MODEL_CLASS: dict[str, str] = {
    "qwen3_omni_moe_text": "Qwen3OmniMoeThinkerTextModel",
    "step3p5": "Step3p7TextModel",
    "deepseek_ocr2_text": "DeepseekOcr2TextModel",
    "unlimited_ocr_text": "UnlimitedOcrTextModel",
    "diffusion_gemma_text": "DiffusionGemmaEncoderTextModel",
    "ernie4_5_vl_moe_text": "Ernie4_5_VLMoeTextModel",
    "nemo_speechlm": "Nemotron3_5TranscribeForConditionalGeneration",
}
"""Text configs that no auto class maps: the transformers class built from them."""


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

_GENERIC: dict[str, Any] = {
    **_DECODER,
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"), 8),
    "moe_intermediate_size": 32,
    "head_dim": 8,
}
_WIDE: dict[str, Any] = {
    **_GENERIC,
    "num_key_value_heads": 4,
    "first_k_dense_replace": 0,
    "n_group": 1,
    "topk_group": 1,
    "q_lora_rank": 16,
    "kv_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
    "shared_expert_intermediate_size": 32,
}
CONFIG: dict[str, Any] = {**_COMMON, **_WIDE}
"""Generic tiny config values that build most decoder MoE families (scripts/survey_moe_families.py)."""
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
    "jetmoe": {**_DECODER, "num_local_experts": 8, "kv_channels": 8},  # MoA: 4 heads = 2 kv heads x top-2
    "nllb-moe": {
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "encoder_sparse_step": 1,
        "decoder_sparse_step": 1,
        "num_experts": 4,
        "moe_eval_capacity_token_fraction": 0.25,  # capacity = ceil(0.25 * batch tokens): drops some
        "dropout": 0.0,
        "attention_dropout": 0.0,
    },
    **dict.fromkeys(GENERIC, _GENERIC),
    **dict.fromkeys(WIDE, _WIDE),
    **{name: {**_WIDE, **tuned} for name, tuned in TUNED.items()},
    **HAND,
}

_CONFIGS["nemo_speechlm"] = {
    **_CONFIGS["nemo_speechlm"],
    "text_config": {**_COMMON, **_CONFIGS["nemotron_h"], "model_type": "nemotron_h"},
}

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
    "granitemoe": _SPARSE_ROUTERS_2,
    **GENERIC,
    **WIDE,
    **_TUNED_PATHS,
    **_HAND_PATHS,
    "jetmoe": [  # execution order: each layer's attention-head router runs before its FFN router
        "model.layers.0.self_attention.experts.router",
        "model.layers.0.mlp.router",
        "model.layers.1.self_attention.experts.router",
        "model.layers.1.mlp.router",
    ],
    "nllb-moe": [
        "model.encoder.layers.0.ffn.router",
        "model.encoder.layers.1.ffn.router",
        "model.decoder.layers.0.ffn.router",
        "model.decoder.layers.1.ffn.router",
    ],
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
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    if type(config) not in auto._model_mapping:  # a VLM's text config: its base model holds the routers
        auto = AutoModel
    if model_type in MODEL_CLASS:
        model = getattr(transformers, MODEL_CLASS[model_type])(config)
    else:  # Switch/NLLB-MoE *ForConditionalGeneration, *ForCausalLM, base
        model = auto.from_config(config)
    model = model.to(device="cpu", dtype=torch.float32).eval()
    router_class = _router_class(model)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, router_class):
                continue
            # the router's Linear: itself, or a child (Switch/NLLB-MoE `classifier`, JetMoE `layer`)
            weight = next(p for name, p in module.named_parameters() if name.endswith("weight"))
            if weight.std() == 0:
                weight.normal_(0.0, 0.02)
            if model_type in ("deepseek_v3", "mimo_v2_flash", "glm5_next_text", "step3p5"):
                module.get_buffer("e_score_correction_bias").normal_(0.0, 0.02)
            if model_type == "gpt_oss" and module.get_parameter("bias").abs().max() == 0:
                module.get_parameter("bias").normal_(0.0, 0.02)
        for name, buffer in model.named_buffers():
            if model_type == "zaya" and name.endswith(
                "balancing_biases"
            ):  # the skip class's -1: never chosen
                buffer[-1] = 0.01  # so that some tokens skip (probabilities are ~1/9 each)
            if model_type == "lfm2_moe" and name.endswith(
                "feed_forward.expert_bias"
            ):  # biases the choice only
                buffer.normal_(0.0, 0.02)
    return model


def _router_class(model: torch.nn.Module) -> type[torch.nn.Module]:
    """Return the class transformers records ``router_logits`` from (Switch declares it on its stacks)."""
    for module in model.modules():
        recorder = (getattr(module, "_can_record_outputs", None) or {}).get("router_logits")
        if recorder is not None:
            return recorder.target_class
    raise TypeError(f"{type(model).__name__} declares no router_logits recorder")


def router_paths(model_type: str) -> list[str]:
    """Paths (as in ``named_modules()``) of every router of ``tiny_model(model_type)``, in execution order.

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
