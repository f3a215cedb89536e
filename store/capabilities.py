"""What a run knows: the capability vocabulary, a run's set, and the one-line refusal when one is missing.

RouteScope's own recordings know everything about a routing decision (ids, rank order, gate weights, the
router's entropy and margin, token ids and positions); a trace imported from an engine knows less (vLLM
and SGLang give expert ids only, Megatron has no token ids, llama.cpp gives counts only). The manifest
records the source `engine` and its `capabilities`; runs written before the field existed derive theirs
from the facts they do record (`derived_capabilities`). An analysis declares what it `needs`
(analysis/registry.py) and `missing_message` words the refusal once, for the CLI, figures and dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import InputError

CAPABILITIES: dict[str, str] = {
    "ids": "expert ids per decision",
    "ranks": "rank order of the chosen experts",
    "gate_weights": "gate weights",
    "scores": "router probabilities (entropy, margin)",
    "probs": "full router probability vectors",
    "logits": "router logits",
    "token_ids": "token ids",
    "positions": "token positions in their sequence",
    "steps": "steps",
    "counts": "expert counts only",
    "token_loss": "per-token loss (record it with token loss)",
    "output_norms": "expert output norms (record it with expert stats)",
    "modality": "token modality (record a vision-language model with images)",
    "output_logprobs": "next-token log-probabilities (record them with output logprobs)",
    "expert_means": "mean expert outputs (record it with expert means)",
}
"""Every capability a run may declare, with the words a refusal uses for it."""

RECORDED = ("ids", "ranks", "gate_weights", "scores", "token_ids", "positions", "steps")
"""What every RouteScope recording knows (probs and logits when recorded with them)."""

ENGINES: dict[str, str] = {
    "routescope": "RouteScope recording",
    "vllm": "vLLM import",
    "sglang": "SGLang import",
    "megatron": "Megatron import",
    "olmoe": "OLMoE import",
    "llamacpp": "llama.cpp import",
}
"""How a refusal names a run by its source engine."""


def derived_capabilities(options: Mapping[str, Any]) -> frozenset[str]:
    """The capabilities of a RouteScope recording (and of runs that predate the field): everything it
    records, plus probs/logits, token loss, output log-probabilities, expert output norms and mean expert
    outputs when its options say they were kept."""
    extra = [name for name in ("probs", "logits", "token_loss", "output_logprobs") if options.get(name)]
    if options.get("images"):
        extra.append("modality")
    if options.get("expert_stats"):
        extra.append("output_norms")
    if options.get("expert_means"):
        extra.append("expert_means")
    return frozenset((*RECORDED, *extra))


def capability_problem(value: object) -> str | None:
    """Why a manifest's `capabilities` value is malformed (None if it is a list of known names)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "capabilities is not a list of names"
    unknown = sorted(set(value) - set(CAPABILITIES))
    return f"capabilities names unknown {', '.join(unknown)}" if unknown else None


ON_REQUEST: dict[str, tuple[str, str]] = {
    "token_loss": ("token loss", "token_loss"),
    "output_norms": ("expert output norms", "expert_stats"),
    "modality": ("token modality", "images"),
    "output_logprobs": ("next-token log-probabilities", "output_logprobs"),
    "expert_means": ("mean expert outputs", "expert_means"),
}
"""Capabilities a recording has only when asked for: what a refusal calls each, and the recording option
(the error's `field`) that adds it."""


def require_recorded(capabilities: Iterable[str], needed: Iterable[str]) -> None:
    """Refuse, in one line naming the recording option, a run that lacks an on-request capability in
    `needed` ("this run has no token loss; record it with token loss", field `token_loss`)."""
    have = set(capabilities)
    for name in needed:
        if name in ON_REQUEST and name not in have:
            words, option = ON_REQUEST[name]
            raise InputError(
                f"this run has no {words}; record it with {option.replace('_', ' ')}", field=option
            )


ROUTING = ("ids", "gate_weights", "scores", "probs", "logits", "counts")
"""The capabilities about the routing itself (the rest describe the tokens and steps around it)."""


def describe(engine: str | None, capabilities: Iterable[str]) -> str:
    """ "this vLLM import has expert ids only" / "this llama.cpp import has expert counts only": what a run
    knows of the routing itself."""
    have = set(capabilities)
    who = f"this {ENGINES.get(engine or 'routescope', f'{engine} import')}"
    routing = [name for name in ROUTING if name in have]
    if routing == ["ids"]:
        return f"{who} has expert ids only"
    if routing == ["counts"]:
        return f"{who} has expert counts only"
    return f"{who} has {', '.join(CAPABILITIES[n].split(' (')[0] for n in routing) or 'no routing facts'}"


def missing_message(
    kind: str, engine: str | None, capabilities: Iterable[str], needs: Iterable[str]
) -> str | None:
    """The one-line refusal when a run lacks what `kind` needs (None when it has everything):
    "this vLLM import has expert ids only; uncertainty needs router probabilities (entropy, margin)"."""
    have = set(capabilities)
    lacking = [CAPABILITIES[n] for n in needs if n not in have]
    if not lacking:
        return None
    return f"{describe(engine, have)}; {kind} needs {' and '.join(lacking)}"
