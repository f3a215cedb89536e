"""Read a DiT-MoE checkpoint safely and load it with strict key matching — or say which config it is.

A checkpoint file is untrusted input: `.pt` files are read with `torch.load(weights_only=True)` (only
tensors and plain containers, plus argparse's `Namespace`, which the reference training script stores
beside the weights), `.safetensors` files with safetensors. Training checkpoints wrap the weights
(`{"model", "ema", "opt", "args"}`; the reference loader prefers `ema`) and DDP/DeepSpeed prefix them with
`module.`; both are unwrapped. Loading never fills in missing weights: every key and shape must match the
chosen config, and when they do not, the error names the first differences and the config whose shapes
the checkpoint does fit, read from the tensors themselves.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .config import EXPERTS, SIZES, DiTMoEConfig
from .model import DiTMoE

WRAPPERS = ("ema", "model", "state_dict", "module")
"""Keys a training checkpoint keeps its weights under, in the order they are preferred."""
SHOWN = 3
"""Differences named in a mismatch error, per kind."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys or shapes do not fit the config (one line)."""


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """The weights of a `.pt`/`.pth`/`.ckpt`/`.bin` or `.safetensors` file, unwrapped, on the CPU."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"no checkpoint file at {file}")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(file))
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refusals, truncated files, foreign formats: all one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {file} as weights only: {first[:200]}") from None
    return unwrap(raw, file)


def unwrap(raw: Any, source: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a training checkpoint and drop a common `module.` prefix."""
    state = raw
    while isinstance(state, Mapping) and not _is_tensor_dict(state):
        inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not (isinstance(state, Mapping) and state and _is_tensor_dict(state)):
        raise CheckpointError(f"{source} holds no state dict of tensors (looked under {', '.join(WRAPPERS)})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _is_tensor_dict(value: Mapping[Any, Any]) -> bool:
    return bool(value) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def expected_shapes(config: DiTMoEConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the config's network and its shape, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = DiTMoE(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def detect_attention(state: Mapping[str, torch.Tensor]) -> str | None:
    """`flash` or `timm` from the attention parameter names, None when neither appears."""
    if any(".attn.Wqkv." in key for key in state):
        return "flash"
    if any(".attn.qkv." in key for key in state):
        return "timm"
    return None


def infer_config(state: Mapping[str, torch.Tensor]) -> DiTMoEConfig | None:
    """The config a state dict's shapes imply (top-k and heads, which no shape fixes: 2 and the named
    size's, else hidden/64), or None when the tensors are not a DiT-MoE at all."""
    try:
        d, channels, patch, _ = state["x_embedder.proj.weight"].shape
        tokens = state["pos_embed"].shape[1]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        n_experts = state["blocks.0.moe.gate.weight"].shape[0]
        expert_width = state["blocks.0.moe.experts.0.gate_proj.weight"].shape[0]
        shared_width = state["blocks.0.moe.shared_experts.gate_proj.weight"].shape[0]
        classes = state["y_embedder.embedding_table.weight"].shape[0] - 1
        out = state["final_layer.linear.weight"].shape[0]
        frequency = state["t_embedder.mlp.0.weight"].shape[1]
    except (KeyError, ValueError, IndexError):
        return None
    grid = math.isqrt(tokens)
    size = next((s for s, v in SIZES.items() if (v["depth"], v["hidden_size"]) == (depth, d)), None)
    experts = f"{n_experts}E2A"
    fields: dict[str, Any] = dict(SIZES[size]) if size else {"depth": depth, "hidden_size": d}
    fields.setdefault("num_heads", max(1, d // 64))
    fields.update(
        attention=detect_attention(state) or "timm",
        patch_size=patch,
        image_size=grid * patch * 8,
        in_channels=channels,
        learn_sigma=out == patch * patch * channels * 2,
        num_classes=classes,
        n_experts=n_experts,
        top_k=min(2, n_experts),
        mlp_ratio=expert_width // d,
        shared_ratio=shared_width // d,
        frequency_size=frequency,
    )
    named = size is not None and experts in EXPERTS and patch == 2
    image = "" if fields["image_size"] == 256 else f"-{fields['image_size']}"
    try:
        return DiTMoEConfig(name=f"{size}-{experts}{image}" if named else "custom", **fields)
    except ValueError:
        return None


def _describe(config: DiTMoEConfig) -> str:
    if config.name != "custom":
        return f"dit-moe:{config.name}"
    return (
        f"a custom config (depth {config.depth}, hidden {config.hidden_size}, {config.n_experts} experts, "
        f"patch {config.patch_size}, latent {config.latent_size}, {config.attention} attention; "
        "top-k and heads are not in the weights) — write it to a .json and pass dit-moe:FILE.json"
    )


def mismatch(config: DiTMoEConfig, state: Mapping[str, torch.Tensor]) -> str | None:
    """None when keys and shapes match exactly; else one line naming the first differences."""
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(v)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != v
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:SHOWN])}{more}")
    return "; ".join(parts)


def check_matches(config: DiTMoEConfig, state: Mapping[str, torch.Tensor], source: str) -> DiTMoEConfig:
    """The config to load with (the attention layout follows the checkpoint's parameter names), or a
    `CheckpointError` naming the first differences and the config the shapes fit."""
    layout = detect_attention(state)
    chosen = replace(config, attention=layout) if layout and layout != config.attention else config  # type: ignore[arg-type]
    problem = mismatch(chosen, state)
    if problem is None:
        return chosen
    inferred = infer_config(state)
    if inferred is not None and mismatch(inferred, state) is None:
        hint = f"its shapes match {_describe(inferred)}"
    else:
        hint = "its shapes match no DiT-MoE config"
    raise CheckpointError(f"{source} does not fit dit-moe:{config.name} ({hint}): {problem}")


def load_dit_moe(config: DiTMoEConfig, weights: Path | str, *, dtype: torch.dtype | None = None) -> DiTMoE:
    """The network with the checkpoint's weights, strictly matched, in eval mode (default float32).

    The module is built on the meta device and takes the checkpoint's tensors as they are
    (`assign=True`), so even DiT-MoE-G loads without a second copy of its weights.
    """
    state = read_state_dict(weights)
    config = check_matches(config, state, str(weights))
    with torch.device("meta"):
        model = DiTMoE(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(dtype or torch.float32).eval()
