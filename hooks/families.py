"""Declarative facts about each transformers MoE family that its router's output does not say itself.

transformers 5 already tells *where* each family's router is (`_can_record_outputs["router_logits"]`) and
the router's output tells *what* it chose (see `normalise.py`). What is left is small and lives here, in
one tested table: how the router scores experts (softmax or sigmoid, which fixes the distribution we
report entropy and margin on). Add a row when a new family needs one; families absent here default to softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scoring = Literal["softmax", "sigmoid", "sqrtsoftplus", "probs"]
SCORINGS: tuple[Scoring, ...] = ("softmax", "sigmoid", "sqrtsoftplus", "probs")
"""`probs`: the router's first output is already its softmax probabilities (Gemma 4), not logits."""


@dataclass(frozen=True, kw_only=True)
class FamilyInfo:
    """What RouteScope needs to know about a family beyond its router's output."""

    scoring: Scoring = "softmax"
    """Function that turns router logits into expert scores; the recorded `probs` are these scores
    normalised to sum to 1 (softmax scores already do)."""
    skip_class: bool = False
    """The router's last logit is a no-compute skip class, which it returns as expert 0 with weight 0
    (ZAYA): RouteScope records it as the last expert, listed in the manifest's `zero_experts`."""
    note: str = ""


FAMILIES: dict[str, FamilyInfo] = {
    "deepseek_v3": FamilyInfo(
        scoring="sigmoid", note="chooses on sigmoid + bias within groups; weights unbiased"
    ),
    "glm4_moe": FamilyInfo(scoring="sigmoid"),
    "glm4_moe_lite": FamilyInfo(scoring="sigmoid"),
    "glm4v_moe": FamilyInfo(scoring="sigmoid", note="GLM-4.5V: the text model's router (image inputs)"),
    "glm4v_moe_text": FamilyInfo(scoring="sigmoid"),
    "dots1": FamilyInfo(scoring="sigmoid"),
    "solar_open": FamilyInfo(scoring="sigmoid"),
    "exaone_moe": FamilyInfo(scoring="sigmoid"),
    "minimax_m2": FamilyInfo(scoring="sigmoid"),
    "afmoe": FamilyInfo(scoring="sigmoid"),
    **dict.fromkeys(
        (
            *("axk1", "axk2", "deepseek_v32", "dots3_note", "dots3_note_text", "glm_moe_dsa", "hy_v3"),
            *("hy_v4", "hy_v4_vl", "hy_v4_vl_text", "kolibri1", "laguna", "minimax_m3_vl", "sarvam_moe"),
            *("minimax_m3_vl_text", "muse_spark", "muse_spark_text", "nemotron_h", "sarvam_mla"),
            *("inkling_text", "inkling_mm_model", "bailing_hybrid", "kimi_linear", "beam", "flint"),
            *("lfm2_moe", "mimo_v2_flash", "glm5_next", "glm5_next_text", "step3p5", "step3p7"),
            "nemo_speechlm",  # Nemotron-3.5-Transcribe: its language model is nemotron_h
            *("ergo", "minicpm5_moe", "kolibri1_1"),
            "param2moe",  # a config of its own that builds GLM-4.5's MoE (Glm4MoeForCausalLM)
        ),
        FamilyInfo(scoring="sigmoid"),
    ),
    "deepseek_v4": FamilyInfo(
        scoring="sqrtsoftplus",
        note="scores are sqrt(softplus(logits)); hash-routed layers (`hash_moe`) are not recorded",
    ),
    **dict.fromkeys(
        ("gemma4", "gemma4_text", "diffusion_gemma", "diffusion_gemma_text"),
        FamilyInfo(
            scoring="probs", note="the router returns softmax probabilities where others return logits"
        ),
    ),
    "zaya": FamilyInfo(
        skip_class=True, note="8 + 1 classes: the last, a skip, is returned as (expert 0, weight 0)"
    ),
    "llama4_text": FamilyInfo(scoring="sigmoid", note="router returns (scores, logits)"),
    "llama4": FamilyInfo(scoring="sigmoid", note="router returns (scores, logits)"),
    "dbrx": FamilyInfo(note="router returns logits only; top-k weights p-normalised by the MoE block"),
    "cohere2_moe": FamilyInfo(note="softmax by default; a config with expert_selection_fn='sigmoid' is not"),
    "jetmoe": FamilyInfo(
        note="two routers per layer (attention heads, FFN experts); returns token slots sorted by expert"
    ),
    "nllb-moe": FamilyInfo(
        note="top-2 with a capacity shared by the batch; returns (top-1 mask, combine weights, logits)"
    ),
}


def family_info(model_type: str | None) -> FamilyInfo:
    """The table row for a `config.model_type`, or the softmax default."""
    return FAMILIES.get(model_type or "", FamilyInfo())
