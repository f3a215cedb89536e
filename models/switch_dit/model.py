"""The network: a class-conditional DiT whose feed-forward experts are chosen by the timestep alone.

It follows Switch-DiT ("Switch Diffusion Transformer: Synergizing Denoising Tasks with Sparse
Mixture-of-Experts", arXiv 2403.09176): diffusion is read as multi-task learning with one denoising task
per noise level, and each block's mixture of experts is gated by the *timestep embedding* eₜ only —
g(eₜ) = TopK(Softmax(h(eₜ)), k) — so one decision per (image, step, block) is shared by every patch
token. Each block also keeps a shared expert that every task uses. The diffusion-prior loss (prior.py)
pulls similar timesteps onto the same experts and keeps distant ones apart.

Differences from the paper, chosen for a small CPU model on 8×8 digits: the routed experts are SwiGLU
feed-forward layers placed where DiT's MLP sits (y = shared(h) + Σⱼ gⱼ(eₜ)·Eⱼ(h)), as in dit-digits,
instead of the released code's multiplicative linear experts around the whole block. Embeddings, attention
and the output layer are dit-digits' own modules.

Layout for RouteScope: `blocks.{i}.moe.gate` (class `TimestepGate`) sits beside `experts` and
`shared_experts`, and returns the triple `(router_logits [N, E], topk_weights [N, k], topk_indices [N, k])`
with **one row per batch row, not per token** — the router has no position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..dit_digits.model import (
    Attention,
    DiTMoE,
    DiTOutput,
    ExpertMLP,
    modulate,
)
from .config import SwitchDiTConfig


class TimestepGate(nn.Module):
    """The router of one block: SiLU, then a linear map of the timestep embedding to E logits; softmax, top-k.

    `forward(t_emb [N, D])` returns `(router_logits [N, E] float32, topk_weights [N, k] float32,
    topk_indices [N, k] int64)`: one decision per batch row (image × CFG branch), shared by all its
    tokens. The weights are the chosen softmax probabilities, **not renormalised** (as in the released
    Switch-DiT code), and are exactly the factors the block multiplies each routed expert's output by.
    Indices are sorted by weight, largest first.
    """

    router_positions = "none"
    """Declares (for RouteScope's discovery) that this router decides once per batch row, for all tokens."""

    def __init__(self, hidden_size: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        if not 0 < top_k <= n_experts:
            raise ValueError(f"top_k must be in 1..{n_experts}, got {top_k}")
        self.n_experts = n_experts
        self.top_k = top_k
        self.proj = nn.Linear(hidden_size, n_experts)

    def forward(self, t_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.proj(F.silu(t_emb)).float()
        weights, indices = torch.topk(logits.softmax(dim=-1), self.top_k, dim=-1, sorted=True)
        return logits, weights, indices


class TimestepMoE(nn.Module):
    """Shared expert + k routed experts per image: y = shared_experts(h) + Σⱼ wⱼ · experts[iⱼ](h)."""

    def __init__(self, config: SwitchDiTConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.gate = TimestepGate(d, config.n_routed_experts, config.top_k)
        self.experts = nn.ModuleList(
            ExpertMLP(d, config.expert_hidden) for _ in range(config.n_routed_experts)
        )
        self.shared_experts = ExpertMLP(d, config.shared_expert_hidden)

    def combine(self, hidden: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Σⱼ wⱼ · experts[iⱼ](h) for images h [N, T, D] and per-image weights/indices [N, k] → [N, T, D]."""
        out = torch.zeros_like(hidden)
        for e, expert in enumerate(self.experts):
            rows, slots = torch.nonzero(indices == e, as_tuple=True)
            if rows.numel() == 0:
                continue
            contribution = expert(hidden[rows]) * weights[rows, slots, None, None].to(hidden.dtype)
            out = out.index_add(0, rows, contribution)
        return out

    def forward(self, hidden: torch.Tensor, t_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output [N, T, D], gate probabilities [N, E] for the training loss)."""
        logits, weights, indices = self.gate(t_emb)
        out = self.combine(hidden, weights, indices) + self.shared_experts(hidden)
        return out, logits.softmax(dim=-1)


class SwitchBlock(nn.Module):
    """adaLN-Zero block (conditioned on c = eₜ + e_y) whose feed-forward experts are gated by eₜ alone."""

    def __init__(self, config: SwitchDiTConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, config.num_heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.moe = TimestepMoE(config)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, t_emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a))
        moe_out, probs = self.moe(modulate(self.norm2(x), shift_m, scale_m), t_emb)
        return x + gate_m[:, None] * moe_out, probs


@dataclass(frozen=True)
class SwitchOutput:
    """A training forward pass: the noise prediction and every block's gate probabilities."""

    eps: torch.Tensor
    probs: torch.Tensor
    """[N, depth, E] softmax of each block's gate for each batch row."""


class SwitchDiT(DiTMoE):
    """Class-conditional Switch-DiT predicting the noise ε of a DDPM (the same call as dit-digits' DiTMoE).

    `forward(x [N, 1, H, W], t [N] long DDPM timesteps, y [N] long class ids; n_classes = null class)`
    returns ε̂ [N, 1, H, W]. Embeddings, patch grid, initialisation and output layer are DiTMoE's; the
    blocks are `SwitchBlock`s, whose gates read the timestep embedding only.
    """

    _can_record_outputs = {"router_logits": TimestepGate}  # noqa: RUF012 — RouteScope's declarative discovery
    block_type = SwitchBlock
    config: SwitchDiTConfig

    def __init__(self, config: SwitchDiTConfig) -> None:
        super().__init__(config)

    def forward_with_probs(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> SwitchOutput:
        """The forward pass plus every block's gate probabilities (for the diffusion-prior loss)."""
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
        t_emb = self.t_embedder(t)
        c = t_emb + self.y_embedder(y)
        probs: list[torch.Tensor] = []
        for block in self.blocks:
            h, p = block(h, c, t_emb)
            probs.append(p)
        eps = self.unpatchify(self.final_layer(h, c))
        return SwitchOutput(eps=eps, probs=torch.stack(probs, dim=1))

    def forward_with_stats(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> DiTOutput:
        raise NotImplementedError("Switch-DiT has no balance loss: use forward_with_probs")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.forward_with_probs(x, t, y).eps

    @torch.no_grad()
    def chosen_units(self) -> torch.Tensor:
        """[T, depth·E] 0/1: which experts each block's gate picks at every DDPM timestep (block-major)."""
        t_emb = self.t_embedder(torch.arange(self.config.n_timesteps, device=self.pos_embed.device))
        parts = []
        for block in self.blocks:
            _, _, indices = block.moe.gate(t_emb)
            parts.append(torch.zeros(len(t_emb), self.config.n_routed_experts).scatter(1, indices.cpu(), 1.0))
        return torch.cat(parts, dim=1)
