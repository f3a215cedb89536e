"""Router logits (issue 14 item 8): the raw router scores stored next to `probs`, and MC-SMoE's analyses on
them — logit-cosine similarity and grouping around the most used ("dominant") experts.

1. On tiny random models of a softmax family (Mixtral, OLMoE) and a sigmoid family (DeepSeek-V3), the
   recorded `logits` equal the router module's own output and `hidden × gate weightᵀ` computed from the
   gate's input by a forward hook; softmax / normalised sigmoid of them equals the recorded `probs`.
2. In every tiny family the stored logits equal `output_router_logits`; every decode convention carries
   its raw scores; old runs without the column still read.
3. On planted runs: MC-SMoE groups (cores = top-G usage over all k slots, every other expert to its most
   similar core, documented tie rules) and the logit-cosine similarity against numpy from the definition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

import routescope
from routescope.analysis import expert_similarity, merge_groups
from routescope.analysis.similarity import mc_smoe_groups
from routescope.hooks.normalise import DecodeRule, normalise
from routescope.models.tokenizers import byte_tokenizer
from routescope.store import InputError, Run, Store
from routescope.store.schema import decisions_schema
from routescope.store.writer import RunWriter
from tests.planted import planted_run
from tests.tiny_families import FAMILIES, TEXTS, record_family, router_paths, tiny_model


def _gate_hook(seen: dict[str, Any], path: str, family: str) -> Callable[..., None]:
    """Keep the router's own output[0] and, independently, its input times its weight (the logits)."""

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        hidden = args[0].reshape(-1, args[0].shape[-1])
        if family == "deepseek_v3":  # DeepSeek-V3's gate scores in float32
            direct = F.linear(hidden.float(), module.weight.float())
        else:
            direct = F.linear(hidden, module.weight)
        seen[path] = (output[0].detach().reshape(-1, direct.shape[-1]).float(), direct.detach().float())

    return hook


@pytest.mark.parametrize("family", ["mixtral", "olmoe", "deepseek_v3"])
def test_recorded_logits_equal_router_output(tmp_path: Any, family: str) -> None:
    store = Store(tmp_path)
    model = tiny_model(family)
    run = record_family(model, store, family, probs=True)
    assert run.manifest["options"]["probs"] is True
    assert run.manifest["options"]["logits"] is True
    decisions = run.decisions()
    reference = tiny_model(family)  # same seed, same weights; each text alone (no padding)
    paths = router_paths(family)
    for sample, text in enumerate(TEXTS):
        seen: dict[str, Any] = {}
        handles = [
            reference.get_submodule(p).register_forward_hook(_gate_hook(seen, p, family)) for p in paths
        ]
        try:
            with torch.no_grad():
                reference(input_ids=torch.tensor([byte_tokenizer()(text)["input_ids"]]))
        finally:
            for handle in handles:
                handle.remove()
        own = torch.cat([seen[p][0] for p in paths]).numpy()
        direct = torch.cat([seen[p][1] for p in paths]).numpy()
        np.testing.assert_allclose(own, direct, rtol=0, atol=1e-6)  # the gate's output is hidden × Wᵀ
        got = decisions[decisions["sample"] == sample].sort_values(["router", "position"])
        logits = np.stack(got["logits"].to_list())
        probs = np.stack(got["probs"].to_list())
        assert logits.dtype == np.float32
        assert logits.shape == direct.shape == (len(paths) * len(byte_tokenizer()(text)["input_ids"]), 8)
        np.testing.assert_allclose(logits, direct, rtol=0, atol=1e-5)
        scores = torch.from_numpy(logits)
        if family == "deepseek_v3":
            sig = scores.sigmoid()
            expected = sig / sig.sum(-1, keepdim=True)
        else:
            expected = scores.softmax(-1)
        np.testing.assert_allclose(probs, expected.numpy(), rtol=0, atol=1e-6)


def _first_output(own: dict[str, torch.Tensor], path: str) -> Callable[..., None]:
    """A forward hook keeping a router's first output (its logits), leaving the output as it is."""

    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
        own[path] = (output[0] if isinstance(output, tuple) else output).detach().clone()

    return hook


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_output_router_logits_in_every_family(tmp_path: Any, family: str) -> None:
    """Every tiny family: the stored logits are `output_router_logits` (Switch: encoder then decoder)."""
    model = tiny_model(family)
    run = routescope.record(
        model,
        TEXTS,
        tokenizer=byte_tokenizer(),
        store=Store(tmp_path),
        name=family,
        probs=True,
        batch_size=1 if family == "nllb-moe" else 2,  # NLLB-MoE: capacity, so outputs, depend on the batch
        progress=False,
        engine="hooks",
    )
    decisions = run.decisions()
    for sample, text in enumerate(TEXTS):
        inputs = {"input_ids": torch.tensor([byte_tokenizer()(text)["input_ids"]])}
        if model.config.is_encoder_decoder:
            inputs["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id]])
        own: dict[str, torch.Tensor] = {}
        handles = [
            model.get_submodule(path).register_forward_hook(_first_output(own, path))
            for path in router_paths(family)
        ]
        try:
            with torch.no_grad():
                out = model(**inputs, output_router_logits=True)
        finally:
            for handle in handles:
                handle.remove()
        raw = (
            (*out.encoder_router_logits, *out.decoder_router_logits)
            if model.config.is_encoder_decoder
            else getattr(out, "router_logits", None)
        )
        if raw is None:  # Nemotron-3.5-Transcribe's output drops its language model's: the routers' own
            raw = [own[path] for path in router_paths(family)]
        expected = torch.cat([t.reshape(-1, t.shape[-1]).float() for t in raw]).numpy()
        got = decisions[decisions["sample"] == sample].sort_values(["router", "position"])
        np.testing.assert_allclose(np.stack(got["logits"].to_list()), expected, rtol=0, atol=1e-5)


def test_no_logits_without_probs(store: Store, tiny_lm: Any) -> None:
    run = routescope.record(tiny_lm, ["abc def"], store=store, name="plain", progress=False)
    assert run.manifest["options"]["logits"] is False
    assert "logits" not in run.decisions().columns
    with pytest.raises(InputError, match="without probabilities"):
        expert_similarity(run, 0)


@pytest.mark.parametrize(
    "convention", ["triple", "scores_logits", "logits", "capacity_onehot", "sorted_slots", "top2_combine"]
)
def test_every_convention_keeps_its_raw_scores(convention: str) -> None:
    torch.manual_seed(0)
    raw = torch.randn(2, 3, 4)  # [batch, seq, E]
    flat = raw.reshape(-1, 4)
    top = flat.softmax(-1).topk(2, dim=-1)
    outputs = {
        "triple": (raw, top.values, top.indices),
        "scores_logits": (torch.where(flat >= flat.topk(2, -1).values[:, -1:], flat.sigmoid(), 0.0), flat),
        "logits": raw,
        "capacity_onehot": (
            F.one_hot(flat.argmax(-1), 4),
            flat.softmax(-1).max(-1, keepdim=True).values,
            raw,
        ),
        "sorted_slots": _sorted_slots(flat, top.indices, top.values),
        "top2_combine": (
            F.one_hot(flat.argmax(-1), 4),
            torch.zeros_like(flat).scatter(1, top.indices, top.values / top.values.sum(-1, keepdim=True)),
            flat,
        ),
    }
    scoring = "sigmoid" if convention == "scores_logits" else "softmax"
    decoded = normalise(outputs[convention], DecodeRule(convention, scoring=scoring, top_k=2))  # type: ignore[arg-type]
    assert decoded.logits is not None
    assert torch.equal(decoded.logits, flat)
    expected = (
        flat.sigmoid() / flat.sigmoid().sum(-1, keepdim=True) if scoring == "sigmoid" else flat.softmax(-1)
    )
    torch.testing.assert_close(decoded.probs, expected)


def _sorted_slots(logits: torch.Tensor, indices: torch.Tensor, gates: torch.Tensor) -> tuple[Any, ...]:
    """JetMoE's router output for a given top-k choice: slots sorted by expert."""
    order = indices.flatten().sort(0).indices
    counts = torch.zeros(logits.shape[-1], dtype=torch.long).scatter_add(
        0, indices.flatten(), torch.ones(indices.numel(), dtype=torch.long)
    )
    return order, order // indices.shape[1], gates.flatten()[order], counts.tolist(), logits


def test_new_conventions_recover_the_choice() -> None:
    """JetMoE's sorted slots and NLLB-MoE's combine weights decode to the (token, rank) choice they encode;
    an NLLB choice with a zero combine weight (over capacity) is dropped with weight 0."""
    torch.manual_seed(1)
    flat = torch.randn(6, 4)
    top = flat.softmax(-1).topk(2, dim=-1)
    decoded = normalise(_sorted_slots(flat, top.indices, top.values), DecodeRule("sorted_slots"))
    assert torch.equal(decoded.expert, top.indices)
    torch.testing.assert_close(decoded.weight, top.values)
    combine = torch.zeros_like(flat).scatter(1, top.indices, top.values)
    combine[0, top.indices[0, 1]] = 0.0  # token 0's second choice over capacity
    mask = F.one_hot(flat.argmax(-1), 4)
    mask[3] = 0  # token 3's first choice over capacity
    combine[3, top.indices[3, 0]] = 0.0
    decoded = normalise((mask, combine, flat), DecodeRule("top2_combine"))
    assert torch.equal(decoded.expert, top.indices)
    assert decoded.dropped.nonzero().tolist() == [[0, 1], [3, 0]]
    assert (decoded.weight[decoded.dropped] == 0).all()
    torch.testing.assert_close(decoded.weight[~decoded.dropped], top.values[~decoded.dropped])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logit_run(store: Store, name: str, experts: list[list[int]], logits: np.ndarray) -> Run:
    """A planted one-layer run (`experts[sample]` chosen, rank order) that stores `logits` [samples, E] and
    `probs` = softmax(logits), as a recording with `probs=True` does."""
    base = planted_run(
        store, f"{name}.base", experts={0: experts}, n_experts=logits.shape[1], probs={0: _softmax(logits)}
    )
    tables = {t: base.read_table(t) for t in ("samples", "tokens", "assignments", "decisions", "steps")}
    decisions = tables["decisions"]
    tables["decisions"] = decisions.append_column(
        "logits", pa.array(list(logits.astype(np.float32)), pa.list_(pa.float32()))
    )
    schemas = {t: table.schema for t, table in tables.items()}
    schemas["decisions"] = decisions_schema(True, with_logits=True)
    manifest = {
        "model": base.manifest["model"],
        "routers": base.manifest["routers"],
        "labels": base.manifest["labels"],
        "options": {"probs": True, "logits": True},
    }
    with RunWriter(store, name, schemas=schemas, manifest=manifest, overwrite=True) as writer:
        for table, rows in tables.items():
            writer.write(table, rows)
        path = writer.publish()
    return Run(path)


# Top-2 choices of 10 decisions over 6 experts. Counted over both slots: e0 6, e1 5, e2 4, e3 3, e4 1, e5 1
# (of 20); counted on top-1 only the order would be e2 4, e3 3, e0 2, e4 1 — other cores.
PLANTED = [[2, 0]] * 4 + [[0, 1]] * 2 + [[3, 1]] * 3 + [[4, 5]]


def _planted_logits() -> np.ndarray:
    rng = np.random.default_rng(7)
    u, v = np.linalg.qr(rng.normal(size=(10, 2)))[0].T  # orthonormal columns: cos(u, v) = 0
    noise = rng.normal(size=(10, 3)) * 0.05
    return np.stack(
        [
            u,  # e0: core 0
            v,  # e1: core 1
            v + noise[:, 0],  # e2: like e1
            u + noise[:, 1],  # e3: like e0
            -u + 2 * v + noise[:, 2],  # e4: closer to e1 (cos ≈ 0.89) than e0 (cos ≈ -0.45)
            np.zeros(10),  # e5: cos 0 with every core → tied (0.5, 0.5) → the more used core, e0
        ],
        axis=1,
    )


def test_mc_smoe_groups_on_planted_run(store: Store) -> None:
    run = logit_run(store, "mc", PLANTED, _planted_logits())
    groups = merge_groups(run, 0, n_groups=2).set_index("expert")
    assert groups["usage"].tolist() == pytest.approx([6 / 20, 5 / 20, 4 / 20, 3 / 20, 1 / 20, 1 / 20])
    assert groups.index[groups["keep"]].tolist() == [0, 1]  # top-2 by usage over all k slots
    assert groups["group"].tolist() == [0, 1, 1, 0, 1, 0]  # group i = the i-th most used core
    three = merge_groups(run, 0, n_groups=3).set_index("expert")
    assert three.index[three["keep"]].tolist() == [0, 1, 2]
    assert three["group"].tolist() == [0, 1, 2, 0, 1, 0]  # e2 is a core now; e4 stays with e1 (v-like)
    same = merge_groups(run, 0, n_groups=6)
    assert same["keep"].all()
    assert sorted(same["group"]) == list(range(6))
    average = merge_groups(run, 0, n_groups=2, method="average")
    assert average.groupby("group")["keep"].sum().tolist() == [1, 1]
    with pytest.raises(InputError, match="unknown merge method"):
        merge_groups(run, 0, n_groups=2, method="single")


def test_mc_smoe_tie_rules() -> None:
    usage = np.array([0.2, 0.3, 0.3, 0.2])  # e1 and e2 tie: the lower id ranks first (group 0)
    similarity = np.full((4, 4), 0.5)  # e0 and e3 equally similar to both cores: the more used core, e1
    np.fill_diagonal(similarity, 1.0)
    assert mc_smoe_groups(usage, similarity, 2).tolist() == [0, 0, 1, 0]
    similarity[3, 2] = 0.9  # e3 now prefers e2
    assert mc_smoe_groups(usage, similarity, 2).tolist() == [0, 0, 1, 1]
    # with 3 groups e0 and e3 tie on usage (0.2): e0, the lower id, becomes the third core
    assert mc_smoe_groups(usage, similarity, 3).tolist() == [2, 0, 1, 1]


def test_router_similarity_is_cosine_of_logit_columns(store: Store) -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(12, 5)) * np.array([1.0, 2.0, 0.5, 1.0, 3.0]) + np.array([0, 1, -1, 0, 2])
    run = logit_run(store, "cos", [[int(e)] for e in logits.argmax(1)], logits)
    stored = logits.astype(np.float32).astype(np.float64)  # as stored (float32)
    expected = np.empty((5, 5))
    for a in range(5):
        for b in range(5):
            x, y = stored[:, a], stored[:, b]
            expected[a, b] = (x @ y / (np.sqrt(x @ x) * np.sqrt(y @ y)) + 1) / 2
    table = expert_similarity(run, 0)
    got = table.pivot(index="expert_a", columns="expert_b", values="similarity").to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # basis="probs" is the same map on the softmax columns: a different matrix
    p = _softmax(logits).astype(np.float32).astype(np.float64)
    norms = np.linalg.norm(p, axis=0)
    from_probs = expert_similarity(run, 0, basis="probs")
    got_probs = from_probs.pivot(index="expert_a", columns="expert_b", values="similarity").to_numpy()
    np.testing.assert_allclose(got_probs, (p.T @ p / np.outer(norms, norms) + 1) / 2, rtol=1e-12)
    assert not np.allclose(got, got_probs)


def test_old_runs_without_logits_still_read(store: Store) -> None:
    probs = _softmax(np.random.default_rng(0).normal(size=(6, 4)))
    run = planted_run(store, "old", experts={0: [[0], [1], [2], [3], [0], [1]]}, probs={0: probs})
    assert "logits" not in run.decisions().columns  # a run recorded before the column existed
    with pytest.raises(InputError, match='basis="probs"'):
        expert_similarity(run, 0)
    with pytest.raises(InputError, match='basis="probs"'):
        merge_groups(run, 0, 2)
    assert len(expert_similarity(run, 0, basis="probs")) == 16
    assert merge_groups(run, 0, 2, basis="probs")["keep"].sum() == 2
