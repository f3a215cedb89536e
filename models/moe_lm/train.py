"""Training recipe for moe-lm: corpus → tokenizer → Qwen2-MoE, on CPU, into a loadable checkpoint folder.

`train(out_dir, steps=...)` builds the five-domain corpus, trains the byte-level BPE tokenizer, cuts the
held-out evaluation set, trains `Qwen2MoeForCausalLM` with the next-token loss plus the router
load-balancing loss (every batch holds the same number of 256-token windows from each domain), then
measures per-domain validation loss / perplexity against unigram baselines and the experts' domain
specialisation. The output folder holds `config.json`, `model.safetensors`, the tokenizer files,
`domains.jsonl` (the evaluation set) and `metrics.json`. `routescope train moe-lm --out DIR` calls this
function, and so does `python -m routescope.models.moe_lm.train --out DIR`. `smoke=True` uses a tiny slice
of the corpus and a small vocabulary, so that a few steps finish in seconds (CI). `save_every=N`
(`--save-every N`) also saves the model every N steps into `checkpoints/step-N/` (config, weights,
tokenizer and evaluation set: a folder `load_model` opens), the series OLMoE's router saturation is
measured over (`routescope report --kind saturation`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from tqdm.auto import tqdm
from transformers import Qwen2MoeForCausalLM

from .config import AUX_LOSS_COEF, CONTEXT, moe_lm_config
from .corpus import DOMAINS, FULL, SMOKE, build_corpus
from .evalset import FILE_NAME as EVAL_FILE
from .evalset import build_eval_texts, write_eval_set
from .evaluate import (
    domain_losses,
    encode,
    expert_specialisation,
    summarise_specialisation,
    unigram_counts,
    unigram_cross_entropy,
)
from .tokenizer import EOS_ID, train_tokenizer

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINTS_DIR = "checkpoints"
"""Sub-folder of the output folder holding the intermediate checkpoints (`save_every`), `step-N` each."""
DEFAULT_STEPS = 1328
"""Steps of the shipped run (it was bounded by `max_seconds=1380`; see the model card)."""


def _lr_factor(progress: float, step: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay (by training progress) to a tenth."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _streams(tokenizer: Any, docs: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """Per domain, every training document's tokens followed by </s>, concatenated."""
    streams = {}
    for domain, texts in docs.items():
        ids: list[int] = []
        for tokens in encode(tokenizer, texts):
            ids.extend(tokens)
            ids.append(EOS_ID)
        streams[domain] = torch.tensor(ids, dtype=torch.long)
    return streams


def _batch(streams: dict[str, torch.Tensor], per_domain: int, generator: torch.Generator) -> torch.Tensor:
    rows = []
    for stream in streams.values():
        starts = torch.randint(0, len(stream) - CONTEXT, (per_domain,), generator=generator)
        rows.extend(stream[s : s + CONTEXT] for s in starts.tolist())
    return torch.stack(rows)


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def _eval_losses(model: torch.nn.Module, tokenizer: Any, records: list[dict[str, str]]) -> dict[str, float]:
    losses = domain_losses(model, tokenizer, [r["text"] for r in records], [r["domain"] for r in records])
    return {d: round(v["loss"], 4) for d, v in losses.items()}


def train(
    out_dir: Path,
    *,
    steps: int,
    seed: int = 0,
    smoke: bool = False,
    batch_per_domain: int = 4,
    lr: float = 2e-3,
    warmup: int = 100,
    weight_decay: float = 0.1,
    vocab_size: int = 3072,
    texts_per_domain: int = 20,
    threads: int = 2,
    max_seconds: float | None = None,
    eval_every: int = 0,
    progress: bool = True,
    save_every: int = 0,
) -> dict[str, Any]:
    """Train on CPU, save the model, tokenizer, evaluation set and metrics into out_dir; return the metrics.

    `max_seconds` bounds the wall time: the learning-rate schedule then follows whichever of steps and
    time runs out first, and the metrics record the steps actually done. `eval_every > 0` logs the
    per-domain validation loss every that many steps (kept in the metrics as `history`). `save_every > 0`
    saves the model every that many steps into `checkpoints/step-N/` (listed in the metrics as
    `checkpoints`).
    """
    if save_every < 0:
        raise ValueError(f"save_every must be 0 (off) or a number of steps, not {save_every}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(Path(out_dir), steps, seed, smoke, batch_per_domain, lr, warmup, weight_decay,
                      vocab_size, texts_per_domain, threads, max_seconds, eval_every, progress,
                      save_every)  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    out_dir: Path,
    steps: int,
    seed: int,
    smoke: bool,
    batch_per_domain: int,
    lr: float,
    warmup: int,
    weight_decay: float,
    vocab_size: int,
    texts_per_domain: int,
    threads: int,
    max_seconds: float | None,
    eval_every: int,
    progress: bool,
    save_every: int = 0,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    sizes = SMOKE if smoke else FULL
    if smoke:
        batch_per_domain = 1
    corpus = build_corpus(seed, sizes)
    tokenizer = train_tokenizer(
        corpus.train, min(vocab_size, 512) if smoke else vocab_size, 40_000 if smoke else 400_000
    )
    records = build_eval_texts(tokenizer, corpus.heldout, 2 if smoke else texts_per_domain)
    streams = _streams(tokenizer, corpus.train)
    prepared = time.perf_counter() - started
    log.info("corpus, tokenizer and eval set ready in %.1f s: %s", prepared,
             {d: int(s.numel()) for d, s in streams.items()})  # fmt: skip

    vocab = 64 * math.ceil(len(tokenizer) / 64)
    torch.manual_seed(seed)
    model = Qwen2MoeForCausalLM(moe_lm_config(vocab))
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = _optimizer(model, lr, weight_decay)
    generator = torch.Generator().manual_seed(seed)

    history: list[dict[str, Any]] = []
    checkpoints: list[str] = []
    step = 0
    lm_loss = aux = float("nan")
    train_started = time.perf_counter()
    bar = tqdm(total=steps, desc="moe-lm", unit="step", disable=not progress, dynamic_ncols=True)
    while step < steps:
        elapsed = time.perf_counter() - train_started
        if max_seconds is not None and elapsed >= max_seconds:
            log.info("stopping at step %d: %.0f s time budget spent", step, max_seconds)
            break
        fraction = step / steps if max_seconds is None else max(step / steps, elapsed / max_seconds)
        for group in optimizer.param_groups:
            group["lr"] = lr * _lr_factor(fraction, step, warmup)
        batch = _batch(streams, batch_per_domain, generator)
        out = model(input_ids=batch, labels=batch, output_router_logits=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        aux = float(out.aux_loss.detach())
        lm_loss = float(out.loss.detach()) - AUX_LOSS_COEF * aux
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{lm_loss:.3f}", aux=f"{aux:.3f}")
        if eval_every and step % eval_every == 0:
            val = _eval_losses(model, tokenizer, records)
            history.append({"step": step, "train_loss": round(lm_loss, 4), "val_loss": val})
            log.info("step %d: train %.3f, val %s", step, lm_loss, val)
        if save_every and step % save_every == 0:
            folder = out_dir / CHECKPOINTS_DIR / f"step-{step}"
            _save_checkpoint(model, tokenizer, records, folder)
            checkpoints.append(folder.relative_to(out_dir).as_posix())
    bar.close()
    train_seconds = time.perf_counter() - train_started

    model.eval()
    texts = [r["text"] for r in records]
    domains = [r["domain"] for r in records]
    losses = domain_losses(model, tokenizer, texts, domains)
    all_counts = torch.zeros(vocab, dtype=torch.float64)
    per_domain: dict[str, Any] = {}
    for domain in DOMAINS:
        counts = unigram_counts(streams[domain], vocab)
        all_counts += counts
        per_domain[domain] = {"counts": counts}
    for domain in DOMAINS:
        tokens = encode(tokenizer, [t for t, d in zip(texts, domains, strict=True) if d == domain])
        entry = losses[domain]
        per_domain[domain] = {
            "loss": round(entry["loss"], 4),
            "perplexity": round(entry["perplexity"], 3),
            "unigram_domain": round(unigram_cross_entropy(per_domain[domain]["counts"], tokens), 4),
            "unigram_global": round(unigram_cross_entropy(all_counts, tokens), 4),
            "eval_texts": len(tokens),
            "eval_tokens": int(entry["tokens"]),
            "train_tokens": int(streams[domain].numel()),
            "train_chars": sum(map(len, corpus.train[domain])),
        }
    specialisation = expert_specialisation(model, tokenizer, texts, domains)

    _save_checkpoint(model, tokenizer, records, out_dir)

    metrics: dict[str, Any] = {
        "model": "moe-lm",
        "architecture": "Qwen2MoeForCausalLM",
        "parameters": n_params,
        "vocab_size": vocab,
        "smoke": smoke,
        "seed": seed,
        "steps": step,
        "steps_planned": steps,
        "batch": {
            "per_domain": batch_per_domain,
            "sequences": batch_per_domain * len(DOMAINS),
            "context": CONTEXT,
        },
        "tokens_seen": step * batch_per_domain * len(DOMAINS) * CONTEXT,
        "lr": lr,
        "final_train_loss": round(lm_loss, 4),
        "final_aux_loss": round(aux, 4),
        "seconds": {
            "prepare": round(prepared, 1),
            "train": round(train_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "threads": threads,
        "domains": per_domain,
        "quality_bar": all(v["loss"] < v["unigram_domain"] for v in per_domain.values()),
        "specialisation": specialisation,
        "specialisation_mean_max_lift": summarise_specialisation(specialisation),
        "heldout_sources": corpus.sources,
        "history": history,
        "checkpoints": checkpoints,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    (out_dir / METRICS_FILE).write_text(
        json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    log.info("saved moe-lm to %s (%d steps, %.0f s)", out_dir, step, train_seconds)
    return metrics


def _save_checkpoint(
    model: Qwen2MoeForCausalLM, tokenizer: Any, records: list[dict[str, str]], folder: Path
) -> None:
    """A folder `load_model` opens: config, safetensors weights, tokenizer and the evaluation set."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.output_router_logits = False
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_eval_set(records, folder / EVAL_FILE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the bundled moe-lm on CPU.")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny corpus slice (CI)")
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--save-every", type=int, default=0, help="also save checkpoints/step-N/ every N steps (0: off)"
    )
    args = parser.parse_args(argv)
    if args.save_every < 0:
        parser.error(f"--save-every must be 0 (off) or a number of steps, not {args.save_every}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    train(args.out, steps=args.steps, seed=args.seed, smoke=args.smoke, max_seconds=args.max_seconds,
          eval_every=args.eval_every, threads=args.threads, save_every=args.save_every)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
