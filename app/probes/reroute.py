"""Counterfactual routes: would another top-k set of experts, at equal compute, have served a token better?

For a seeded sample of routing decisions (token position × MoE layer) the probe draws K alternative top-k
sets from the router's own distribution (Gumbel-top-k, `gumbel.py`: Plackett–Luce sampling without
replacement, seeded per decision), reruns the input with *only that decision* replaced
(`routescope.hooks.reroute`: the set's weights are the ones the router's own rule gives it, read from
the router's output) and measures the loss change. Motivation: arXiv 2605.07260 samples equal-compute
alternative routes per token and finds better ones mostly on fragile, low-confidence tokens.

Loss change (nats), against the unedited input run in the *same batch* (row 0), so that both sides see
the same batch; an alternative whose set is the router's own is the unedited model and is not rerun
(its change is 0 by definition), and repeated draws of one set are run once:

- `delta_next` (the headline): the change of the next-token NLL at the decision's own position —
  −log p(token at p+1 | tokens ≤ p); the token whose route was replaced is the one predicting it;
- `delta_rest`: the change of the summed NLL from that position to the end of its sequence (chunk), which
  adds what the replaced hidden state does to later tokens through attention.

Batched expert matmuls round differently with the rows around them, so deltas carry noise of order
1e-6 nats (measured on moe-lm: 5e-7); `analysis.reroute` counts a route as better only below −1e-5.
Only positions that have a next token are sampled. Alternatives are batched: one sequence at a time, its
unedited copy in row 0 and one alternative per further row. The results go into the run's probe entry
(`metrics.reroute`, one entry per decision × alternative) and the run itself records the unedited model,
so its decisions table holds each decision's entropy and margin; `routescope.analysis.reroute` reads both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from routescope.hooks.driver import check_new_run
from routescope.hooks.loaded import LoadedModel
from routescope.hooks.recorder import ModelCall
from routescope.hooks.reroute import RouteSwap, check_swappable, swap_routes
from routescope.hooks.units import Unit, make_units
from routescope.store.errors import InputError
from routescope.store.reader import Run, Store

from .common import (
    RecordOptions,
    check_inputs,
    choose_routers,
    chunk_size,
    describe,
    record_probe,
    text_token_ids,
)
from .gumbel import gumbel_top_k

DEFAULT_ROWS = 32
"""Sequences per batched forward (the unedited copy plus up to 31 alternatives)."""


def check_counts(alternatives: int, tokens: int) -> None:
    """K and N must be whole numbers ≥ 1."""
    if int(alternatives) <= 0:
        raise InputError(f"alternatives must be ≥ 1, not {alternatives}", field="alternatives")
    if int(tokens) <= 0:
        raise InputError(f"tokens must be ≥ 1, not {tokens}", field="tokens")


def sample_decisions(units: Sequence[Unit], n_routers: int, n: int, seed: int) -> list[tuple[int, int, int]]:
    """`n` distinct (unit, local position, router index) triples, uniform over positions with a next token,
    sorted; seeded (`numpy.random.default_rng(seed)`)."""
    sizes = np.array([max(len(u.ids) - 1, 0) * n_routers for u in units], dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        raise InputError("no token has a next token to predict; give longer inputs", field="inputs")
    flat = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    starts = np.cumsum(sizes) - sizes
    unit = np.searchsorted(starts, flat, side="right") - 1
    rest = flat - starts[unit]
    return [(int(u), int(r) // n_routers, int(r) % n_routers) for u, r in zip(unit, rest, strict=True)]


def _ordered(alternative: Sequence[int], original: Sequence[int], scores: np.ndarray) -> list[int]:
    """The router's own order for its own set (so the swap reproduces it exactly), else by score."""
    if set(alternative) == set(original):
        return [int(e) for e in original]
    return sorted((int(e) for e in alternative), key=lambda e: (-float(scores[e]), e))


def _nll(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """[R, n-1] float64 next-token NLL of every row of `ids` ([R, n])."""
    args, kwargs = ModelCall(model)(ids, torch.ones_like(ids))
    output = model(*args, **kwargs)
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor) or logits.shape[:2] != ids.shape:
        raise InputError("the model returns no next-token logits; reroute needs a causal language model")
    return F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none").double()


def _unit_rows(
    swap: RouteSwap,
    model: torch.nn.Module,
    unit: Unit,
    index: int,
    decisions: list[tuple[int, int]],
    routers: Sequence[Mapping[str, Any]],
    alternatives: int,
    seed: int,
    batch_rows: int,
) -> list[dict[str, Any]]:
    """Every (decision, alternative) row of one unit: draw the alternatives, run them batched."""
    ids = torch.tensor([unit.ids], dtype=torch.long)
    swap.set({})
    own_nll = _nll(model, ids)[0]  # also the routers' own scores and sets at every position (`swap.seen`)
    jobs: list[tuple[int, int, int, list[int], list[int]]] = []  # position, router, alternative, set, own
    for position, r in decisions:
        router = routers[r]
        scores, chosen = (t[position].numpy() for t in swap.seen(router["path"]))
        own = [int(e) for e in chosen]
        with np.errstate(divide="ignore"):  # an expert of probability 0 is never drawn (log 0 = −inf)
            log_probs = np.log(scores.astype(np.float64) / float(scores.sum()))
        rng = np.random.default_rng([seed, index, position, r])
        for a, drawn in enumerate(gumbel_top_k(log_probs, len(own), alternatives, rng)):
            jobs.append((position, r, a, _ordered(drawn.tolist(), own, scores), own))
    n = ids.shape[1]
    unique = sorted({(p, r, tuple(e)) for p, r, _a, e, own in jobs if set(e) != set(own)})
    deltas: dict[tuple[int, int, tuple[int, ...]], tuple[float, float]] = {}
    per_batch = max(batch_rows - 1, 1)
    for start in range(0, len(unique), per_batch):
        group = unique[start : start + per_batch]
        routes: dict[str, dict[int, list[int]]] = {}
        for row, (position, r, experts) in enumerate(group, start=1):
            routes.setdefault(routers[r]["path"], {})[row * n + position] = list(experts)
        swap.set(routes)
        nll = _nll(model, ids.expand(len(group) + 1, n).contiguous())
        delta = nll[1:] - nll[0]
        for row, key in enumerate(group):
            deltas[key] = (float(delta[row, key[0]]), float(delta[row, key[0] :].sum()))
    rows: list[dict[str, Any]] = []
    for position, r, a, experts, own in jobs:
        same = set(experts) == set(own)
        delta_next, delta_rest = (0.0, 0.0) if same else deltas[(position, r, tuple(experts))]
        rows.append(
            {
                "sample": unit.sample,
                "position": unit.offset + position,
                "router": int(routers[r]["id"]),
                "layer": int(routers[r]["layer"]),
                "alternative": a,
                "experts": experts,
                "original": own,
                "same": same,
                "base_next": float(own_nll[position]),
                "delta_next": delta_next,
                "delta_rest": delta_rest,
            }
        )
    return rows


@torch.no_grad()
def measure_reroutes(
    model: LoadedModel,
    inputs: Sequence[str | Sequence[int]],
    routers: Sequence[Mapping[str, Any]],
    *,
    alternatives: int,
    tokens: int,
    seed: int = 0,
    chunk: int | None = None,
    batch_rows: int = DEFAULT_ROWS,
) -> dict[str, Any]:
    """The probe's measurement without recording: columns (lists) of one row per decision × alternative
    (`sample, position, router, layer, alternative, experts, original, same, base_next, delta_next,
    delta_rest`) and each router's weight rule (`rules`)."""
    check_counts(alternatives, tokens)
    torch_model = model.model.eval()
    units = make_units(text_token_ids(model, inputs), chunk_size(model, chunk))
    chosen = sample_decisions(units, len(routers), int(tokens), seed)
    by_unit: dict[int, list[tuple[int, int]]] = {}
    for u, position, r in chosen:
        by_unit.setdefault(u, []).append((position, r))
    rows: list[dict[str, Any]] = []
    with swap_routes(torch_model, routers) as swap:
        for u, decisions in by_unit.items():
            rows += _unit_rows(
                swap, torch_model, units[u], u, decisions, routers, alternatives, seed, batch_rows
            )
        rules = swap.rules
    columns = {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}
    return {**columns, "rules": {path: rule for path, rule in rules.items() if rule is not None}}


def probe_reroute(
    model: LoadedModel,
    inputs: Sequence[str | Sequence[int]],
    *,
    store: Store | str,
    name: str,
    alternatives: int = 8,
    tokens: int = 500,
    seed: int = 0,
    layers: Sequence[int] | None = None,
    batch_rows: int = DEFAULT_ROWS,
    options: RecordOptions | None = None,
) -> Run:
    """Measure `alternatives` Gumbel-top-k routes for `tokens` sampled decisions (routers of `layers`;
    all MoE layers by default), then record the unedited model on `inputs` as run `name` with the
    results in its probe entry (`metrics.reroute`). Text models only; K ≤ 0 or N ≤ 0 is a one-line error
    before anything runs. Tables: `routescope.analysis.reroute`."""
    check_counts(alternatives, tokens)
    check_inputs(model, inputs)
    options = options or RecordOptions()
    check_new_run(store, name, options.overwrite)
    all_routers = describe(model, inputs)
    routers = choose_routers(all_routers, layers)
    check_swappable(model.model, routers)
    measured = measure_reroutes(
        model,
        inputs,
        routers,
        alternatives=alternatives,
        tokens=tokens,
        seed=seed,
        chunk=options.chunk_size,
        batch_rows=batch_rows,
    )
    params = {
        "alternatives": int(alternatives),
        "tokens": int(tokens),
        "seed": int(seed),
        "layers": None if layers is None else list(layers),
        "loss": "delta_next: next-token NLL at the decision's position; delta_rest: summed NLL from it on",
    }
    rules = measured.pop("rules")
    return record_probe(
        model,
        inputs,
        store=store,
        name=name,
        entry={"probe": "reroute", "params": {**params, "weights": rules}, "base": None},
        metrics=lambda: {"reroute": measured},
        record_options=options.for_inputs(inputs),
    )
