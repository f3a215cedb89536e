"""Tiny random vision-language MoEs with their own processors, built and saved to a folder in the test.

Nothing comes from the hub: each family gets a byte-level tokenizer with its image special tokens, the
family's own image processor class with small patches, the family's processor, and a random model of a
few layers, all saved with `save_pretrained` so that `routescope.load_model(folder)` loads them as it
would a checkpoint.

The processors of these families also hold a video processor, which transformers cannot build without
torchvision (not installed here); `image_only` builds the family's processor class without it
(app/processors.py does the same when loading), which is all an image recording needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from routescope.processors import image_only


@dataclass(frozen=True)
class TinyVLM:
    family: str
    folder: Path
    image_token: str
    image_token_id: int
    merge: int
    patch: int


def _tokenizer(specials: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(["<pad>", "<s>", "</s>", *specials])}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


QWEN_SPECIALS = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
GLM_SPECIALS = ["<|image|>", "<|video|>", "<|begin_of_image|>", "<|end_of_image|>"]
GLM_SPECIALS += ["<|begin_of_video|>", "<|end_of_video|>"]
PATCH, MERGE = 4, 2
SIZE = {"shortest_edge": 8 * 8, "longest_edge": 32 * 32}


def _qwen3_vl_moe(folder: Path) -> TinyVLM:
    from transformers import (
        Qwen2VLImageProcessorPil,
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
        Qwen3VLProcessor,
    )

    tokenizer = _tokenizer(QWEN_SPECIALS)
    images = Qwen2VLImageProcessorPil(patch_size=PATCH, temporal_patch_size=2, merge_size=MERGE, size=SIZE)
    processor = image_only(Qwen3VLProcessor)(image_processor=images, tokenizer=tokenizer)
    config = Qwen3VLMoeConfig(
        text_config={
            "vocab_size": 320,
            "hidden_size": 32,
            "intermediate_size": 64,
            "moe_intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "max_position_embeddings": 256,
            "pad_token_id": 0,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": 2,
            "out_hidden_size": 32,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=3,
        video_token_id=4,
        vision_start_token_id=5,
        vision_end_token_id=6,
    )
    torch.manual_seed(0)
    model = Qwen3VLMoeForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return TinyVLM("qwen3_vl_moe", folder, "<|image_pad|>", 3, MERGE, PATCH)


def _glm4v_moe(folder: Path) -> TinyVLM:
    from transformers import (
        Glm4vImageProcessorPil,
        Glm4vMoeConfig,
        Glm4vMoeForConditionalGeneration,
        Glm4vProcessor,
    )

    tokenizer = _tokenizer(GLM_SPECIALS)
    images = Glm4vImageProcessorPil(patch_size=PATCH, temporal_patch_size=2, merge_size=MERGE, size=SIZE)
    processor = image_only(Glm4vProcessor)(image_processor=images, tokenizer=tokenizer)
    config = Glm4vMoeConfig(
        text_config={
            "vocab_size": 320,
            "hidden_size": 32,
            "intermediate_size": 64,
            "moe_intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "n_routed_experts": 8,
            "num_experts_per_tok": 2,
            "n_shared_experts": 1,
            "first_k_dense_replace": 0,
            "max_position_embeddings": 256,
            "pad_token_id": 0,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [1, 1, 0],
                "partial_rotary_factor": 0.5,
            },
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": 2,
            "out_hidden_size": 32,
            "image_size": 32,
        },
        image_token_id=3,
        video_token_id=4,
        image_start_token_id=5,
        image_end_token_id=6,
        video_start_token_id=7,
        video_end_token_id=8,
    )
    torch.manual_seed(0)
    model = Glm4vMoeForConditionalGeneration(config).eval()
    for name, module in model.named_modules():  # the correction bias is zeros in a random model
        if name.endswith("mlp.gate") and hasattr(module, "e_score_correction_bias"):
            module.e_score_correction_bias.data.normal_(0, 0.5)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return TinyVLM("glm4v_moe", folder, "<|image|>", 3, MERGE, PATCH)


BUILDERS = {"qwen3_vl_moe": _qwen3_vl_moe, "glm4v_moe": _glm4v_moe}
VLM_FAMILIES = list(BUILDERS)


def tiny_vlm(family: str, folder: Path) -> TinyVLM:
    """Build family `family`'s tiny model and processor and save both to `folder`."""
    return BUILDERS[family](folder)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A random RGB uint8 image."""
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
