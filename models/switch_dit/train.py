"""Training recipe for switch-dit-digits: reproduces the shipped weights on CPU and writes a loadable folder.

Same data, loop (dit_digits/fitting.py), label dropout, EMA, saving and quality check as dit-digits
(imported from there), with Switch-DiT's objective: the DDPM ε-loss plus `jsd_weight` × the
diffusion-prior JSD (prior.py), whose unit matching is redone every step from the gates' current choices
over all T timesteps. The folder gets `config.json`, `model.safetensors`, `metrics.json` and
`samples.png`; `routescope train switch-dit-digits --out DIR` calls `main`, and so does
`python -m routescope.models.switch_dit.train --out DIR`.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..dit_digits.data import load_digits_arrays, to_model_space
from ..dit_digits.diffusion import NoiseSchedule
from ..dit_digits.fitting import Schedule, fit
from ..dit_digits.train import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Evaluation,
    add_recipe_arguments,
    finish,
    log_summary,
    recipe_keywords,
    run_metrics,
    save_model,
)
from .config import SwitchDiTConfig
from .model import SwitchDiT
from .prior import diffusion_prior_loss, match_units, prior_windows

log = logging.getLogger(__name__)

DEFAULT_STEPS = 3000
"""Steps of the shipped run."""


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

    `init` continues from a saved folder (its config and weights; the new run's EMA starts from them), to
    extend a run that stopped early; the shipped weights are one run from a seeded initialisation."""
    out_dir = Path(out_dir)
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if init is not None:
        config = SwitchDiTConfig.load(Path(init) / CONFIG_FILE)
    config = config or SwitchDiTConfig()
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
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SwitchDiT(config).train()
        if init is not None:
            model.load_state_dict(load_file(str(Path(init) / WEIGHTS_FILE)), strict=True)
        noise_schedule = NoiseSchedule.from_config(config)
        units = config.depth * config.n_routed_experts
        windows = prior_windows(config.n_timesteps, units, config.depth * config.top_k, config.prior_alpha)

        def objective(
            step: int, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator
        ) -> dict[str, torch.Tensor]:
            t = torch.randint(0, noise_schedule.n_timesteps, (len(x0),), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            out = model.forward_with_probs(noise_schedule.add_noise(x0, noise, t), t, y)
            mse = F.mse_loss(out.eps, noise)
            perm = match_units(model.chosen_units(), windows, gen)
            jsd = diffusion_prior_loss(out.probs, windows, t, perm)
            return {"loss": mse + config.jsd_weight * jsd, "mse": mse, "jsd": jsd}

        fitted = fit(
            model, objective, data, torch.as_tensor(labels), schedule, generator, name="switch-dit-digits"
        )
        save_model(fitted.ema, out_dir, "switch-dit-digits")
        metrics = run_metrics(
            "switch-dit-digits", fitted, seed=seed, steps_requested=steps,
            init=None if init is None else str(init), batch_size=batch_size, lr=lr, ema_decay=ema_decay,
            threads=threads,
        )  # fmt: skip
        metrics |= {
            "gate_usage_by_timestep_decile": {
                "note": "share of DDPM timesteps in each tenth of 0..T-1 (noisiest last) whose gate picks "
                "each expert, per block; from the saved EMA gates",
                "usage": gate_usage(fitted.ema),
            },
        }
        evaluation = Evaluation(
            per_class=eval_per_class, steps=eval_steps, cfg_scale=eval_cfg_scale, seed=seed
        )
        return finish(fitted.ema, out_dir, metrics, evaluation, started)
    finally:
        torch.set_num_threads(previous_threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the bundled switch-dit-digits Switch-DiT on CPU.")
    add_recipe_arguments(parser, default_steps=DEFAULT_STEPS, default_threads=1)
    parser.add_argument("--init", type=Path, default=None, help="continue from a saved folder's weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log_summary("switch-dit-digits", train(args.out, init=args.init, **recipe_keywords(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
