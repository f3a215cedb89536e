"""Runs with planted routing for the claim checks, written through the real store writer.

`write_run` writes any run of fixed-length samples from arrays: the experts chosen (and optionally the
full router probabilities) per layer, sample, step and position, the token ids and the sample labels.
`text_run` and `diffusion_run` wrap it in the shape of a recorded language-model run and of a recorded
DiT sampler run (`kind: diffusion`, conditional and unconditional samples tied by `pair`, a `patch_grid`,
several steps, one decision per patch per step per sample — as `record_diffusion` writes them).

The generators below plant one effect each (or its absence), so every claim can be checked once where it
must reproduce and once where it must not. Everything is drawn from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from routescope.store import Run, Store
from routescope.store.capabilities import derived_capabilities
from routescope.store.schema import ASSIGNMENTS, STEPS, TOKENS, decisions_schema, samples_schema
from routescope.store.writer import RunWriter
from tests.planted import planted_routers


def default_probs(experts: np.ndarray, n_experts: int) -> np.ndarray:
    """Router probabilities consistent with `experts` (`[..., k]`, rank order): 0.8 shared by the chosen
    experts in decreasing order, 0.2 spread over the rest."""
    k = experts.shape[-1]
    probs = np.full((*experts.shape[:-1], n_experts), 0.2 / max(n_experts - k, 1))
    share = 0.8 * np.arange(k, 0, -1) / np.arange(k, 0, -1).sum()
    np.put_along_axis(probs, experts, np.broadcast_to(share, experts.shape), axis=-1)
    return probs


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """The `k` experts of largest probability, in rank order (`[..., E]` → `[..., k]`)."""
    return np.argsort(-probs, axis=-1, kind="stable")[..., :k]


def write_run(
    store: Store,
    name: str,
    *,
    experts: np.ndarray,
    token_ids: np.ndarray,
    samples: pd.DataFrame,
    n_experts: int,
    probs: np.ndarray | None = None,
    record_probs: bool = False,
    grid: tuple[int, int] | None = None,
    manifest: Mapping | None = None,
    positionless: bool = False,
) -> Run:
    """Write a run: `experts[l, s, t, p, r]` is the rank-r expert of sample s at layer index l, step t and
    position p; `token_ids[s, p]`; `samples` has one row per sample (label columns only, as strings);
    `probs[l, s, t, p, e]` the router probabilities (default: `default_probs`), stored as the `probs`
    column only when `record_probs`. `grid` places positions on a patch grid in raster order.
    `positionless` writes timestep-gated routers (`positions: none`): one decision per sample and step
    (`experts` has one position) with a null `position`, and a run without the `positions` capability."""
    experts = np.asarray(experts, dtype=np.int64)
    n_layers, n_samples, n_steps, n_positions, k = experts.shape
    if probs is None:
        probs = default_probs(experts, n_experts)
    label_columns = list(samples.columns)
    routers = planted_routers(list(range(n_layers)), n_experts, k)
    if positionless:
        assert n_positions == 1, "a positionless router decides once per sample and step"
        routers = [{**router, "positions": "none"} for router in routers]
    schemas = {
        "samples": samples_schema(label_columns),
        "tokens": TOKENS,
        "assignments": ASSIGNMENTS,
        "decisions": decisions_schema(record_probs),
        "steps": STEPS,
    }
    head = {
        "model": {"spec": "planted"},
        "routers": routers,
        "labels": label_columns,
        "options": {"probs": record_probs},
        **(manifest or {}),
    }
    head["options"] = {**head["options"], "probs": record_probs}
    if positionless:
        head["capabilities"] = sorted(set(derived_capabilities(head["options"])) - {"positions"})
    index = np.indices((n_samples, n_steps, n_positions)).reshape(3, -1)  # sample, step, position
    with RunWriter(store, name, schemas=schemas, manifest=head, overwrite=True) as writer:
        for layer in range(n_layers):
            chosen = experts[layer].reshape(-1, k)
            p = probs[layer].reshape(-1, n_experts)
            picked = np.take_along_axis(p, chosen, axis=1)
            weights = picked / np.maximum(picked.sum(axis=1, keepdims=True), 1e-30)
            keys = {
                "sample": index[0],
                "position": index[2],
                "step": index[1],
                "router": layer,
                "layer": layer,
                "call": 0,
            }
            rows = pd.DataFrame(
                {column: np.repeat(value, k) if np.ndim(value) else value for column, value in keys.items()}
            )
            rows["rank"] = np.tile(np.arange(k), len(chosen))
            rows["expert"] = chosen.reshape(-1)
            rows["weight"] = weights.reshape(-1)
            rows["dropped"] = False
            writer.write(
                "assignments", _null_positions(pa.Table.from_pandas(rows, preserve_index=False), positionless)
            )
            ordered = np.sort(p, axis=1)[:, ::-1]
            decisions = pd.DataFrame(
                {
                    **keys,
                    "entropy": -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=1),
                    "margin": ordered[:, 0] - ordered[:, 1],
                    "max_prob": ordered[:, 0],
                }
            )
            table = _null_positions(pa.Table.from_pandas(decisions, preserve_index=False), positionless)
            if record_probs:
                table = table.append_column("probs", pa.array(list(p.astype(np.float32))))
            writer.write("decisions", table)
        sample_ids = np.repeat(np.arange(n_samples), n_positions)
        positions = np.tile(np.arange(n_positions), n_samples)
        tokens = {
            "sample": sample_ids,
            "position": positions,
            "token_id": np.asarray(token_ids).reshape(-1),
            "token": [str(t) for t in np.asarray(token_ids).reshape(-1)],
            "generated": np.zeros(len(sample_ids), bool),
            "stack": ["decoder"] * len(sample_ids),
        }
        if grid is None:
            tokens["row"] = pa.nulls(len(sample_ids), pa.int32())
            tokens["col"] = pa.nulls(len(sample_ids), pa.int32())
        else:
            tokens["row"], tokens["col"] = positions // grid[1], positions % grid[1]
            tokens["token"] = [f"{r},{c}" for r, c in zip(tokens["row"], tokens["col"], strict=True)]
        writer.write("tokens", pa.table(tokens))
        writer.write(
            "samples",
            pa.table(
                {
                    "sample": np.arange(n_samples),
                    "text": pa.nulls(n_samples, pa.string()) if grid else ["x"] * n_samples,
                    "n_tokens": np.full(n_samples, n_positions),
                    "n_generated": np.zeros(n_samples),
                    "generated": pa.nulls(n_samples, pa.string()),
                    **{c: samples[c].astype(str).tolist() for c in label_columns},
                }
            ),
        )
        sigma = np.geomspace(150.0, 0.01, n_steps) if grid else [None] * n_steps
        timestep = np.linspace(999.0, 0.0, n_steps) if grid else [None] * n_steps
        writer.write("steps", pa.table({"step": np.arange(n_steps), "timestep": timestep, "sigma": sigma}))
        path = writer.publish()
    return Run(path)


def _null_positions(table: pa.Table, positionless: bool) -> pa.Table:
    """The fact rows of a positionless router: `position` null."""
    if not positionless:
        return table
    index = table.schema.get_field_index("position")
    return table.set_column(index, "position", pa.nulls(len(table), pa.int32()))


# --- text runs ------------------------------------------------------------------------------------------


def text_run(
    store: Store,
    name: str,
    *,
    experts: np.ndarray,
    token_ids: np.ndarray,
    labels: Mapping[str, Sequence[str]] | None = None,
    n_experts: int = 8,
    probs: np.ndarray | None = None,
    record_probs: bool = False,
) -> Run:
    """A language-model run: `experts[l, s, p, r]` (one step), `token_ids[s, p]`, labels per sequence."""
    experts = np.asarray(experts)
    return write_run(
        store,
        name,
        experts=experts[:, :, None],
        token_ids=token_ids,
        samples=pd.DataFrame({c: list(v) for c, v in (labels or {}).items()}, index=range(experts.shape[1])),
        n_experts=n_experts,
        probs=None if probs is None else np.asarray(probs)[:, :, None],
        record_probs=record_probs,
        manifest={"options": {"max_new_tokens": 0}},
    )


def add_second(first: np.ndarray, n_experts: int, rng: np.random.Generator) -> np.ndarray:
    """Top-2 choices from top-1 ones: the second expert drawn uniformly among the other experts."""
    second = (first + rng.integers(1, n_experts, size=first.shape)) % n_experts
    return np.stack([first, second], axis=-1)


def draw(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of `[..., E]` probabilities."""
    cumulative = p.cumsum(axis=-1)
    u = rng.random((*p.shape[:-1], 1)) * cumulative[..., -1:]
    return np.minimum((u > cumulative).sum(axis=-1), p.shape[-1] - 1)


DOMAINS = ("code", "prose", "math", "chat")


def domain_run(
    store: Store,
    name: str,
    *,
    n_layers: int = 2,
    n_samples: int = 32,
    length: int = 24,
    n_experts: int = 8,
    strength: float = 0.5,
    clustering: float = 0.0,
    shuffles: int = 0,
    permute_domains: int | None = None,
    extra_labels: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
) -> Run:
    """Sequences of four domains; each domain prefers two experts: a token's expert mix is `strength` of
    its domain's pair, `clustering` of its own sequence's preferred experts (a Dirichlet(0.3) mix, so the
    tokens of one sequence are not independent), the rest uniform. `permute_domains` writes the domain
    labels permuted across sequences by `default_rng(permute_domains)` (the routing stays that of `seed`
    but cannot depend on the labels); `shuffles` > 0 adds label columns `shuffled_0 …` holding that many
    independent permutations of the true domains."""
    rng = np.random.default_rng(seed)
    domains = np.array([DOMAINS[i % len(DOMAINS)] for i in range(n_samples)])
    code = np.array([DOMAINS.index(d) for d in domains])
    domain_mix = np.zeros((len(DOMAINS), n_experts))
    for d in range(len(DOMAINS)):
        domain_mix[d, [(2 * d) % n_experts, (2 * d + 1) % n_experts]] = 0.5
    sequence_mix = rng.dirichlet(np.full(n_experts, 0.3), size=n_samples)
    mix = (
        strength * domain_mix[code]
        + clustering * sequence_mix
        + (1 - strength - clustering) * np.full((n_samples, n_experts), 1 / n_experts)
    )
    p = np.broadcast_to(mix[None, :, None, :], (n_layers, n_samples, length, n_experts))
    experts = add_second(draw(p, rng), n_experts, rng)
    if permute_domains is not None:
        domains = np.random.default_rng(permute_domains).permutation(domains)
    labels: dict[str, Sequence[str]] = {"domain": list(domains)}
    for i in range(shuffles):
        labels[f"shuffled_{i}"] = list(np.random.default_rng(1000 + i).permutation(labels["domain"]))
    labels.update(extra_labels or {})
    token_ids = rng.integers(0, 50, size=(n_samples, length))
    return text_run(store, name, experts=experts, token_ids=token_ids, labels=labels, n_experts=n_experts)


def vocabulary_run(
    store: Store,
    name: str,
    *,
    token_driven: bool,
    n_layers: int = 2,
    n_samples: int = 32,
    length: int = 24,
    vocabulary: int = 12,
    n_experts: int = 8,
    seed: int = 0,
) -> Run:
    """Token ids uniform over `vocabulary`. `token_driven`: the top-1 expert is a fixed function of the
    token id (per layer) 70 % of the time, else drawn from the layer's load; otherwise a token-blind router
    draws every top-1 expert from the layer's own uneven load."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, vocabulary, size=(n_samples, length))
    load = rng.dirichlet(np.full(n_experts, 2.0), size=n_layers)  # uneven, per layer
    p = np.broadcast_to(load[:, None, None, :], (n_layers, n_samples, length, n_experts))
    first = draw(p, rng)
    if token_driven:
        table = np.stack([rng.permutation(np.arange(vocabulary) % n_experts) for _ in range(n_layers)])
        driven = table[:, token_ids]
        first = np.where(rng.random(first.shape) < 0.7, driven, first)
    experts = add_second(first, n_experts, rng)
    return text_run(store, name, experts=experts, token_ids=token_ids, n_experts=n_experts)


def repeat_run(
    store: Store,
    name: str,
    *,
    sticky: bool,
    n_layers: int = 2,
    n_samples: int = 32,
    length: int = 32,
    n_experts: int = 8,
    seed: int = 0,
) -> Run:
    """`sticky`: top-1 experts follow a Markov chain that keeps the previous expert with probability 0.6
    (else a uniform draw) — runs of the same expert along a sequence. Otherwise experts are i.i.d. within a
    sequence from that sequence's own mix (a Dirichlet(0.3): every sequence prefers different experts), so
    repeats are frequent but carry no order."""
    rng = np.random.default_rng(seed)
    if sticky:
        first = np.empty((n_layers, n_samples, length), dtype=np.int64)
        first[..., 0] = rng.integers(0, n_experts, size=(n_layers, n_samples))
        for t in range(1, length):
            keep = rng.random((n_layers, n_samples)) < 0.6
            first[..., t] = np.where(
                keep, first[..., t - 1], rng.integers(0, n_experts, (n_layers, n_samples))
            )
    else:
        mix = rng.dirichlet(np.full(n_experts, 0.3), size=(n_layers, n_samples))
        first = draw(np.broadcast_to(mix[:, :, None, :], (n_layers, n_samples, length, n_experts)), rng)
    token_ids = rng.integers(0, 50, size=(n_samples, length))
    experts = add_second(first, n_experts, rng)
    return text_run(store, name, experts=experts, token_ids=token_ids, n_experts=n_experts)


def uncertain_run(
    store: Store,
    name: str,
    *,
    uncertain_tokens: int = 2,
    by_token: bool = True,
    n_layers: int = 2,
    n_samples: int = 32,
    length: int = 24,
    vocabulary: int = 10,
    n_experts: int = 8,
    seed: int = 0,
) -> Run:
    """Token ids uniform over `vocabulary`. Uncertain decisions get near-uniform router probabilities
    (normalised entropy ≈ 0.99), the others peaked (≈ 0.35). `by_token`: the decisions on token ids
    `0 … uncertain_tokens − 1` are the uncertain ones; otherwise the same expected share of decisions is
    flagged uncertain at random, whatever the token."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, vocabulary, size=(n_samples, length))
    shape = (n_layers, n_samples, length)
    if by_token:
        uncertain = np.broadcast_to(token_ids < uncertain_tokens, shape)
    else:
        uncertain = rng.random(shape) < uncertain_tokens / vocabulary
    flat = np.exp(rng.normal(0.0, 0.05, (*shape, n_experts)))
    peak = rng.integers(0, n_experts, size=shape)
    peaked = np.full((*shape, n_experts), 0.15 / (n_experts - 1))
    np.put_along_axis(peaked, peak[..., None], 0.85, axis=-1)
    peaked *= np.exp(rng.normal(0.0, 0.01, peaked.shape))
    probs = np.where(uncertain[..., None], flat, peaked)
    probs /= probs.sum(axis=-1, keepdims=True)
    return text_run(
        store,
        name,
        experts=top_k(probs, 2),
        token_ids=token_ids,
        n_experts=n_experts,
        probs=probs,
        record_probs=True,
    )


def balance_run(
    store: Store,
    name: str,
    *,
    dead: int = 0,
    skew: float = 0.0,
    record_probs: bool = False,
    n_layers: int = 2,
    n_samples: int = 32,
    length: int = 32,
    n_experts: int = 16,
    seed: int = 0,
) -> Run:
    """Top-1 routing (as in Switch) over `n_experts`. Loads are even, except: the last `dead` experts are
    never chosen; `skew` > 0 gives the first half of the experts (1 + skew)× and the second half (1 − skew)×
    the even load, and puts half of every decision's probability mass on the heavy half (the chosen expert
    keeps the other half), which drives the auxiliary loss E · Σ f_e P_e above 1 while max/mean stays
    1 + skew."""
    rng = np.random.default_rng(seed)
    live = n_experts - dead
    load = np.zeros(n_experts)
    load[:live] = 1.0
    half = n_experts // 2
    load[:half] *= 1 + skew
    load[half:] *= 1 - skew
    load /= load.sum()
    shape = (n_layers, n_samples, length)
    first = draw(np.broadcast_to(load, (*shape, n_experts)), rng)
    if skew:
        probs = np.zeros((*shape, n_experts))
        probs[..., :half] = 0.5 / half
        np.put_along_axis(probs, first[..., None], np.take_along_axis(probs, first[..., None], -1) + 0.5, -1)
    else:
        probs = default_probs(first[..., None], n_experts)
    return text_run(
        store,
        name,
        experts=first[..., None],
        token_ids=rng.integers(0, 50, size=(n_samples, length)),
        n_experts=n_experts,
        probs=probs,
        record_probs=record_probs,
    )


# --- diffusion runs -------------------------------------------------------------------------------------


def diffusion_run(
    store: Store,
    name: str,
    *,
    experts: np.ndarray,
    classes: Sequence[int],
    grid: tuple[int, int],
    n_experts: int = 8,
    positionless: bool = False,
) -> Run:
    """A DiT sampler run: `experts[l, s, t, p, r]` for `2 n` samples — `0 … n−1` conditional (class
    `classes[i]`, `pair` = i), `n … 2n−1` the unconditional branch of the same images (same class and
    pair labels, `branch=uncond`), as `record_diffusion` writes them."""
    n = len(classes)
    experts = np.asarray(experts)
    assert experts.shape[1] == 2 * n
    assert experts.shape[3] == (1 if positionless else grid[0] * grid[1])
    samples = pd.DataFrame(
        {
            "class": [str(c) for c in classes] * 2,
            "branch": ["cond"] * n + ["uncond"] * n,
            "pair": [str(i) for i in range(n)] * 2,
        }
    )
    n_steps = experts.shape[2]
    return write_run(
        store,
        name,
        experts=experts,
        token_ids=np.tile(np.arange(experts.shape[3]), (2 * n, 1)),
        samples=samples,
        n_experts=n_experts,
        grid=(1, 1) if positionless else grid,
        positionless=positionless,
        manifest={
            "kind": "diffusion",
            "seed": 0,
            "patch_grid": list(grid),
            "options": {"steps": n_steps, "cfg_scale": 4.0, "classes": sorted(set(classes))},
        },
    )


def _bump(centre: np.ndarray, n_experts: int, width: float) -> np.ndarray:
    """`[..., E]` Gaussian bumps over the expert index around `centre` (circular), normalised."""
    e = np.arange(n_experts)
    gap = np.abs(e - centre[..., None])
    gap = np.minimum(gap, n_experts - gap)
    p = np.exp(-(gap**2) / (2 * width**2))
    return p / p.sum(axis=-1, keepdims=True)


def planted_diffusion(
    store: Store,
    name: str,
    *,
    position: Callable[[int, int], float] | float = 0.0,
    step: float = 0.0,
    klass: float = 0.0,
    n_layers: int = 3,
    n_classes: int = 4,
    per_class: int = 4,
    n_steps: int = 6,
    grid: tuple[int, int] = (4, 4),
    n_experts: int = 8,
    seed: int = 0,
) -> Run:
    """A diffusion run whose top-1 expert mixes planted sources: with weight `position(layer, step)` (a
    number, or a function of the layer index and step) the patch's own expert (patch p → expert p mod E);
    with weight `step` a bump that drifts smoothly over the experts as the step advances (step t centred
    on expert t·(E/2)/(S−1)); with weight `klass` the class's expert (2·class mod E); the rest uniform.
    Both CFG branches of an image follow the same rule. The second expert is uniform among the others."""
    rng = np.random.default_rng(seed)
    classes = [c for c in range(n_classes) for _ in range(per_class)]
    n_samples = 2 * len(classes)
    n_positions = grid[0] * grid[1]
    weight = position if callable(position) else (lambda layer, t, w=position: w)
    pos_mix = np.eye(n_experts)[np.arange(n_positions) % n_experts]  # [P, E]
    step_mix = _bump(np.arange(n_steps) * (n_experts / 2) / max(n_steps - 1, 1), n_experts, 1.0)  # [S, E]
    class_mix = np.eye(n_experts)[(2 * np.asarray(classes * 2)) % n_experts]  # [samples, E]
    uniform = np.full(n_experts, 1 / n_experts)
    p = np.zeros((n_layers, n_samples, n_steps, n_positions, n_experts))
    for layer in range(n_layers):
        for t in range(n_steps):
            w = weight(layer, t)
            p[layer, :, t] = (
                w * pos_mix[None]
                + step * step_mix[t][None, None]
                + klass * class_mix[:, None]
                + (1 - w - step - klass) * uniform
            )
    experts = add_second(draw(p, rng), n_experts, rng)
    return diffusion_run(store, name, experts=experts, classes=classes, grid=grid, n_experts=n_experts)


def planted_gated(
    store: Store,
    name: str,
    *,
    paths: str,
    n_layers: int = 3,
    n_images: int = 8,
    n_steps: int = 12,
    n_experts: int = 8,
    flip: float = 0.1,
    seed: int = 0,
) -> Run:
    """A Switch-DiT-like run: timestep gates, one decision (top-2) per image, step and block, no position.

    `paths="sliding"`: at step t every block picks the two experts of a window that slides from experts
    {0, 1} at the first step to {E−2, E−1} at the last (each pick replaced by a random other expert with
    probability `flip`): adjacent steps share experts, distant steps do not. `paths="step-blind"`: each
    image draws its experts at random at every step (the same loads, no link to the step). `paths="fixed"`:
    each image and block keeps one pair of experts at every step. Both CFG branches share the image's draw.
    """
    rng = np.random.default_rng(seed)
    experts = np.zeros((n_layers, 2 * n_images, n_steps, 1, 2), dtype=np.int64)
    starts = np.round(np.arange(n_steps) * (n_experts - 2) / max(n_steps - 1, 1)).astype(int)
    for layer in range(n_layers):
        for image in range(n_images):
            fixed = rng.choice(n_experts, size=2, replace=False)
            for t in range(n_steps):
                if paths == "sliding":
                    pick = [starts[t], starts[t] + 1]
                    for r in range(2):
                        if rng.random() < flip:
                            pick[r] = int(rng.choice([e for e in range(n_experts) if e not in pick]))
                elif paths == "step-blind":
                    pick = list(rng.choice(n_experts, size=2, replace=False))
                elif paths == "fixed":
                    pick = list(fixed)
                else:
                    raise ValueError(paths)
                experts[layer, image, t, 0] = experts[layer, n_images + image, t, 0] = pick
    classes = [i % 4 for i in range(n_images)]
    return diffusion_run(
        store, name, experts=experts, classes=classes, grid=(4, 4), n_experts=n_experts, positionless=True
    )
