"""The DiT-MoE network with the parameter names and shapes of the published checkpoints.

"Scaling Diffusion Transformers to 16 Billion Parameters" released bare state dicts, so loading one
strictly needs a module tree whose `state_dict()` keys and shapes are exactly theirs:

    pos_embed [1, T, D]                      (fixed 2-D sine-cosine, stored in the checkpoint)
    x_embedder.proj  (Conv2d C→D, kernel p)  t_embedder.mlp.{0,2}  y_embedder.embedding_table [1001, D]
    blocks.i.attn.{qkv,proj}                 or, for the flash-attention checkpoints (XL, G),
    blocks.i.attn.{Wqkv,q_norm,k_norm,out_proj}
    blocks.i.moe.gate.weight [E, D]          blocks.i.moe.experts.j.{gate,up,down}_proj (SwiGLU, 4D)
    blocks.i.moe.shared_experts.{gate,up,down}_proj (SwiGLU, 2D)
    blocks.i.adaLN_modulation.1              final_layer.{linear,adaLN_modulation.1}

The MoE layer (router `gate`, `experts`, `shared_experts`) is the bundled dit-digits model's, which has
this very layout and routes the same way: softmax over E experts, top-k without renormalising, every
chosen expert's output scaled by its probability, plus the always-on shared expert. Its gate returns
`(logits, weights, indices)`, so RouteScope records exactly what the layer applied.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..dit_digits.model import Attention, FinalLayer, MoEFeedForward, MoEGate, modulate
from .config import DiTMoEConfig


def sincos_position_embedding(dim: int, grid: int) -> torch.Tensor:
    """The checkpoints' fixed embedding [grid², dim], row-major tokens: the first half of the channels
    encodes the column, the second half the row, each as sines then cosines at 1/10000^(i/(dim/4))."""
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coord in (cols.reshape(-1), rows.reshape(-1)):
        angles = coord[:, None] * omega[None]
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1).float()


def _linear(module: object) -> nn.Linear:
    if not isinstance(module, nn.Linear):
        raise TypeError(f"expected a Linear layer, got {type(module).__name__}")
    return module


class PatchEmbed(nn.Module):
    """Latent [N, C, H, W] → patch tokens [N, T, D] by a strided convolution (`proj`)."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """Timestep (DDPM index, or rectified-flow t ∈ (0, 1]) → cos/sin features → 2-layer MLP → [N, D]."""

    def __init__(self, hidden_size: int, frequency_size: int) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_size // 2
        steps = torch.arange(half, dtype=torch.float32, device=t.device)
        freqs = torch.exp(-math.log(10000.0) * steps / half)
        args = t.float()[:, None] * freqs[None]
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(features.to(_linear(self.mlp[0]).weight.dtype))


class LabelEmbedder(nn.Module):
    """Class id → [N, D]; id `num_classes` is the null class of classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class FlashLayoutAttention(nn.Module):
    """The flash-attention module's parameters (`Wqkv`, per-head LayerNorm `q_norm`/`k_norm`,
    `out_proj`), computed with PyTorch's scaled-dot-product attention (same scale, 1/√head_dim)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = hidden_size // num_heads
        self.Wqkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.Wqkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).unbind(dim=2)
        q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out_proj(out.transpose(1, 2).reshape(n, t, d))


class DiTMoEBlock(nn.Module):
    """adaLN-Zero block: attention, then the MoE feed-forward, each modulated and gated by c."""

    def __init__(self, config: DiTMoEConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn: nn.Module = (
            FlashLayoutAttention(d, config.num_heads)
            if config.attention == "flash"
            else Attention(d, config.num_heads)
        )
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.moe = MoEFeedForward(
            d,
            config.n_experts,
            config.top_k,
            config.mlp_ratio * d,
            config.shared_ratio * d,
            balance_alpha=0.01,
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a))
        moe_out, _stats = self.moe(modulate(self.norm2(x), shift_m, scale_m))
        return x + gate_m[:, None] * moe_out


class DiTMoE(nn.Module):
    """Class-conditional latent DiT with an MoE feed-forward layer in every block.

    `forward(x [N, C, h, w] latents, t [N] timesteps, y [N] class ids)` returns
    `[N, out_channels, h, w]`: the ε (DDPM) or velocity (rectified flow) prediction in the first C
    channels and, with `learn_sigma`, the variance interpolation in the rest. Tokens are the patches in
    row-major order: token i sits at (i // grid, i % grid).
    """

    _can_record_outputs = {"router_logits": MoEGate}  # noqa: RUF012 — RouteScope's declarative discovery

    def __init__(self, config: DiTMoEConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.x_embedder = PatchEmbed(config.in_channels, d, config.patch_size)
        self.t_embedder = TimestepEmbedder(d, config.frequency_size)
        self.y_embedder = LabelEmbedder(config.num_classes, d)
        self.register_buffer("pos_embed", sincos_position_embedding(d, config.grid)[None])
        self.blocks = nn.ModuleList(DiTMoEBlock(config) for _ in range(config.depth))
        self.final_layer = FinalLayer(d, config.patch_size, config.out_channels)
        self._initialize()

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch-token grid."""
        return self.config.grid, self.config.grid

    @property
    def null_class(self) -> int:
        """The class id of the unconditional branch: num_classes."""
        return self.config.num_classes

    def _initialize(self) -> None:
        """DiT's initialisation (Xavier linears, zeroed adaLN and output layers): a random model in the
        real layout starts as the untrained checkpoints did. Loading a checkpoint overwrites all of it."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for index in (0, 2):
            nn.init.normal_(_linear(self.t_embedder.mlp[index]).weight, std=0.02)
        zeroed: list[object] = [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]
        zeroed += [block.adaLN_modulation[-1] for block in self.blocks]  # type: ignore[union-attr, index, misc]
        for layer in map(_linear, zeroed):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, T, p·p·C_out] → [N, C_out, h, w]."""
        n, p, c, g = tokens.shape[0], self.config.patch_size, self.config.out_channels, self.config.grid
        x = tokens.reshape(n, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(n, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.x_embedder(x) + self.pos_embed.to(x.dtype)
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            h = block(h, c)
        return self.unpatchify(self.final_layer(h, c))
