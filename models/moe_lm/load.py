"""Loading the shipped moe-lm checkpoint (`weights/`) and its evaluation set, offline and without pickle.

The folder is an ordinary `save_pretrained` folder: `config.json`, `model.safetensors`, tokenizer files,
plus `domains.jsonl` and `metrics.json`. Weights are read from safetensors only, no remote code runs, and
nothing is looked up on a hub (`local_files_only=True`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2MoeForCausalLM

from .evalset import FILE_NAME, read_eval_set

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def load_moe_lm(path: Path = WEIGHTS_DIR) -> tuple[Qwen2MoeForCausalLM, PreTrainedTokenizerBase]:
    """The model (eval mode, float32, CPU) and tokenizer of a moe-lm folder (by default the shipped one)."""
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"no moe-lm checkpoint in {path} (config.json and model.safetensors expected)"
        )
    model = Qwen2MoeForCausalLM.from_pretrained(
        path, local_files_only=True, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    return model.eval(), tokenizer


def load_domains(path: Path = WEIGHTS_DIR) -> tuple[list[str], dict[str, list[str]]]:
    """The evaluation set: texts and their `domain` label column."""
    records = read_eval_set(Path(path) / FILE_NAME)
    return [r["text"] for r in records], {"domain": [r["domain"] for r in records]}
