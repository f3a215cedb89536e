"""Engine-trace importers round-trip a RouteScope recording of the bundled LM (issue 16, items 1–3).

A recording of `bundled:moe-lm` is written out in each engine's format (tests/engine_traces.py, from the
formats the engines' code writes), imported back, and compared: agreement 1.0 and no replay difference on
every decision the format carries, identical load, and the analyses over ids give the recording's own
tables. Counts-only imports give the recording's load; what a format lacks is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import routescope
from routescope.analysis import compute
from routescope.importers import import_trace
from routescope.store import InputError, Run, Store
from tests import engine_traces as traces

TEXTS = ["the router sends tokens to experts.", "def f(x): return x + 1", "Routing replay, again!"]
DOMAINS = ["prose", "code", "prose"]
N_EXPERTS = 16


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """`gen`: three texts with 3 generated tokens each; `prompt`: the same texts, no generation."""
    store = Store(tmp_path_factory.mktemp("importers") / "store")
    lm = routescope.load_model("bundled:moe-lm")
    labels = {"domain": DOMAINS}
    routescope.record(lm, TEXTS, store=store, name="gen", labels=labels, max_new_tokens=3, progress=False)
    routescope.record(lm, TEXTS, store=store, name="prompt", labels=labels, progress=False)
    return store


@pytest.fixture
def labels_file(tmp_path: Path) -> Path:
    return traces.write_jsonl(tmp_path / "labels.jsonl", [{"domain": d} for d in DOMAINS])


def assert_same_routing(imported: Run, recorded: Run) -> None:
    """Every decision of the recording is in the import, with the same experts in the same order."""
    table = compute("agreement", imported, other=recorded)
    assert (table["top1_agreement"] == 1.0).all()
    assert (table["topk_overlap"] == 1.0).all()
    assert table["decisions"].sum() == recorded.manifest["rows"]["decisions"]
    replay = compute("replay", imported, other=recorded).iloc[0]
    assert replay["tokens_differing"] == 0
    assert replay["tokens"] * len(recorded.info.routers) == replay["decisions"]


def assert_same_tables(imported: Run, recorded: Run, kinds: list[str], label: str | None = None) -> None:
    for kind in kinds:
        mine = compute(kind, imported, label=label, **({"layer": 1} if kind == "coactivation" else {}))
        theirs = compute(kind, recorded, label=label, **({"layer": 1} if kind == "coactivation" else {}))
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), theirs.reset_index(drop=True), kind)


IDS_KINDS = ["load", "balance", "coactivation", "transitions", "paths", "repeat"]


@pytest.mark.parametrize("split", [False, True])
def test_vllm_jsonl_round_trip(recorded: Store, tmp_path: Path, labels_file: Path, split: bool) -> None:
    gen = recorded.open("gen")
    path = traces.vllm_jsonl(gen, tmp_path / "vllm.jsonl", split=split)
    run = import_trace(
        "vllm",
        [path],
        recorded,
        f"vllm-{split}",
        tokenizer="bundled:moe-lm",
        labels=labels_file,
        n_experts=N_EXPERTS,
    )
    assert run.info.engine == "vllm"
    assert run.info.caps == {"ids", "ranks", "token_ids", "positions", "steps"}
    assert_same_routing(run, gen)
    assert_same_tables(run, gen, IDS_KINDS)
    assert_same_tables(run, gen, ["specialization"], label="domain")
    assert_same_tables(run, gen, ["specialization"], label="token_id")
    assert_same_tables(run, gen, ["vocabulary"])
    tokens = run.tokens().merge(gen.tokens(), on=["sample", "position"], suffixes=("", "_rec"))
    assert len(tokens) == len(gen.tokens())
    assert (tokens["token_id"] == tokens["token_id_rec"]).all()
    assert (tokens["token"] == tokens["token_rec"]).all()
    assert (tokens["generated"] == tokens["generated_rec"]).all()
    assert run.samples()["domain"].tolist() == DOMAINS
    with pytest.raises(InputError, match=r"^this vLLM import has expert ids only; uncertainty needs router"):
        compute("uncertainty", run)
    with pytest.raises(InputError, match="token_weights needs gate weights"):
        compute("token_weights", run, sample=0, position=0)


def test_vllm_dense_layers_are_stated_and_never_counted(recorded: Store, tmp_path: Path) -> None:
    gen = recorded.open("gen")
    path = traces.vllm_jsonl(gen, tmp_path / "dense.jsonl", dense=0)  # layer 0 dense, MoE layers 1..4
    run = import_trace("vllm", [path], recorded, "vllm-dense")
    assert run.manifest["dense_layers"] == [0]
    assert [r.layer for r in run.info.routers] == [1, 2, 3, 4]
    assert 0 not in set(run.assignments()["layer"])
    load = compute("load", run)
    assert load.groupby("layer")["count"].sum().tolist() == [len(gen.assignments()) // 4] * 4


def test_vllm_npz_round_trip(recorded: Store, tmp_path: Path) -> None:
    gen = recorded.open("gen")
    run = import_trace("vllm", traces.vllm_npz(gen, tmp_path), recorded, "vllm-npz", n_experts=N_EXPERTS)
    assert_same_routing(run, gen)
    assert {r.n_experts for r in run.info.routers} == {N_EXPERTS}


def test_sglang_jsonl_and_per_token_dump_round_trip(recorded: Store, tmp_path: Path) -> None:
    gen = recorded.open("gen")
    run = import_trace(
        "sglang", [traces.sglang_jsonl(gen, tmp_path / "s.jsonl")], recorded, "sg", top_k=2, n_experts=16
    )
    assert_same_routing(run, gen)
    assert_same_tables(run, gen, IDS_KINDS)
    prompt = recorded.open("prompt")
    dump = traces.sglang_per_token(prompt, tmp_path / "per_token.pt", N_EXPERTS)
    per_token = import_trace("sglang", [dump], recorded, "sg-dump", n_experts=N_EXPERTS)
    assert_same_routing(per_token, prompt)  # physical ids mapped back to logical ones
    assert_same_tables(per_token, prompt, IDS_KINDS)


def test_counts_only_imports_give_the_recordings_load(recorded: Store, tmp_path: Path) -> None:
    gen = recorded.open("gen")
    stat = import_trace(
        "sglang", [traces.sglang_stat(gen, tmp_path / "stat.pt", N_EXPERTS)], recorded, "sg-stat"
    )
    csv = import_trace(
        "llamacpp", [traces.llamacpp_csv(gen, tmp_path / "trace.csv")], recorded, "llama", n_experts=16
    )
    for run in (stat, csv):
        assert run.info.caps >= {"counts"}
        assert "ids" not in run.info.caps
        assert_same_tables(run, gen, ["load"])
        pd.testing.assert_frame_equal(compute("balance", run), compute("balance", gen))
    assert csv.info.engine == "llamacpp"
    with pytest.raises(
        InputError, match=r"^this llama.cpp import has expert counts only; coactivation needs"
    ):
        compute("coactivation", csv, layer=1)


def test_megatron_ranks_merge_without_token_ids(recorded: Store, tmp_path: Path) -> None:
    prompt = recorded.open("prompt")
    run = import_trace(
        "megatron", traces.megatron_jsonl(prompt, tmp_path), recorded, "mega", n_experts=N_EXPERTS
    )
    assert run.info.caps == {"ids", "ranks", "steps"}
    # rank files hold samples 0, 2 and 1: samples come in file order
    order = {0: 0, 1: 2, 2: 1}
    a = run.assignments().assign(sample=lambda f: f["sample"].map(order))
    b = prompt.assignments()
    keys = ["sample", "position", "layer", "rank"]
    merged = a.merge(b, on=keys, suffixes=("", "_rec"))
    assert len(merged) == len(b)
    assert (merged["expert"] == merged["expert_rec"]).all()
    assert_same_tables(run, prompt, ["load", "balance", "transitions", "paths"])
    with pytest.raises(InputError, match="vocabulary needs token ids"):
        compute("vocabulary", run)
    with pytest.raises(InputError, match="repeat needs token positions"):
        compute("repeat", run)
    with pytest.raises(InputError, match="specialization needs token ids"):
        compute("specialization", run, label="token_id")


def test_olmoe_round_trip(recorded: Store, tmp_path: Path, labels_file: Path) -> None:
    prompt = recorded.open("prompt")
    path = traces.olmoe_jsonl(prompt, tmp_path / "olmoe.jsonl")
    run = import_trace(
        "olmoe", [path], recorded, "olmoe", labels=labels_file, label_column="domain", n_experts=N_EXPERTS
    )
    assert_same_routing(run, prompt)
    assert_same_tables(run, prompt, IDS_KINDS)
    assert_same_tables(run, prompt, ["specialization", "nmi"], label="domain")


def test_show_prints_capabilities_and_old_runs_derive_theirs(
    recorded: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from routescope.cli import main

    gen = recorded.open("gen")
    assert gen.info.engine == "routescope"
    assert gen.info.caps == {"ids", "ranks", "gate_weights", "scores", "token_ids", "positions", "steps"}
    manifest = json.loads((gen.path / "manifest.json").read_text())
    for key in ("engine", "capabilities"):
        manifest.pop(key)
    old = routescope.store.RunManifest.from_dict({**manifest, "options": {"probs": True}})
    assert old.caps == gen.info.caps | {"probs"}
    path = traces.vllm_jsonl(gen, tmp_path / "v.jsonl")
    capsys.readouterr()
    assert main(["import", "vllm", str(path), "--store", str(recorded.path), "--name", "cli-v"]) == 0
    assert "cli-v" in recorded.runs()
    assert main(["show", "--store", str(recorded.path), "--run", "cli-v"]) == 0
    assert "source    vllm   knows ids, positions, ranks, steps, token_ids" in capsys.readouterr().out


def test_reports_and_figures_refuse_in_one_line_and_the_standard_set_skips(
    recorded: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from routescope.cli import main
    from routescope.figures.registry import standard_set

    gen = recorded.open("gen")
    run = import_trace("vllm", [traces.vllm_jsonl(gen, tmp_path / "v.jsonl")], recorded, "cli-refuse")
    base = ["--store", str(recorded.path), "--run", run.name]
    assert main(["report", *base, "--kind", "uncertainty"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "routescope: error: this vLLM import has expert ids only; "
        "uncertainty needs router probabilities (entropy, margin)\n"
    )
    assert main(["figure", *base, "--kind", "uncertainty", "--out", str(tmp_path / "u.svg")]) == 2
    assert "uncertainty needs router probabilities" in capsys.readouterr().err
    kinds = {figure.kind for figure in standard_set(run)}
    assert "load" in kinds
    assert not kinds & {"uncertainty", "uncertainty-histogram"}


def test_replay_counts_tokens_whose_expert_set_differs(recorded: Store, tmp_path: Path) -> None:
    gen = recorded.open("gen")
    path = traces.vllm_jsonl(gen, tmp_path / "v.jsonl")
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    experts = first["routed_experts"][2][1]
    first["routed_experts"][2][1] = [e for e in range(N_EXPERTS) if e not in experts][: len(experts)]
    first["routed_experts"][3][0] = experts_swapped = first["routed_experts"][3][0][::-1]  # same set
    assert len(set(experts_swapped)) == len(experts_swapped)
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    run = import_trace("vllm", [path], recorded, "replayed", n_experts=N_EXPERTS)
    replay = compute("replay", run, other=gen).iloc[0]
    assert (replay["tokens_differing"], replay["decisions_differing"]) == (1, 1)
    assert replay["share_differing"] == pytest.approx(1 / replay["tokens"])
    agreement = compute("agreement", run, other=gen).set_index("layer")
    assert agreement.loc[1, "top1_agreement"] == pytest.approx(1 - 1 / agreement.loc[1, "decisions"])
    assert agreement.loc[0, "topk_overlap"] == 1.0  # the reordered set still overlaps fully


def test_megatron_logits_sidecar_gives_probabilities(recorded: Store, tmp_path: Path) -> None:
    lm = routescope.load_model("bundled:moe-lm")
    probs = routescope.record(lm, TEXTS, store=recorded, name="probs", probs=True, progress=False)
    files = traces.megatron_jsonl(probs, tmp_path, logits=True)
    run = import_trace("megatron", files, recorded, "mega-logits", n_experts=N_EXPERTS)
    assert run.info.caps == {"ids", "ranks", "steps", "scores", "probs", "logits"}
    order = {0: 0, 1: 2, 2: 1}  # rank files hold samples 0, 2 and 1
    mine = run.decisions().assign(sample=lambda f: f["sample"].map(order))
    both = mine.merge(probs.decisions(), on=["sample", "position", "layer"], suffixes=("", "_rec"))
    assert len(both) == len(probs.decisions())
    for column in ("entropy", "margin", "max_prob"):  # bfloat16 logits: within 1 %
        np.testing.assert_allclose(both[column], both[f"{column}_rec"], rtol=0.02, atol=0.01)
    assert compute("uncertainty", run)["layer"].tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match="needs token positions"):
        compute("repeat", run)
