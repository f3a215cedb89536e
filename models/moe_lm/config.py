"""The architecture of moe-lm: one place that fixes the Qwen2-MoE configuration the shipped weights use.

A genuine `transformers.Qwen2MoeConfig` (DeepSeekMoE-style: fine-grained routed experts plus one shared
expert with its sigmoid gate), so RouteScope's recording adapters serve the bundled model exactly as they
serve real Qwen1.5/Qwen2-MoE checkpoints.
"""

from __future__ import annotations

from transformers import Qwen2MoeConfig

from .tokenizer import BOS_ID, EOS_ID, PAD_ID

CONTEXT = 256
"""Training sequence length and `max_position_embeddings`."""

HIDDEN = 160
LAYERS = 4
HEADS = 4
KV_HEADS = 2
EXPERTS = 16
TOP_K = 2
EXPERT_FFN = 64
SHARED_FFN = 320
AUX_LOSS_COEF = 0.01


def moe_lm_config(vocab_size: int) -> Qwen2MoeConfig:
    """4 layers, hidden 160, 16 routed experts (FFN 64, top-2) + 1 shared expert (FFN 320), tied embedding."""
    return Qwen2MoeConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,  # only used by dense layers; every layer here is MoE
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=CONTEXT,
        moe_intermediate_size=EXPERT_FFN,
        shared_expert_intermediate_size=SHARED_FFN,
        num_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
        norm_topk_prob=False,
        decoder_sparse_step=1,
        router_aux_loss_coef=AUX_LOSS_COEF,
        output_router_logits=False,
        tie_word_embeddings=True,
        use_cache=True,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
