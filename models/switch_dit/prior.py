"""Switch-DiT's diffusion prior: which gate units each timestep *should* use, and the JSD pulling it there.

Every block's gate has E outputs, so the model has U = depth·E *units*. The prior gives each DDPM timestep
t a contiguous window of w = depth·k units (each block chooses k) whose start slides from unit 0 at t = 0
to unit U − w at t = T−1, as (t / (T−1))^α. Nearby timesteps therefore share almost all of their units and
distant ones share none: the inter-task relationship the paper wants denoising paths to follow.

The prior fixes only that structure, not which unit is which: before comparing, the units of the prior are
matched one-to-one to the gate's units (a linear assignment minimising Σₜ |q(t, a) − m(t, b)| between the
gate's current top-k choices q and the prior windows m over all timesteps, with a random tie-breaking
order), and the loss is the Jensen–Shannon divergence between the gate distribution over units (the
per-block softmax divided by depth) and the matched, normalised window, averaged over the batch's
timesteps. This follows the paper (arXiv 2403.09176, §3.3) and its released code; the code here is ours.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment


def prior_windows(n_timesteps: int, units: int, width: int, alpha: float) -> torch.Tensor:
    """[T, U] 0/1 mask: timestep t owns the `width` consecutive units starting at round((t/(T−1))^α·(U−w))."""
    if not 0 < width <= units:
        raise ValueError(f"window width must be in 1..{units}, got {width}")
    grid = torch.linspace(0.0, 1.0, n_timesteps, dtype=torch.float64) ** alpha
    starts = (grid * (units - width)).round().long()
    mask = torch.zeros(n_timesteps, units)
    for t, start in enumerate(starts.tolist()):
        mask[t, start : start + width] = 1.0
    return mask


def jensen_shannon(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over rows of JSD(p‖q) = ½ KL(p‖m) + ½ KL(q‖m), m = (p+q)/2, natural log."""
    m = (p + q) / 2
    kl_p = (p * ((p + eps).log() - (m + eps).log())).sum(-1)
    kl_q = (q * ((q + eps).log() - (m + eps).log())).sum(-1)
    return ((kl_p + kl_q) / 2).mean()


@torch.no_grad()
def match_units(chosen: torch.Tensor, windows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """perm [U] such that prior unit perm[a] is assigned to gate unit a (minimum total L1 mismatch).

    `chosen` [T, U] is 1 where a block's gate picks that expert at timestep t; `windows` [T, U] the prior.
    Both unit orders are shuffled before the assignment so that ties do not always favour low indices.
    """
    units = chosen.shape[1]
    gate_order = torch.randperm(units, generator=generator)
    prior_order = torch.randperm(units, generator=generator)
    a, b = chosen[:, gate_order].double(), windows[:, prior_order].double()
    cost = (a.T @ (1 - b) + (1 - a).T @ b).numpy()  # Σₜ |a_t − b_t| for 0/1 columns
    rows, cols = linear_sum_assignment(cost)
    perm = torch.empty(units, dtype=torch.long)
    perm[gate_order[torch.as_tensor(rows)]] = prior_order[torch.as_tensor(cols)]
    return perm


def diffusion_prior_loss(
    probs: torch.Tensor, windows: torch.Tensor, t: torch.Tensor, perm: torch.Tensor
) -> torch.Tensor:
    """JSD between the batch's gate distribution over units and its matched prior window.

    probs [N, depth, E] are the gate softmaxes of the batch rows (timesteps t [N]); the gate distribution
    over units is probs flattened / depth. `perm` comes from `match_units`.
    """
    depth = probs.shape[1]
    gate = probs.reshape(probs.shape[0], -1) / depth
    target = windows[t][:, perm]
    target = target / target.sum(-1, keepdim=True)
    return jensen_shannon(gate, target)
