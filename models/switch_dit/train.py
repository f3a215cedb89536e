"""Training recipe for switch-dit-digits: reproduces the shipped weights on CPU and writes a loadable folder.

Same data, schedule, optimiser, label dropout, EMA and quality check as dit-digits (imported from there),
with Switch-DiT's objective: the DDPM ε-loss plus `jsd_weight` × the diffusion-prior JSD (prior.py), whose
unit matching is redone every step from the gates' current choices over all T timesteps. The folder gets
`config.json`, `model.safetensors`, `metrics.json` and `samples.png`; `routescope train switch-dit-digits
--out DIR` calls `main`, and so does `python -m routescope.models.switch_dit.train --out DIR`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..dit_digits.data import load_digits_arrays, to_model_space
from ..dit_digits.diffusion import NoiseSchedule, sample
from ..dit_digits.figure import write_grid_png
from ..dit_digits.train import _lr_at, evaluate
from .config import SwitchDiTConfig
from .model import SwitchDiT
from .prior import diffusion_prior_loss, match_units, prior_windows

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
FIGURE_FILE = "samples.png"
DEFAULT_STEPS = 2500
"""Steps of the shipped run."""


def save_model(model: SwitchDiT, out_dir: Path) -> None:
    """Write `config.json` and `model.safetensors` (float32, contiguous) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.save(out_dir / CONFIG_FILE)
    state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt", "model": "switch-dit-digits"})


def gate_usage(model: SwitchDiT, bins: int = 10) -> list[list[list[float]]]:
    """[bins][depth][E]: share of the timesteps of each of `bins` equal ranges that pick each expert."""
    chosen = model.chosen_units().reshape(model.config.n_timesteps, model.config.depth, -1)
    return [[[round(v, 3) for v in row] for row in part.mean(0).tolist()] for part in chosen.chunk(bins)]


def train(
    out_dir: Path,
    *,
    steps: int,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    warmup: int = 100,
    ema_decay: float = 0.999,
    threads: int = 1,
    config: SwitchDiTConfig | None = None,
    max_seconds: float | None = None,
    eval_per_class: int = 20,
    eval_steps: int = 50,
    eval_cfg_scale: float = 4.0,
    log_every: int = 100,
    init: Path | None = None,
) -> dict[str, Any]:
    """Train on CPU, save the EMA model into out_dir and return the metrics also written to metrics.json.

    `init` continues from a saved folder (its config and weights; the new run's EMA starts from them), as
    the shipped model was trained: a first run, then a second from its weights."""
    out_dir = Path(out_dir)
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if init is not None:
        config = SwitchDiTConfig.load(Path(init) / CONFIG_FILE)
    config = config or SwitchDiTConfig()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        generator = torch.Generator().manual_seed(seed)
        images, labels = load_digits_arrays()
        data = to_model_space(images, config.image_size)
        targets = torch.as_tensor(labels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SwitchDiT(config).train()
        if init is not None:
            model.load_state_dict(load_file(str(Path(init) / WEIGHTS_FILE)), strict=True)
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        schedule = NoiseSchedule.from_config(config)
        units = config.depth * config.n_routed_experts
        windows = prior_windows(config.n_timesteps, units, config.depth * config.top_k, config.prior_alpha)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        order = torch.randperm(len(data), generator=generator)
        cursor = 0
        curve: list[dict[str, float]] = []
        window: dict[str, float] = {"loss": 0.0, "mse": 0.0, "jsd": 0.0, "n": 0}
        done = 0
        for step in range(steps):
            if cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(data), generator=generator), 0
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            y = targets[idx].clone()
            y[torch.rand(len(idx), generator=generator) < config.class_dropout] = config.null_class
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, lr, warmup)
            t = torch.randint(0, schedule.n_timesteps, (len(idx),), generator=generator)
            noise = torch.randn(data[idx].shape, generator=generator)
            out = model.forward_with_probs(schedule.add_noise(data[idx], noise, t), t, y)
            mse = F.mse_loss(out.eps, noise)
            perm = match_units(model.chosen_units(), windows, generator)
            jsd = diffusion_prior_loss(out.probs, windows, t, perm)
            total = mse + config.jsd_weight * jsd
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            decay = min(ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)
            done = step + 1
            window["loss"] += total.item()
            window["mse"] += mse.item()
            window["jsd"] += jsd.item()
            window["n"] += 1
            elapsed = time.perf_counter() - started
            out_of_time = max_seconds is not None and elapsed > max_seconds
            if done % log_every == 0 or done == steps or out_of_time:
                n = window.pop("n")
                point = {"step": done, "seconds": round(elapsed, 1)} | {
                    k: round(v / n, 5) for k, v in window.items()
                }
                curve.append(point)
                log.info("switch-dit-digits step %d/%d %s", done, steps, point)
                window = {"loss": 0.0, "mse": 0.0, "jsd": 0.0, "n": 0}
            if out_of_time:
                log.warning("switch-dit-digits: stopping after %d steps (max_seconds=%s)", done, max_seconds)
                break
        train_seconds = time.perf_counter() - started
        save_model(ema, out_dir)
        metrics: dict[str, Any] = {
            "model": "switch-dit-digits",
            "seed": seed,
            "steps_requested": steps,
            "steps": done,
            "init": None if init is None else str(init),
            "batch_size": batch_size,
            "lr": lr,
            "ema_decay": ema_decay,
            "threads": threads,
            "train_seconds": round(train_seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "curve": curve,
            "final": curve[-1] if curve else {},
            "gate_usage_by_timestep_decile": {
                "note": "share of DDPM timesteps in each tenth of 0..T-1 (noisiest last) whose gate picks "
                "each expert, per block; from the saved EMA gates",
                "usage": gate_usage(ema),
            },
        }
        if eval_per_class > 0:
            metrics["quality"] = evaluate(
                ema, per_class=eval_per_class, steps=eval_steps, cfg_scale=eval_cfg_scale, seed=seed
            )
            figure = sample(
                ema,
                torch.arange(config.n_classes).repeat_interleave(10),
                steps=eval_steps,
                cfg_scale=eval_cfg_scale,
                seed=seed + 1,
            )
            write_grid_png(out_dir / FIGURE_FILE, figure, rows=config.n_classes, cols=10)
        metrics["total_seconds"] = round(time.perf_counter() - started, 1)
        (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        return metrics
    finally:
        torch.set_num_threads(previous_threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the bundled switch-dit-digits Switch-DiT on CPU.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-per-class", type=int, default=20)
    parser.add_argument("--init", type=Path, default=None, help="continue from a saved folder's weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    metrics = train(
        args.out,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        max_seconds=args.max_seconds,
        threads=args.threads,
        lr=args.lr,
        eval_per_class=args.eval_per_class,
        init=args.init,
    )
    quality = metrics.get("quality", {})
    log.info(
        "switch-dit-digits: %d steps in %.0f s; class accuracy with CFG %s, without %s",
        metrics["steps"],
        metrics["train_seconds"],
        quality.get("with_cfg", {}).get("accuracy"),
        quality.get("without_cfg", {}).get("accuracy"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
