"""Training recipe for dit-digits: reproduces the shipped weights on CPU and writes a loadable folder.

`train(out_dir, steps=...)` fits the DiT-MoE to scikit-learn's digits with the DDPM ε-loss plus the MoE
balance loss, drops the class label to the null class with probability `class_dropout` (so one network
serves both branches of classifier-free guidance), keeps an exponential moving average of the weights
(the EMA weights are the ones saved), then measures the class accuracy of generated samples with and
without guidance. The output folder holds `config.json`, `model.safetensors`, `metrics.json` and
`samples.png`; `routescope train dit-digits --out DIR` calls this function, and so does
`python -m routescope.models.dit_digits.train --out DIR`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .config import DiTDigitsConfig
from .data import load_digits_arrays, to_model_space
from .diffusion import NoiseSchedule, sample, training_loss
from .figure import write_grid_png
from .model import DiTMoE
from .quality import DigitClassifier, class_accuracy

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
FIGURE_FILE = "samples.png"


def save_model(model: DiTMoE, out_dir: Path) -> None:
    """Write `config.json` and `model.safetensors` (float32, contiguous) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.save(out_dir / CONFIG_FILE)
    state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt", "model": "dit-digits"})


def _lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(
    out_dir: Path,
    *,
    steps: int,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    warmup: int = 100,
    ema_decay: float = 0.999,
    threads: int = 2,
    config: DiTDigitsConfig | None = None,
    max_seconds: float | None = None,
    eval_per_class: int = 20,
    eval_steps: int = 50,
    eval_cfg_scale: float = 4.0,
    log_every: int = 100,
) -> dict[str, Any]:
    """Train on CPU, save the EMA model into out_dir and return the metrics also written to metrics.json.

    `max_seconds` stops early (the metrics record the steps actually done); `eval_per_class = 0` skips the
    sample-quality evaluation and the figure (as the smoke run does).
    """
    out_dir = Path(out_dir)
    if steps < 1:
        raise ValueError("steps must be at least 1")
    config = config or DiTDigitsConfig()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        generator = torch.Generator().manual_seed(seed)
        images, labels = load_digits_arrays()
        data = to_model_space(images, config.image_size)
        targets = torch.as_tensor(labels)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation; the caller's global RNG is untouched
            torch.manual_seed(seed)
            model = DiTMoE(config).train()
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        schedule = NoiseSchedule.from_config(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        order = torch.randperm(len(data), generator=generator)
        cursor = 0
        curve: list[dict[str, float]] = []
        window: dict[str, float] = {"loss": 0.0, "mse": 0.0, "balance": 0.0, "n": 0}
        load_sum = torch.zeros(config.depth, config.n_routed_experts)
        load_batches = 0
        done = 0
        for step in range(steps):
            if cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(data), generator=generator), 0
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            y = targets[idx].clone()
            drop = torch.rand(len(idx), generator=generator) < config.class_dropout
            y[drop] = config.null_class
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, lr, warmup)
            parts = training_loss(model, schedule, data[idx], y, generator)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            decay = min(ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)
            done = step + 1
            window["loss"] += parts.total.item()
            window["mse"] += parts.mse.item()
            window["balance"] += parts.balance.item()
            window["n"] += 1
            if steps - step <= max(1, min(200, steps // 5)):  # expert load over the last part of training
                load_sum += parts.load
                load_batches += 1
            elapsed = time.perf_counter() - started
            out_of_time = max_seconds is not None and elapsed > max_seconds
            if done % log_every == 0 or done == steps or out_of_time:
                n = window.pop("n")
                point = {"step": done, "seconds": round(elapsed, 1)} | {
                    k: round(v / n, 5) for k, v in window.items()
                }
                curve.append(point)
                log.info("dit-digits step %d/%d %s", done, steps, point)
                window = {"loss": 0.0, "mse": 0.0, "balance": 0.0, "n": 0}
            if out_of_time:
                log.warning("dit-digits: stopping after %d steps (max_seconds=%s)", done, max_seconds)
                break
        train_seconds = time.perf_counter() - started
        save_model(ema, out_dir)
        load = (load_sum / max(1, load_batches)).tolist()
        metrics: dict[str, Any] = {
            "model": "dit-digits",
            "seed": seed,
            "steps_requested": steps,
            "steps": done,
            "batch_size": batch_size,
            "lr": lr,
            "ema_decay": ema_decay,
            "threads": threads,
            "train_seconds": round(train_seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "curve": curve,
            "final": curve[-1] if curve else {},
            "expert_load_end_of_training": {
                "note": "share of routed assignments per expert, per layer, averaged over the last batches",
                "batches": load_batches,
                "per_layer": [[round(v, 4) for v in row] for row in load],
                "max_over_mean": [round(max(row) * len(row), 3) for row in load],
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


def evaluate(model: DiTMoE, *, per_class: int, steps: int, cfg_scale: float, seed: int) -> dict[str, Any]:
    """Class accuracy of generated samples with guidance (cfg_scale) and without (scale 1 = conditional)."""
    classifier = DigitClassifier.fit()
    return {
        "classifier": "SVC(gamma=0.001, C=10) on the real 8x8 digits",
        "classifier_real_holdout_accuracy": round(classifier.real_holdout_accuracy, 4),
        "with_cfg": class_accuracy(
            model, classifier, per_class=per_class, steps=steps, cfg_scale=cfg_scale, seed=seed
        ),
        "without_cfg": class_accuracy(
            model, classifier, per_class=per_class, steps=steps, cfg_scale=1.0, seed=seed
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the bundled dit-digits DiT-MoE on CPU.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-per-class", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=None, help="override the config's image size")
    parser.add_argument("--beta-schedule", choices=["linear", "cosine"], default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = DiTDigitsConfig()
    if args.image_size is not None:
        config = replace(config, image_size=args.image_size)
    if args.beta_schedule is not None:
        config = replace(config, beta_schedule=args.beta_schedule)
    metrics = train(
        args.out,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        max_seconds=args.max_seconds,
        threads=args.threads,
        lr=args.lr,
        eval_per_class=args.eval_per_class,
        config=config,
    )
    quality = metrics.get("quality", {})
    log.info(
        "dit-digits: %d steps in %.0f s; class accuracy with CFG %s, without %s",
        metrics["steps"],
        metrics["train_seconds"],
        quality.get("with_cfg", {}).get("accuracy"),
        quality.get("without_cfg", {}).get("accuracy"),
    )
    return 0


DEFAULT_STEPS = 4000
"""Steps of the shipped run."""


if __name__ == "__main__":
    raise SystemExit(main())
