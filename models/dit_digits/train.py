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
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .config import DiTDigitsConfig
from .data import load_digits_arrays, to_model_space
from .diffusion import NoiseSchedule, sample, training_loss
from .figure import write_grid_png
from .fitting import Fitted, Schedule, fit
from .model import DiTMoE
from .quality import DigitClassifier, class_accuracy

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
FIGURE_FILE = "samples.png"


def save_model(model: nn.Module, out_dir: Path, name: str = "dit-digits") -> None:
    """Write `config.json` and `model.safetensors` (float32, contiguous) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.save(out_dir / CONFIG_FILE)
    state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt", "model": name})


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
    schedule = Schedule.for_config(
        config,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        ema_decay=ema_decay,
        max_seconds=max_seconds,
        log_every=log_every,
    )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        generator = torch.Generator().manual_seed(seed)
        images, labels = load_digits_arrays()
        data = to_model_space(images, config.image_size)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation; the caller's global RNG is untouched
            torch.manual_seed(seed)
            model = DiTMoE(config).train()
        noise = NoiseSchedule.from_config(config)
        tail = max(1, min(200, steps // 5))  # expert load is averaged over the last `tail` steps
        load = {"sum": torch.zeros(config.depth, config.n_routed_experts), "batches": 0}

        def objective(
            step: int, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator
        ) -> dict[str, torch.Tensor]:
            parts = training_loss(model, noise, x0, y, gen)
            if steps - step <= tail:
                load["sum"] += parts.load
                load["batches"] += 1
            return {"loss": parts.total, "mse": parts.mse, "balance": parts.balance}

        fitted = fit(model, objective, data, torch.as_tensor(labels), schedule, generator, name="dit-digits")
        save_model(fitted.ema, out_dir)
        mean_load = (load["sum"] / max(1, load["batches"])).tolist()
        metrics = run_metrics(
            "dit-digits", fitted, seed=seed, steps_requested=steps, batch_size=batch_size, lr=lr,
            ema_decay=ema_decay, threads=threads,
        )  # fmt: skip
        metrics |= {
            "expert_load_end_of_training": {
                "note": "share of routed assignments per expert, per layer, averaged over the last batches",
                "batches": load["batches"],
                "per_layer": [[round(v, 4) for v in row] for row in mean_load],
                "max_over_mean": [round(max(row) * len(row), 3) for row in mean_load],
            },
        }
        evaluation = Evaluation(
            per_class=eval_per_class, steps=eval_steps, cfg_scale=eval_cfg_scale, seed=seed
        )
        return finish(fitted.ema, out_dir, metrics, evaluation, started)
    finally:
        torch.set_num_threads(previous_threads)


@dataclass(frozen=True)
class Evaluation:
    """The sample-quality check after training (`per_class = 0` skips it and the figure)."""

    per_class: int
    steps: int
    cfg_scale: float
    seed: int


def run_metrics(name: str, fitted: Fitted, **settings: Any) -> dict[str, Any]:
    """The metrics both digit recipes write: the model, its settings, the steps done, the time, the size
    and the loss curve; each recipe adds what is its own."""
    parameters = sum(p.numel() for p in fitted.ema.parameters())
    head = {"model": name, "seed": settings.pop("seed"), "steps_requested": settings.pop("steps_requested")}
    return (
        head
        | {"steps": fitted.steps}
        | settings
        | {
            "train_seconds": round(fitted.seconds, 1),
            "parameters": parameters,
            "curve": fitted.curve,
            "final": fitted.curve[-1] if fitted.curve else {},
        }
    )


def finish(
    ema: nn.Module, out_dir: Path, metrics: dict[str, Any], evaluation: Evaluation, started: float
) -> dict[str, Any]:
    """The quality check and the samples figure (unless skipped), then `metrics.json`; returns the metrics."""
    if evaluation.per_class > 0:
        metrics["quality"] = evaluate(
            ema,
            per_class=evaluation.per_class,
            steps=evaluation.steps,
            cfg_scale=evaluation.cfg_scale,
            seed=evaluation.seed,
        )
        draw_samples(
            ema,
            out_dir / FIGURE_FILE,
            steps=evaluation.steps,
            cfg_scale=evaluation.cfg_scale,
            seed=evaluation.seed,
        )
    metrics["total_seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def evaluate(model: nn.Module, *, per_class: int, steps: int, cfg_scale: float, seed: int) -> dict[str, Any]:
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


def draw_samples(model: nn.Module, path: Path, *, steps: int, cfg_scale: float, seed: int) -> None:
    """The model card's figure: one row per class, ten guided samples each (seed + 1)."""
    n_classes = model.config.n_classes
    images = sample(
        model,
        torch.arange(n_classes).repeat_interleave(10),
        steps=steps,
        cfg_scale=cfg_scale,
        seed=seed + 1,
    )
    write_grid_png(path, images, rows=n_classes, cols=10)


def add_recipe_arguments(
    parser: argparse.ArgumentParser, *, default_steps: int, default_threads: int
) -> None:
    """The command-line options both digit recipes take (their `train` keywords of the same names)."""
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=default_steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--threads", type=int, default=default_threads)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-per-class", type=int, default=20)


def recipe_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """`train` keywords from the options `add_recipe_arguments` defines."""
    names = ("steps", "seed", "batch_size", "max_seconds", "threads", "lr", "eval_per_class")
    return {name: getattr(args, name) for name in names}


def log_summary(name: str, metrics: dict[str, Any]) -> None:
    """One line: steps, seconds and the class accuracy with and without guidance."""
    quality = metrics.get("quality", {})
    log.info(
        "%s: %d steps in %.0f s; class accuracy with CFG %s, without %s",
        name,
        metrics["steps"],
        metrics["train_seconds"],
        quality.get("with_cfg", {}).get("accuracy"),
        quality.get("without_cfg", {}).get("accuracy"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the bundled dit-digits DiT-MoE on CPU.")
    add_recipe_arguments(parser, default_steps=DEFAULT_STEPS, default_threads=2)
    parser.add_argument("--image-size", type=int, default=None, help="override the config's image size")
    parser.add_argument("--beta-schedule", choices=["linear", "cosine"], default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = DiTDigitsConfig()
    if args.image_size is not None:
        config = replace(config, image_size=args.image_size)
    if args.beta_schedule is not None:
        config = replace(config, beta_schedule=args.beta_schedule)
    log_summary("dit-digits", train(args.out, config=config, **recipe_keywords(args)))
    return 0


DEFAULT_STEPS = 4000
"""Steps of the shipped run."""


if __name__ == "__main__":
    raise SystemExit(main())
