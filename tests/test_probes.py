"""Causal probes on real models: the bundled LM, DiT and tiny Mixtral, and tiny random transformers families.

Every probe writes an ordinary run; the tests read those runs back and check what the edit must have done
(a disabled expert never chosen, forced tokens on exactly the forced experts, zero edits bit for bit the
original, batch dependence only where capacity spans the batch) and cross-check the tables against direct
computations (loss per domain, flip counts, changed decisions).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import routescope
from routescope.analysis.ablation import ablation_accuracy, ablation_denoising, ablation_loss
from routescope.analysis.batching import batch_dependence
from routescope.analysis.forcing import set_share
from routescope.analysis.stability import decision_changes, flip_correlation, flip_rate
from routescope.cli import main
from routescope.hooks import LoadedModel
from routescope.hooks.interventions import Intervention, InterventionError, RouterEdit, intervene
from routescope.models.tokenizers import byte_tokenizer
from routescope.probes import (
    RecordOptions,
    Sampling,
    TokenSelection,
    ablation_study,
    describe,
    probe_ablate,
    probe_batch,
    probe_force,
    probe_noise,
    probe_of,
    record_base,
)
from routescope.store import InputError, Store
from tests.tiny_families import tiny_model

TEXTS = [
    "def f(x):\n    return x + 1",
    "The cat sat on the mat.",
    "2 + 3 = 5, 7 * 6 = 42",
    "Rain fell all day.",
]
DOMAINS = {"domain": ["code", "prose", "arithmetic", "prose"]}
HOOKS = RecordOptions(engine="hooks", labels=DOMAINS)
KEYS = ["sample", "position", "step", "router", "call", "rank"]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values([k for k in KEYS if k in frame.columns]).reset_index(drop=True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One torch thread: these models are tiny, and two threads spin-wait on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def moe_lm() -> LoadedModel:
    return routescope.load_model("bundled:moe-lm")


@pytest.fixture(scope="module")
def dit() -> LoadedModel:
    return routescope.load_model("bundled:dit-digits")


def _family(name: str) -> LoadedModel:
    return LoadedModel(model=tiny_model(name), tokenizer=byte_tokenizer(), spec=f"tiny:{name}")


# --- disabling experts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family", ["mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss", "granitemoe", "switch_transformers"]
)
def test_disabling_an_expert_removes_it_from_the_routing_and_changes_the_output(
    family: str, store: Store
) -> None:
    model = _family(family)
    base = record_base(model, TEXTS, store=store, name="base", options=HOOKS)
    used = base.assignments()
    router = base.routers[0]
    top = int(used[(used.router == router["id"]) & ~used.dropped].expert.value_counts().idxmax())
    ablated = probe_ablate(
        model, TEXTS, store=store, name="ablated", experts={router["path"]: [top]}, options=HOOKS
    )
    after = ablated.assignments()
    assert (used[used.router == router["id"]].expert == top).sum() > 0
    assert (after[after.router == router["id"]].expert == top).sum() == 0  # not even as a dropped wish
    entry = probe_of(ablated)
    assert entry is not None
    assert entry["probe"] == "ablate"
    assert entry["intervention"]["routers"][router["path"]]["disable"] == [top]

    ids = torch.tensor([byte_tokenizer()(TEXTS[0])["input_ids"]])
    inputs = {"input_ids": ids}
    if family == "switch_transformers":
        inputs["decoder_input_ids"] = torch.zeros((1, 1), dtype=torch.long)
    edit = Intervention(edits={router["path"]: RouterEdit(disable=(top,))})
    with torch.no_grad():
        before = model.model(**inputs).logits
        with intervene(model.model, edit, base.routers):
            edited = model.model(**inputs).logits
        again = model.model(**inputs).logits
    assert not torch.allclose(before, edited)
    assert torch.equal(before, again)  # the hooks are gone after the block


def test_disabled_experts_renormalise_the_family_way(store: Store) -> None:
    """Qwen2-MoE weights are the top-k of a softmax: with experts disabled, layer 0 (whose input the edit
    cannot reach) must weight each chosen expert by its base probability renormalised over the others."""
    model = _family("qwen2_moe")
    options = RecordOptions(engine="hooks", probs=True)
    base = record_base(model, TEXTS, store=store, name="base", options=options)
    ablated = probe_ablate(model, TEXTS, store=store, name="ablated", experts=[0, 3], options=options)
    probs = _sorted(base.decisions())
    probs = probs[probs.layer == 0]
    after = _sorted(ablated.assignments())
    after = after[after.layer == 0]
    p = np.stack(probs["probs"].to_numpy())
    kept = p.copy()
    kept[:, [0, 3]] = 0
    kept /= kept.sum(axis=1, keepdims=True)
    expected_experts = np.argsort(-kept, axis=1, kind="stable")[:, :2]
    expected_weights = np.take_along_axis(kept, expected_experts, axis=1)
    assert after.expert.to_numpy().reshape(-1, 2).tolist() == expected_experts.tolist()
    np.testing.assert_allclose(after.weight.to_numpy().reshape(-1, 2), expected_weights, rtol=1e-5)


def test_disabling_nothing_and_zero_noise_reproduce_the_original_bit_for_bit(
    tiny_lm: LoadedModel, store: Store
) -> None:
    options = RecordOptions(labels=DOMAINS, probs=True)  # nnsight, the default engine
    base = record_base(tiny_lm, TEXTS, store=store, name="base", options=options)
    nothing = probe_ablate(tiny_lm, TEXTS, store=store, name="nothing", experts=[], options=options)
    quiet = probe_noise(tiny_lm, TEXTS, store=store, name="quiet", sigma=0.0, base=base, options=options)
    for run in (nothing, quiet):
        for table in ("assignments", "decisions", "tokens"):
            assert run.read_table(table).equals(base.read_table(table)), (run.name, table)
    assert flip_rate(base, quiet)["flips"].sum() == 0
    assert probe_of(quiet)["params"] == {"sigma": 0.0, "on": "input", "layers": None, "seed": 0}


def test_shared_expert_off_changes_the_moe_lm_loss(moe_lm: LoadedModel, store: Store) -> None:
    study = ablation_study(moe_lm, TEXTS, store=store, name="shared", shared=True, seeds=0, options=HOOKS)
    assert study.random == []
    table = ablation_loss(study.base, study.ablated).set_index("group")
    assert table.loc["(all)", "ablated"] > table.loc["(all)", "base"] + 0.1
    routing = study.ablated.assignments()
    assert len(routing) == len(study.base.assignments())  # routed experts still run


# --- ablation tables -------------------------------------------------------------------------------------


def test_ablating_the_top_experts_raises_the_moe_lm_loss_more_than_random_ablation(
    moe_lm: LoadedModel, store: Store
) -> None:
    texts, labels = routescope.load_dataset("bundled:domains")
    pick = list(range(0, 100, 10))  # two texts per domain
    options = RecordOptions(engine="hooks", labels={"domain": [labels["domain"][i] for i in pick]})
    study = ablation_study(
        moe_lm, [texts[i] for i in pick], store=store, name="top", top=4, seeds=3, options=options
    )
    table = ablation_loss(study.base, study.ablated, study.random, by="domain").set_index("domain")
    overall = table.loc["(all)"]
    assert overall["n_random"] == 3
    assert overall["ablated_delta"] > 0.5
    assert overall["ablated"] > overall["random_max"]
    assert overall["ablated_delta"] > 2 * overall["random_delta"]
    disabled = probe_of(study.ablated)["intervention"]["routers"]
    assert all(len(edit["disable"]) == 4 for edit in disabled.values())
    base_use = study.base.assignments()
    for router in study.base.routers:  # the four disabled experts are the four most used
        counts = base_use[base_use.router == router["id"]].expert.value_counts()
        assert set(disabled[router["path"]]["disable"]) == set(counts.index[:4])


def test_ablation_loss_equals_a_direct_computation(tiny_lm: LoadedModel, store: Store) -> None:
    base = record_base(
        tiny_lm,
        TEXTS,
        store=store,
        name="base",
        options=HOOKS,
        metrics=lambda: {"loss": _direct_loss(tiny_lm, TEXTS)},
    )
    measured = probe_ablate(tiny_lm, TEXTS, store=store, name="nothing", experts=[], options=HOOKS)
    table = ablation_loss(base, measured, by="domain").set_index("domain")
    direct = _direct_loss(tiny_lm, TEXTS)
    for domain in ("code", "prose", "arithmetic"):
        rows = [i for i, d in enumerate(DOMAINS["domain"]) if d == domain]
        expected = sum(direct["nll"][i] for i in rows) / sum(direct["tokens"][i] for i in rows)
        assert table.loc[domain, "ablated"] == pytest.approx(expected, rel=1e-5)
        assert table.loc[domain, "tokens"] == sum(direct["tokens"][i] for i in rows)
    assert table.loc["(all)", "ablated_delta"] == pytest.approx(0.0, abs=1e-6)


def _direct_loss(model: LoadedModel, texts: list[str]) -> dict[str, list[float]]:
    """Each text alone, no padding: mean cross-entropy × predicted tokens."""
    nll, tokens = [], []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([model.tokenizer(text)["input_ids"]])
            logits = model.model(input_ids=ids).logits[0, :-1]
            nll.append(float(F.cross_entropy(logits, ids[0, 1:], reduction="sum")))
            tokens.append(ids.shape[1] - 1)
    return {"nll": nll, "tokens": tokens}


def test_dit_ablation_measures_denoising_loss_and_class_accuracy(dit: LoadedModel, store: Store) -> None:
    sampling = Sampling(classes=(0, 7), samples_per_class=2, steps=10, cfg_scale=4.0, seed=0)
    study = ablation_study(dit, sampling, store=store, name="dit", top=4, seeds=1, options=HOOKS)
    denoise = ablation_denoising(study.base, study.ablated, study.random)
    assert denoise["t_low"].tolist() == [0, 200, 400, 600, 800]
    assert denoise["t_high"].tolist() == [199, 399, 599, 799, 999]
    assert (denoise["ablated"] > denoise["base"]).all()
    assert denoise.loc[0, "ablated"] > denoise.loc[0, "random_max"]  # the low-noise bucket is the telling one
    accuracy = ablation_accuracy(study.base, study.ablated, study.random).set_index("class")
    assert accuracy.loc["(all)", "base"] == 1.0
    shared = probe_ablate(dit, sampling, store=store, name="shared", shared=True, options=HOOKS)
    assert probe_of(shared)["metrics"]["classes"]["accuracy"] <= 0.5  # without the shared expert: scribbles
    from routescope.models.dit_digits.quality import DigitClassifier

    classifier = DigitClassifier.fit()  # the metric scores exactly the images the run recorded
    for run in (study.base, study.ablated, shared):
        predicted = classifier.predict(torch.from_numpy(run.images()))
        assert probe_of(run)["metrics"]["classes"]["accuracy"] == np.mean(predicted == [0, 0, 7, 7])


# --- forced routing --------------------------------------------------------------------------------------


def test_forced_routing_records_exactly_the_forced_experts(tiny_lm: LoadedModel, store: Store) -> None:
    options = RecordOptions(labels=DOMAINS)  # nnsight
    base = record_base(tiny_lm, TEXTS, store=store, name="base", options=options)
    forced = probe_force(
        tiny_lm,
        TEXTS,
        store=store,
        name="forced",
        experts=[1, 5],
        layers=[1],
        where={"domain": "prose"},
        options=options,
    )
    after, before = _sorted(forced.assignments()), _sorted(base.assignments())
    prose = after["sample"].isin([1, 3])
    at_layer = after.layer == 1
    chosen = after[prose & at_layer].groupby(["sample", "position"]).expert.apply(sorted)
    assert chosen.map(tuple).unique().tolist() == [(1, 5)]
    untouched = ~(prose & at_layer) & (after.layer <= 1)
    assert after[untouched].expert.tolist() == before[untouched].expert.tolist()
    assert probe_of(forced)["params"]["where"] == {"domain": "prose"}
    share = set_share(forced, [1, 5], "domain").set_index(["layer", "domain"])["in_set_share"]
    assert share.loc[(1, "prose")] == 1.0
    in_set = before.groupby(["sample", "position", "layer"]).expert.apply(lambda e: set(e) <= {1, 5})
    code = in_set.xs(0, level="sample").xs(1, level="layer")  # sample 0 is the code text
    assert share.loc[(1, "code")] == pytest.approx(code.mean())


def test_forcing_positions_of_text_and_classes_of_patches(
    tiny_lm: LoadedModel, dit: LoadedModel, store: Store
) -> None:
    text = probe_force(
        tiny_lm,
        TEXTS,
        store=store,
        name="pos",
        experts=[6, 7],
        tokens=TokenSelection(positions=frozenset({0, 2})),
        options=HOOKS,
    )
    rows = text.assignments()
    picked = rows[rows.position.isin([0, 2])].groupby(["sample", "position", "layer"]).expert.apply(sorted)
    assert picked.map(tuple).unique().tolist() == [(6, 7)]
    assert not rows[~rows.position.isin([0, 2])].expert.isin([6, 7]).all()
    sampling = Sampling(classes=(3, 5), steps=2, seed=1)
    patches = probe_force(
        dit,
        sampling,
        store=store,
        name="patches",
        experts=[0, 1],
        where={"class": "5"},
        tokens=TokenSelection(positions=frozenset({0, 15})),
        options=HOOKS,
    )
    routed = patches.assignments().merge(patches.samples()[["sample", "class"]], on="sample")
    selected = (routed["class"] == "5") & routed.position.isin([0, 15])
    assert set(routed[selected].expert) == {0, 1}
    assert routed[selected].groupby(["sample", "position", "step", "layer"]).size().eq(2).all()
    assert not set(routed[~selected].expert) <= {0, 1}


# --- router stability ------------------------------------------------------------------------------------


def test_noise_flips_mostly_low_margin_decisions(moe_lm: LoadedModel, store: Store) -> None:
    base = record_base(moe_lm, TEXTS, store=store, name="base", options=HOOKS)
    noisy = probe_noise(moe_lm, TEXTS, store=store, name="noisy", sigma=0.1, seed=3, base=base, options=HOOKS)
    changes = decision_changes(base, noisy)
    a = _sorted(base.assignments()).groupby(["sample", "position", "router"]).expert.first()
    b = _sorted(noisy.assignments()).groupby(["sample", "position", "router"]).expert.first()
    assert int(changes.flipped.sum()) == int((a != b).sum())  # rank 0 has the largest weight here
    rates = flip_rate(base, noisy)
    assert rates["decisions"].sum() == len(changes)
    assert rates["flips"].sum() == int(changes.flipped.sum()) > 0
    low, high = rates.iloc[0], rates.iloc[-1]
    assert low["margin_high"] <= 0.02
    assert low["flip_rate"] > high["flip_rate"]
    overall = flip_correlation(base, noisy).set_index("layer").loc[-1]
    assert overall["corr_margin"] < 0
    assert overall["margin_flipped"] < overall["margin_kept"]


# --- batch dependence ------------------------------------------------------------------------------------


class CapacityRouter(nn.Module):
    """A Switch-style top-1 router whose expert capacity counts every token of the batch (as GShard and
    Mesh-TF Switch groups do); padding takes no capacity. Returns `(dispatch one-hot, max prob, logits)`."""

    def __init__(self, hidden: int, n_experts: int, capacity: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_experts, hidden))
        self.capacity = capacity

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = F.linear(hidden, self.weight)
        probs = logits.softmax(dim=-1)
        wanted = F.one_hot(probs.argmax(dim=-1), logits.shape[-1]) * mask[..., None].long()
        order = torch.cumsum(wanted.reshape(-1, logits.shape[-1]), dim=0).reshape(wanted.shape)
        return wanted * (order <= self.capacity), probs.max(dim=-1, keepdim=True).values, logits


class CapacityMoE(nn.Module):
    def __init__(self, hidden: int, n_experts: int, capacity: int) -> None:
        super().__init__()
        self.gate = CapacityRouter(hidden, n_experts, capacity)
        self.experts = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_experts))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dispatch, weight, _ = self.gate(hidden, mask)
        routed = sum(
            dispatch[..., e : e + 1] * weight * expert(hidden) for e, expert in enumerate(self.experts)
        )
        return hidden + routed


class BatchCapacityLM(nn.Module):
    """Two capacity-limited MoE layers over byte embeddings."""

    def __init__(self, capacity: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(300, 16)
        self.layers = nn.ModuleList(CapacityMoE(16, 4, capacity) for _ in range(2))
        self.head = nn.Linear(16, 300)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        hidden = self.embed(input_ids)
        for layer in self.layers:
            hidden = layer(hidden, mask)
        return self.head(hidden)


def test_batch_probe_is_zero_for_token_choice_routing(tiny_lm: LoadedModel, store: Store) -> None:
    alone, batched = probe_batch(tiny_lm, TEXTS, store=store, name="batch", options=HOOKS)
    table = batch_dependence(alone, batched)
    assert table["changed"].tolist() == [0, 0, 0, 0]
    assert table["decisions"].tolist() == [len(alone.decisions()) // 4] * 4
    assert probe_of(batched)["params"] == {"batch_size": 4}


def test_transformers_switch_counts_capacity_per_sequence(store: Store) -> None:
    """Its tokens overflow (capacity 2) yet no decision depends on the batch: the capacity is per row."""
    alone, batched = probe_batch(_family("switch_transformers"), TEXTS, store=store, name="b", options=HOOKS)
    table = batch_dependence(alone, batched)
    assert table["dropped_alone"].sum() > 0
    assert table["changed"].sum() == 0


def test_batch_probe_counts_the_decisions_a_shared_capacity_changes(store: Store) -> None:
    model = LoadedModel(model=BatchCapacityLM().eval(), tokenizer=byte_tokenizer())
    alone, batched = probe_batch(model, TEXTS, store=store, name="b", options=HOOKS)
    table = batch_dependence(alone, batched)
    assert table["changed"].sum() > 0
    assert (table["dropped_batched"] > table["dropped_alone"]).any()
    # the same count, straight from the routers: each text alone vs all four padded into one batch
    tokenizer = byte_tokenizer()
    ids = [tokenizer(t)["input_ids"] for t in TEXTS]
    alone_picks = [_picks(model.model, torch.tensor([row]), torch.ones(1, len(row))) for row in ids]
    width = max(map(len, ids))
    padded = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    together = _picks(model.model, padded, mask)
    for layer in range(2):
        changed = sum(
            int((alone_picks[i][layer][0, : len(row)] != together[layer][i, : len(row)]).any(-1).sum())
            for i, row in enumerate(ids)
        )
        assert table.loc[table.layer == layer, "changed"].item() == changed


def _picks(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Per layer [B, S, 2]: the wanted expert and whether it was dropped."""
    found: list[torch.Tensor] = []
    hooks = [
        layer.gate.register_forward_hook(
            lambda _m, _a, out: found.append(
                torch.stack([out[2].argmax(-1), (out[0].sum(-1) == 0).long()], dim=-1)
            )
        )
        for layer in model.layers
    ]
    with torch.no_grad():
        model(ids, mask.long())
    for hook in hooks:
        hook.remove()
    return found


# --- errors and the command line -------------------------------------------------------------------------


def test_edits_that_cannot_apply_are_one_line_errors(tiny_lm: LoadedModel, store: Store) -> None:
    routers = describe(tiny_lm, TEXTS)
    gate = routers[0]["path"]
    cases = [
        ({gate: RouterEdit(disable=(9,))}, "distinct experts in 0..7"),
        ({gate: RouterEdit(disable=tuple(range(7)))}, "leaves fewer than top-k = 2"),
        ({gate: RouterEdit(force=(3,))}, "at least top-k = 2"),
        ({gate: RouterEdit(input_noise=-1.0)}, "finite number ≥ 0"),
        ({gate: RouterEdit(drop_shared=True)}, "no shared expert"),
        ({"model.nope": RouterEdit()}, "no router 'model.nope'"),
    ]
    for edits, message in cases:
        with (
            pytest.raises(InputError, match=message),
            intervene(tiny_lm.model, Intervention(edits=edits), routers),
        ):
            pass
    with pytest.raises(InputError, match="pass base="):
        probe_ablate(tiny_lm, TEXTS, store=store, name="x", top=2, options=HOOKS)
    with pytest.raises(InputError, match="no router at layer"):
        probe_noise(tiny_lm, TEXTS, store=store, name="x", sigma=0.1, layers=[7], options=HOOKS)
    assert store.runs() == []


def test_a_router_without_a_logit_product_is_refused(store: Store) -> None:
    model = BatchCapacityLM()
    model.layers[0].gate.forward = lambda hidden, mask: _scaled(hidden, mask)  # type: ignore[method-assign]
    routers = [{"path": "layers.0.gate", "n_experts": 4, "top_k": 1, "shared_experts": []}]
    edit = Intervention(edits={"layers.0.gate": RouterEdit(disable=(1,))})
    with (
        pytest.raises(InterventionError, match="no linear/matmul with 4 outputs"),
        intervene(model, edit, routers),
    ):
        model(torch.tensor([[5, 6, 7]]))


def _scaled(hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    logits = hidden[..., :4] * 2.0
    return (
        F.one_hot(logits.argmax(-1), 4) * mask[..., None].long(),
        logits.max(-1, keepdim=True).values,
        logits,
    )


def test_cli_probe_ablate_prints_the_table_of_the_recorded_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = tmp_path / "store"
    args = ["probe", "ablate", "bundled:tiny-mixtral", "--store", str(store), "--name", "abl"]
    texts = [x for t in TEXTS for x in ("--text", t)]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "routescope",
            *args,
            *texts,
            "--top",
            "2",
            "--layer",
            "0",
            "--random-seeds",
            "2",
            "--engine",
            "hooks",
            "--format",
            "csv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    printed = pd.read_csv(io.StringIO(done.stdout.split("\n", 2)[2]))  # after the two lines naming the runs
    runs = Store(store)
    assert sorted(runs.runs()) == ["abl", "abl.base", "abl.random-0", "abl.random-1"]
    table = ablation_loss(
        runs.open("abl.base"), runs.open("abl"), [runs.open(f"abl.random-{s}") for s in (0, 1)]
    )
    assert printed["base"].tolist() == pytest.approx(table["base"].tolist(), rel=1e-6)
    assert printed["ablated"].tolist() == pytest.approx(table["ablated"].tolist(), rel=1e-6)


def test_cli_probe_noise_batch_force_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = [
        "bundled:tiny-mixtral",
        "--store",
        str(tmp_path),
        "--engine",
        "hooks",
        "--text",
        TEXTS[0],
        "--text",
        TEXTS[1],
    ]
    assert main(["probe", "noise", *common, "--name", "n", "--sigma", "0", "--format", "json"]) == 0
    printed = capsys.readouterr().out
    assert '"flips":0' in printed.replace(" ", "")
    assert main(["probe", "batch", *common, "--name", "b"]) == 0
    assert "decisions that change in a batch" in capsys.readouterr().out
    assert (
        main(["probe", "force", *common, "--name", "f", "--expert", "2", "--expert", "4", "--layer", "3"])
        == 0
    )
    forced = Store(tmp_path).open("f").assignments()
    assert set(forced[forced.layer == 3].expert) == {2, 4}
    assert main(["probe", "ablate", *common, "--name", "a", "--expert", "99"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("routescope: error: disable [99]")
    assert error.count("\n") == 1
    assert main(["probe", "batch", *common, "--name", "b"]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert main(["probe", "noise", *common, "--name", "bad", "--sigma", "0.1", "--layer", "99"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert "bad.base" not in Store(tmp_path).runs()  # refused before the base run was written
