"""moe-lm: a small multi-domain Qwen2-MoE language model that RouteScope trains itself and ships.

`load_moe_lm()` loads the shipped checkpoint (`weights/`) offline and `load_domains()` its evaluation set;
`train.train()` reproduces both. One role per module: `corpus` (the five labelled domains, with
`synthetic` and `chemistry` generating three of them), `tokenizer`, `config` (architecture), `evalset`
(the held-out texts), `evaluate` (loss, unigram baselines, specialisation), `train`, `load`.
"""

from __future__ import annotations

from .corpus import DOMAINS
from .load import WEIGHTS_DIR, load_domains, load_moe_lm

__all__ = ["DOMAINS", "WEIGHTS_DIR", "load_domains", "load_moe_lm"]
