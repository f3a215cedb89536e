"""The training loop the two bundled digit diffusion models share.

dit-digits and switch-dit-digits are trained the same way — shuffled batches of the digits, the class
label dropped to the null class with probability `class_dropout` (one network for both branches of
classifier-free guidance), linear warm-up then cosine decay of the learning rate, gradient clipping at 1,
an exponential moving average of the weights, a logged loss curve and an optional time limit — and
differ only in their objective. `fit` runs that loop around an objective the caller passes in, so each
recipe (train.py here, switch_dit/train.py) states only what is its own.

The generator is drawn in a fixed order (batch order, label dropout, then whatever the objective draws),
so a seed reproduces a run exactly.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

Objective = Callable[[int, torch.Tensor, torch.Tensor, torch.Generator], dict[str, torch.Tensor]]
"""(step, clean images [B, ...], labels after dropout [B], generator) -> named losses; `loss` is minimised,
every entry is averaged into the logged curve."""


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings of a run."""

    steps: int
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.999
    class_dropout: float = 0.1
    null_class: int = 10
    max_seconds: float | None = None
    log_every: int = 100

    @classmethod
    def for_config(cls, config: Any, **settings: Any) -> Schedule:
        """The schedule with the label dropout and null class of a model config (`class_dropout`,
        `null_class`); `settings` are the other fields."""
        return cls(class_dropout=config.class_dropout, null_class=config.null_class, **settings)


@dataclass
class Fitted:
    """What a run leaves: the EMA model, the steps actually done, the time taken and the loss curve."""

    ema: nn.Module
    steps: int
    seconds: float
    curve: list[dict[str, float]] = field(default_factory=list)


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def fit(
    model: nn.Module,
    objective: Objective,
    images: torch.Tensor,
    labels: torch.Tensor,
    schedule: Schedule,
    generator: torch.Generator,
    *,
    name: str,
) -> Fitted:
    """Train `model` in place on (images, labels) with `objective`; return the EMA copy and the curve.

    `schedule.max_seconds` stops early; the curve then ends at the last step done.
    """
    if schedule.steps < 1:
        raise ValueError("steps must be at least 1")
    started = time.perf_counter()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=0.0)
    steps, batch = schedule.steps, schedule.batch_size
    order = torch.randperm(len(images), generator=generator)
    cursor = 0
    curve: list[dict[str, float]] = []
    window: dict[str, float] = {}
    window_steps = 0
    done = 0
    for step in range(steps):
        if cursor + batch > len(order):
            order, cursor = torch.randperm(len(images), generator=generator), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        y = labels[idx].clone()
        y[torch.rand(len(idx), generator=generator) < schedule.class_dropout] = schedule.null_class
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, schedule.lr, schedule.warmup)
        losses = objective(step, images[idx], y, generator)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        decay = min(schedule.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        done = step + 1
        for key, value in losses.items():
            window[key] = window.get(key, 0.0) + value.item()
        window_steps += 1
        elapsed = time.perf_counter() - started
        out_of_time = schedule.max_seconds is not None and elapsed > schedule.max_seconds
        if done % schedule.log_every == 0 or done == steps or out_of_time:
            point = {"step": done, "seconds": round(elapsed, 1)}
            point |= {key: round(total / window_steps, 5) for key, total in window.items()}
            curve.append(point)
            log.info("%s step %d/%d %s", name, done, steps, point)
            window, window_steps = {}, 0
        if out_of_time:
            log.warning("%s: stopping after %d steps (max_seconds=%s)", name, done, schedule.max_seconds)
            break
    return Fitted(ema=ema, steps=done, seconds=time.perf_counter() - started, curve=curve)
