"""An untrained, seeded, Mixtral-shaped model: the smallest real transformers MoE to record end to end.

Its routing carries no learned structure (the weights are random), but it is a genuine
`MixtralForCausalLM`, so every part of the recording path runs exactly as on a real checkpoint. Building
it takes well under a second, and the same seed gives the same weights on every machine.
"""

from __future__ import annotations

import torch
from transformers import MixtralConfig, MixtralForCausalLM, PreTrainedTokenizerFast

from .tokenizers import byte_tokenizer

SEED = 1234


def tiny_mixtral_config() -> MixtralConfig:
    """4 layers, hidden 256, FFN 512, 8 experts, top-2, byte vocabulary (260 ids + padding to 264)."""
    return MixtralConfig(
        vocab_size=264,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        num_local_experts=8,
        num_experts_per_tok=2,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )


def build_tiny_mixtral() -> tuple[MixtralForCausalLM, PreTrainedTokenizerFast]:
    """The model (eval mode, float32, CPU) and its byte tokenizer."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(SEED)
        model = MixtralForCausalLM(tiny_mixtral_config()).eval()
    finally:
        torch.random.set_rng_state(state)
    return model, byte_tokenizer()
