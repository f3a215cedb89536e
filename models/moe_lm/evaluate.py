"""Quality figures of moe-lm: per-domain loss and perplexity, the unigram baselines, expert specialisation.

Losses are mean next-token cross-entropy in nats over every predicted token of a domain's evaluation
texts (tokenised as the recorder tokenises them: no special tokens added). The unigram baselines are
scored on exactly the same target tokens: `unigram_domain` is fitted on that domain's training tokens
(the stronger baseline, the one the quality bar uses), `unigram_global` on all training tokens; both
are add-one smoothed over the vocabulary. Specialisation uses the router's own top-k (Qwen2-MoE routes
by softmax → top-k, so top-k of its logits is exactly what it dispatched).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .tokenizer import PAD_ID


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def _batches(token_lists: Sequence[list[int]], batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for i in range(0, len(token_lists), batch_size):
        chunk = token_lists[i : i + batch_size]
        width = max(len(t) for t in chunk)
        ids = torch.full((len(chunk), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, tokens in enumerate(chunk):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        batches.append((ids, mask))
    return batches


@torch.no_grad()
def token_nll(model: torch.nn.Module, token_lists: Sequence[list[int]], batch_size: int = 16) -> torch.Tensor:
    """Negative log-likelihood (nats) of every predicted token (positions 1.. of each text), concatenated."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for ids, mask in _batches(token_lists, batch_size):
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            out.append(nll[mask[:, 1:].bool()])
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def domain_losses(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], domains: Sequence[str], batch_size: int = 16
) -> dict[str, dict[str, float]]:
    """Per domain: mean loss (nats/token), perplexity and number of predicted tokens."""
    result: dict[str, dict[str, float]] = {}
    for domain in dict.fromkeys(domains):
        tokens = encode(tokenizer, [t for t, d in zip(texts, domains, strict=True) if d == domain])
        nll = token_nll(model, tokens, batch_size)
        loss = float(nll.mean())
        result[domain] = {"loss": loss, "perplexity": math.exp(loss), "tokens": int(nll.numel())}
    return result


def unigram_counts(token_lists: Sequence[Sequence[int]] | torch.Tensor, vocab_size: int) -> torch.Tensor:
    if isinstance(token_lists, torch.Tensor):
        flat = token_lists.reshape(-1).long()
    else:
        flat = torch.tensor([t for tokens in token_lists for t in tokens], dtype=torch.long)
    return torch.bincount(flat, minlength=vocab_size).double()


def unigram_cross_entropy(counts: torch.Tensor, token_lists: Sequence[list[int]]) -> float:
    """Add-one-smoothed unigram cross-entropy (nats) of the predicted tokens (positions 1..) of each text."""
    logp = torch.log((counts + 1) / (counts.sum() + counts.numel()))
    targets = torch.tensor([t for tokens in token_lists for t in tokens[1:]], dtype=torch.long)
    return float(-logp[targets].mean())


@torch.no_grad()
def expert_specialisation(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], domains: Sequence[str], batch_size: int = 16
) -> dict[str, Any]:
    """Per layer and domain, the share of the domain's assignments that each expert receives.

    `lift` is that share over the uniform share 1/E (equivalently, the fraction of the domain's tokens
    routed to the expert over k/E); `max_lift[layer][domain]` is the largest lift and `top_expert` the
    expert that has it; `top_experts_share` is the share the domain's k most-used experts receive
    (uniform: k/E).
    """
    config = model.config
    n_experts, top_k = int(config.num_experts), int(config.num_experts_per_tok)
    was_training = model.training
    model.eval()
    names = list(dict.fromkeys(domains))
    counts: dict[int, torch.Tensor] = {}
    try:
        for domain_index, domain in enumerate(names):
            tokens = encode(tokenizer, [t for t, d in zip(texts, domains, strict=True) if d == domain])
            for ids, mask in _batches(tokens, batch_size):
                out = model(input_ids=ids, attention_mask=mask, output_router_logits=True)
                keep = mask.reshape(-1).bool()
                for layer, logits in enumerate(out.router_logits):
                    chosen = logits[keep].topk(top_k, dim=-1).indices.reshape(-1)
                    table = counts.setdefault(layer, torch.zeros(len(names), n_experts, dtype=torch.float64))
                    table[domain_index] += torch.bincount(chosen, minlength=n_experts).double()
    finally:
        model.train(was_training)
    result: dict[str, Any] = {"experts": n_experts, "top_k": top_k, "layers": {}}
    for layer, table in sorted(counts.items()):
        share = table / table.sum(dim=1, keepdim=True)
        lift = share * n_experts
        per_domain = {}
        for i, domain in enumerate(names):
            per_domain[domain] = {
                "max_lift": round(float(lift[i].max()), 3),
                "top_expert": int(lift[i].argmax()),
                "top_experts_share": round(float(share[i].topk(top_k).values.sum()), 3),
            }
        result["layers"][str(layer)] = per_domain
    return result


def summarise_specialisation(spec: Mapping[str, Any]) -> dict[str, float]:
    """Mean over domains of the max lift, per layer."""
    return {
        layer: round(sum(d["max_lift"] for d in per_domain.values()) / len(per_domain), 3)
        for layer, per_domain in spec["layers"].items()
    }
