"""Variable k and zero-computation experts: decisions with 0 … E experts, recorded and analysed correctly.

Expert-choice routers (NucleusMoE) give a token any number of experts, zero included; LongCat-Flash's
zero-computation (identity) experts are chosen like any expert but compute nothing. The record must hold
exactly the choices (one decision row per token whatever its number of experts), mark the zero experts,
and balance and specialization must count only the experts that compute, with no fixed k assumed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import routescope
from routescope.analysis.balance import balance, expert_load
from routescope.analysis.coactivation import coactivation
from routescope.analysis.specialization import specialization
from routescope.hooks.normalise import Decoded, DecodeRule, normalise
from routescope.hooks.routers import RouterSpec
from routescope.hooks.tables import router_call_tables
from routescope.hooks.units import Layout
from routescope.store import InputError, Store
from routescope.store.manifest import RouterInfo
from tests.planted import planted_run
from tests.tiny_families import tiny_model

torch.set_num_threads(1)


def _reference_expert_choice(logits: torch.Tensor, factor: float, scale: float) -> list[dict[int, float]]:
    """Per token (batch-major), expert → weight, by NucleusMoE's rule written out with loops."""
    batch, length, n_experts = logits.shape
    affinity = torch.softmax(logits.float(), dim=-1)
    capacity = max(1, math.ceil(factor * length / n_experts))
    picks: list[dict[int, float]] = [{} for _ in range(batch * length)]
    for b in range(batch):
        for e in range(n_experts):
            order = sorted(range(length), key=lambda s: -float(affinity[b, s, e]))
            for s in order[:capacity]:
                picks[b * length + s][e] = float(affinity[b, s, e])
    for token in picks:
        total = sum(token.values())
        for e in token:
            token[e] = token[e] / (total + 1e-12) * scale
    return picks


def test_expert_choice_decodes_each_experts_top_tokens() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 6, 4) * 2
    rule = DecodeRule(convention="expert_choice", pnorm=1.0, capacity_factor=1.0, weight_scale=2.5)
    decoded = normalise(logits, rule)
    expected = _reference_expert_choice(logits, 1.0, 2.5)
    assert decoded.valid is not None
    counts = decoded.valid.sum(dim=1).tolist()
    assert counts == [len(t) for t in expected]
    assert 0 in counts  # some token was picked by no expert: the planted case this test needs
    for row, token in enumerate(expected):
        n = counts[row]
        got = dict(zip(decoded.expert[row, :n].tolist(), decoded.weight[row, :n].tolist(), strict=True))
        assert got.keys() == token.keys()
        assert all(abs(got[e] - token[e]) < 1e-5 for e in token)
        ranked = decoded.probs[row, decoded.expert[row, :n]]
        assert torch.all(ranked[:-1] >= ranked[1:])  # rank 0 = the highest affinity
    # every expert took exactly C = ⌈1.0 · 6 / 4⌉ = 2 tokens of each sequence
    chosen = torch.zeros(12, 4, dtype=torch.long)
    for row in range(12):
        chosen[row, decoded.expert[row, : counts[row]]] = 1
    assert chosen.reshape(2, 6, 4).sum(dim=1).eq(2).all()


def test_tables_keep_a_decision_row_for_a_token_without_experts() -> None:
    decoded = Decoded(
        expert=torch.tensor([[2, 0], [1, 0], [3, 1]]),
        weight=torch.tensor([[0.7, 0.3], [1.0, 0.0], [0.0, 0.0]]),
        dropped=torch.zeros(3, 2, dtype=torch.bool),
        probs=torch.full((3, 4), 0.25),
        valid=torch.tensor([[True, True], [True, False], [False, False]]),
    )
    layout = Layout(
        sample=torch.zeros(3, dtype=torch.long),
        position=torch.arange(3),
        real=torch.ones(3, dtype=torch.bool),
    )
    spec = RouterSpec(
        id=0, path="gate", layer=0, call_count=1, kind="ffn", stack="decoder", n_experts=4, top_k=4
    )
    assignments, decisions = router_call_tables(decoded, layout, spec, step=0, call=0, with_probs=False)
    a = assignments.to_pandas()
    assert a[["position", "rank", "expert"]].values.tolist() == [[0, 0, 2], [0, 1, 0], [1, 0, 1]]
    assert a["weight"].tolist() == pytest.approx([0.7, 0.3, 1.0])
    assert decisions.num_rows == 3
    assert decisions.column("position").to_pylist() == [0, 1, 2]


def test_longcat_flash_records_its_choices_and_marks_zero_experts(tmp_path: Path) -> None:
    model = tiny_model("longcat_flash")
    seen: dict[str, list[torch.Tensor]] = {}
    handles = [
        module.register_forward_hook(
            lambda _m, _a, out, p=path: seen.setdefault(p, []).append(out[2].clone())
        )
        for path, module in model.named_modules()
        if path.endswith("mlp.router")
    ]
    ids = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
    run = routescope.record(model, ids, store=tmp_path, name="longcat", progress=False, batch_size=1)
    for handle in handles:
        handle.remove()
    routers = run.info.routers
    assert [r.path for r in routers] == ["model.layers.0.mlp.router", "model.layers.1.mlp.router"]
    assert all(r.n_experts == 10 and r.zero_experts == (8, 9) and r.choice == "token" for r in routers)
    assert all(r.computing_experts == 8 for r in routers)
    a = run.assignments()
    for router in routers:
        # batch_size=1: calls are the dry run? no: forward-only, one call per sample, in sample order
        calls = seen[router.path][-len(ids) :]
        for sample, indices in enumerate(calls):
            got = a[(a["router"] == router.id) & (a["sample"] == sample)].sort_values(["position", "rank"])
            assert got["expert"].to_numpy().reshape(-1, 2).tolist() == indices.tolist()
    zero = a["expert"] >= 8
    assert zero.any()  # the random router sends some tokens to an identity expert
    load = expert_load(run, ["router"])
    assert sorted(load["expert"].unique()) == list(range(8))
    for router in routers:
        mine = a[(a["router"] == router.id) & ~zero]
        counts = mine["expert"].value_counts().reindex(range(8), fill_value=0).to_numpy()
        part = load[load["router"] == router.id]
        assert part["count"].tolist() == counts.tolist()
        assert part["load"].to_numpy() == pytest.approx(counts / counts.sum())
    table = balance(run, ["router"])
    assert table["n_experts"].tolist() == [8, 8]


def test_balance_and_specialization_with_k_varying_and_zero_experts(tmp_path: Path) -> None:
    # 6 experts, 4 and 5 compute nothing; samples choose 0 … 3 experts
    chosen = [[0], [0, 1], [], [2, 4], [1, 2, 3], [5], [0, 5], [3]]
    domain = ["a", "a", "a", "a", "b", "b", "b", "b"]
    run = planted_run(
        Store(tmp_path),
        "vark",
        experts={0: chosen},
        n_experts=6,
        labels={"domain": domain},
        zero_experts=(4, 5),
    )
    assert len(run.decisions()) == 8  # the sample with no expert keeps its decision row
    assert len(run.assignments()) == sum(len(c) for c in chosen)
    computing = [e for row in chosen for e in row if e < 4]
    counts = np.bincount(computing, minlength=4)  # [3, 2, 2, 2]
    load = expert_load(run)
    assert load["expert"].tolist() == [0, 1, 2, 3]
    assert load["count"].tolist() == counts.tolist()
    row = balance(run).iloc[0]
    share = counts / counts.sum()
    assert row["n_experts"] == 4
    assert row["max_over_mean"] == pytest.approx(share.max() * 4)
    assert row["cv"] == pytest.approx(counts.std() / counts.mean())
    assert row["norm_entropy"] == pytest.approx(-(share * np.log(share)).sum() / np.log(4))
    assert row["dead_experts"] == 0
    spec = specialization(run, "domain").set_index(["domain", "expert"])
    by_domain = {
        d: np.bincount(
            [e for row, dd in zip(chosen, domain, strict=True) if dd == d for e in row if e < 4], minlength=4
        )
        for d in ("a", "b")
    }
    for d, c in by_domain.items():
        for e in range(4):
            if c[e] == 0:
                assert (d, e) not in spec.index
                continue
            got = spec.loc[(d, e)]
            assert got["count"] == c[e]
            assert got["share"] == pytest.approx(c[e] / c.sum())
            assert got["lift"] == pytest.approx((c[e] / c.sum()) / share[e])
            assert got["uniform_lift"] == pytest.approx(c[e] / c.sum() * 4)
    assert not any(e >= 4 for _, e in spec.index)
    pairs = coactivation(run, 0).set_index(["expert_a", "expert_b"])
    # computing pairs: (0, 1) once, (1, 2), (1, 3), (2, 3) once each; (2, 4) and (0, 5) involve zero experts
    assert sorted(pairs.index) == [(0, 1), (1, 0), (1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)]
    assert (pairs["count"] == 1).all()
    decisions = 7  # the sample with no expert has no assignment; the one with only expert 5 is a token
    assert pairs.loc[(0, 1), "lift"] == pytest.approx((1 / decisions) / ((3 / decisions) * (2 / decisions)))
    assert pairs.loc[(0, 1), "p_b_given_a"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"choice": "experts"}, r"^router 0's choice is 'experts', not token or expert$"),
        ({"zero_experts": [3, 6]}, r"^router 0's zero_experts is not a list of its expert ids$"),
        ({"zero_experts": "6"}, r"^router 0's zero_experts is not a list of its expert ids$"),
    ],
)
def test_router_objects_with_a_bad_choice_or_zero_experts_are_refused(fields: dict, message: str) -> None:
    from routescope.store.manifest import ManifestError

    with pytest.raises(ManifestError, match=message):
        RouterInfo.from_dict({"id": 0, "layer": 0, "n_experts": 6, "top_k": 2, **fields})


def test_runs_without_the_new_router_fields_read_as_token_choice(tmp_path: Path) -> None:

    info = RouterInfo.from_dict({"id": 0, "layer": 0, "n_experts": 6, "top_k": 2})
    assert (info.choice, info.zero_experts, info.computing_experts) == ("token", (), 6)
    assert info.to_dict() == {"id": 0, "layer": 0, "n_experts": 6, "top_k": 2}  # written back unchanged


def test_fixed_k_exports_refuse_expert_choice_runs(tmp_path: Path) -> None:
    from routescope.exporters import export_run

    run = planted_run(Store(tmp_path), "ec", experts={0: [[0], [], [1, 2]]}, choice="expert")
    assert run.info.routers[0].choice == "expert"
    with pytest.raises(
        InputError, match=r"^olmoe-jsonl needs a fixed top-k per token; run 'ec' has expert-choice"
    ):
        export_run("olmoe-jsonl", run, tmp_path / "out.jsonl")


def test_coactivation_at_an_expert_choice_layer_counts_tokens_without_experts(tmp_path: Path) -> None:
    from routescope.analysis.coactivation import coactivation

    chosen = [[0, 1], [], [0, 1, 2], [2]]
    run = planted_run(Store(tmp_path), "ec", experts={0: chosen}, choice="expert")
    table = coactivation(run, 0).set_index(["expert_a", "expert_b"])
    decisions = len(chosen)  # 4, the token with no expert included
    single = {e: sum(e in c for c in chosen) for e in range(3)}
    for (a, b), row in table.iterrows():
        both = sum(a in c and b in c for c in chosen)
        assert row["count"] == both
        assert row["p_b_given_a"] == pytest.approx(both / single[a])
        assert row["lift"] == pytest.approx(
            (both / decisions) / (single[a] / decisions * single[b] / decisions)
        )
    assert table.loc[(0, 1), "lift"] == pytest.approx(2.0)
