"""The network: a class-conditional diffusion transformer whose feed-forward layers are mixtures of experts.

It follows DiT-MoE ("Scaling Diffusion Transformers to 16 Billion Parameters"): patch tokens with a fixed
2-D sine-cosine position embedding, a timestep embedding plus a class embedding (with one extra *null*
class for classifier-free guidance) summed into a conditioning vector, adaLN-Zero blocks, and in every
block an MoE feed-forward layer made of one always-on shared expert plus top-k routed SwiGLU experts,
trained with an expert-level balance loss α·E·Σₑ fₑ·Pₑ.

The module layout is chosen for RouteScope's router discovery: each block's MoE layer holds a router
submodule `gate` (class `MoEGate`), its siblings `experts` (an `nn.ModuleList`) and `shared_experts`, and
the gate returns the `triple` convention `(router_logits, topk_weights, topk_indices)` — exactly the
weights and experts the layer then applies. `DiTMoE._can_record_outputs` declares `MoEGate` as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiTDigitsConfig


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: per-sample affine modulation of token features [N, T, D] by [N, D] shift and scale."""
    return x * (1 + scale[:, None]) + shift[:, None]


def sincos_position_embedding(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine embedding [rows·cols, dim], row-major over the patch grid.

    Half the channels encode the row, half the column, each as 1-D sin/cos at geometric frequencies.
    """
    if dim % 4:
        raise ValueError(f"position embedding width {dim} must be divisible by 4")
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    r, c = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coord in (r.reshape(-1), c.reshape(-1)):
        angles = coord[:, None] * omega[None]
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1).float()


class TimestepEmbedder(nn.Module):
    """DDPM timestep (an integer 0..n_timesteps-1) → sinusoidal features → 2-layer MLP → [N, D]."""

    def __init__(self, hidden_size: int, frequency_size: int) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def frequencies(self, t: torch.Tensor, max_period: float = 10000.0) -> torch.Tensor:
        half = self.frequency_size // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.frequencies(t))


class Attention(nn.Module):
    """Multi-head self-attention over the patch tokens (no mask: every patch sees every patch)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class ExpertMLP(nn.Module):
    """One SwiGLU feed-forward expert: down(silu(gate_proj(x)) · up(x)), no biases (as in DiT-MoE)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoEGate(nn.Module):
    """The router of one MoE layer: a bias-free linear map to expert logits, softmax, then top-k.

    `forward(hidden [B, T, D] or [B·T, D])` returns the triple
    `(router_logits [B·T, E] float32, topk_weights [B·T, k] float32, topk_indices [B·T, k] int64)`.
    As in DiT-MoE the weights are the softmax probabilities of the chosen experts, **not renormalised**
    (they sum to less than 1), and they are exactly the factors `MoEFeedForward` multiplies the routed
    experts' outputs by. Indices are sorted by weight, largest first (rank 0 = top-1 expert).
    """

    def __init__(self, hidden_size: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        if not 0 < top_k <= n_experts:
            raise ValueError(f"top_k must be in 1..{n_experts}, got {top_k}")
        self.n_experts = n_experts
        self.top_k = top_k
        self.weight = nn.Parameter(torch.empty(n_experts, hidden_size))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = hidden.reshape(-1, hidden.shape[-1])
        logits = F.linear(flat, self.weight).float()
        probs = logits.softmax(dim=-1)
        weights, indices = torch.topk(probs, self.top_k, dim=-1, sorted=True)
        return logits, weights, indices


@dataclass(frozen=True)
class MoEStats:
    """What one MoE layer's call reports besides its output (used in training, ignored in sampling)."""

    balance_loss: torch.Tensor
    """α·E·Σₑ fₑ·Pₑ for this call (a scalar with gradient through Pₑ)."""
    load: torch.Tensor
    """fₑ: share of the call's k·tokens assignments that went to each expert, [E], no gradient."""


class MoEFeedForward(nn.Module):
    """Shared expert + top-k routed experts: y = shared_experts(h) + Σⱼ wⱼ · experts[iⱼ](h).

    `(logits, w, i) = gate(h)` is computed once per call and used as is: every routed expert output is
    multiplied by the gate's own weight for it. The balance loss is DiT-MoE's expert-level form
    α·E·Σₑ fₑ·Pₑ with fₑ the share of assignments to expert e and Pₑ its mean router probability.
    """

    def __init__(
        self,
        hidden_size: int,
        n_experts: int,
        top_k: int,
        expert_hidden: int,
        shared_hidden: int,
        balance_alpha: float,
    ) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.top_k = top_k
        self.balance_alpha = balance_alpha
        self.gate = MoEGate(hidden_size, n_experts, top_k)
        self.experts = nn.ModuleList(ExpertMLP(hidden_size, expert_hidden) for _ in range(n_experts))
        self.shared_experts = ExpertMLP(hidden_size, shared_hidden)

    def combine(self, hidden: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Σⱼ wⱼ · experts[iⱼ](h) for flattened tokens h [M, D], weights/indices [M, k] → [M, D]."""
        out = torch.zeros_like(hidden)
        for e, expert in enumerate(self.experts):
            rows, slots = torch.nonzero(indices == e, as_tuple=True)
            if rows.numel() == 0:
                continue
            contribution = expert(hidden[rows]) * weights[rows, slots, None].to(hidden.dtype)
            out = out.index_add(0, rows, contribution)
        return out

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, MoEStats]:
        shape = hidden.shape
        logits, weights, indices = self.gate(hidden)
        flat = hidden.reshape(-1, shape[-1])
        routed = self.combine(flat, weights, indices)
        out = (routed + self.shared_experts(flat)).reshape(shape)
        with torch.no_grad():
            counts = torch.bincount(indices.reshape(-1), minlength=self.n_experts).float()
            load = counts / counts.sum()
        mean_prob = logits.softmax(dim=-1).mean(dim=0)
        balance = self.balance_alpha * self.n_experts * (load * mean_prob).sum()
        return out, MoEStats(balance_loss=balance, load=load)


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block: attention and MoE feed-forward, each modulated and gated by c."""

    def __init__(self, config: DiTDigitsConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, config.num_heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.moe = MoEFeedForward(
            d,
            config.n_routed_experts,
            config.top_k,
            config.expert_hidden,
            config.shared_expert_hidden,
            config.balance_alpha,
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, MoEStats]:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a))
        moe_out, stats = self.moe(modulate(self.norm2(x), shift_m, scale_m))
        return x + gate_m[:, None] * moe_out, stats


class FinalLayer(nn.Module):
    """adaLN-modulated norm and a linear map from each token to its patch's pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


@dataclass(frozen=True)
class DiTOutput:
    """A training forward pass: the noise prediction and the summed MoE balance loss and per-layer load."""

    eps: torch.Tensor
    balance_loss: torch.Tensor
    load: torch.Tensor
    """[depth, E]: each layer's share of assignments per routed expert."""


class DiTMoE(nn.Module):
    """Class-conditional DiT with MoE feed-forward layers, predicting the noise ε of a DDPM.

    `forward(x [N, 1, H, W], t [N] long DDPM timesteps, y [N] long class ids; n_classes = null class)`
    returns ε̂ [N, 1, H, W]. Tokens are the patches of the `patch_grid` in row-major order: token
    index = row · cols + col.
    """

    _can_record_outputs = {"router_logits": MoEGate}  # noqa: RUF012 — RouteScope's declarative discovery
    block_type: type[nn.Module] = DiTBlock
    """The transformer block (a subclass swaps in its own MoE: switch-dit-digits' timestep-gated block)."""

    def __init__(self, config: DiTDigitsConfig) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(f"image size {config.image_size} is not a multiple of patch {config.patch_size}")
        self.config = config
        d, p = config.hidden_size, config.patch_size
        self.x_embedder = nn.Conv2d(config.in_channels, d, kernel_size=p, stride=p)
        self.t_embedder = TimestepEmbedder(d, config.frequency_embedding_size)
        self.y_embedder = nn.Embedding(config.n_classes + 1, d)
        rows, cols = self.patch_grid
        self.register_buffer("pos_embed", sincos_position_embedding(d, rows, cols)[None], persistent=False)
        self.blocks = nn.ModuleList(self.block_type(config) for _ in range(config.depth))
        self.final_layer = FinalLayer(d, p, config.in_channels)
        self._initialize()

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch-token grid; token i sits at (i // cols, i % cols)."""
        g = self.config.image_size // self.config.patch_size
        return g, g

    @property
    def image_size(self) -> int:
        """Side of the (square) images the model denoises."""
        return self.config.image_size

    @property
    def null_class(self) -> int:
        """The class id of the unconditional (classifier-free guidance) branch: n_classes."""
        return self.config.n_classes

    def _initialize(self) -> None:
        """DiT's initialisation: Xavier linears, zeroed adaLN modulations and output layer (adaLN-Zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        w = self.x_embedder.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.y_embedder.weight, std=0.02)
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, T, p·p·C] → [N, C, H, W]."""
        n = tokens.shape[0]
        p, c = self.config.patch_size, self.config.in_channels
        rows, cols = self.patch_grid
        x = tokens.reshape(n, rows, cols, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(n, c, rows * p, cols * p)

    def forward_with_stats(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> DiTOutput:
        """The forward pass plus the MoE balance loss (summed over layers) and each layer's expert load."""
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        balance: list[torch.Tensor] = []
        loads: list[torch.Tensor] = []
        for block in self.blocks:
            h, stats = block(h, c)
            balance.append(stats.balance_loss)
            loads.append(stats.load)
        eps = self.unpatchify(self.final_layer(h, c))
        return DiTOutput(eps=eps, balance_loss=torch.stack(balance).sum(), load=torch.stack(loads))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.forward_with_stats(x, t, y).eps
