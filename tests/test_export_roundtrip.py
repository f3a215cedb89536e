"""Export → import → equal: OLMoE and Megatron JSONL written by `routescope.exporters` read back by
`routescope.importers` give the same routing, a second export of the imported run is the same file, and
a recording of the bundled tiny Mixtral agrees with its own round trip on every decision (1.0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import routescope
from routescope.analysis import agreement, compute
from routescope.exporters import export_run
from routescope.importers import import_trace
from routescope.store import InputError, Store
from tests.test_export import planted_text


def test_olmoe_round_trip_keeps_tokens_and_every_expert(store: Store, tmp_path: Path) -> None:
    run, _, tokens = planted_text(store)
    first = export_run("olmoe-jsonl", run, tmp_path / "olmoe.jsonl")
    back = import_trace("olmoe", [first], store, "back", n_experts=6)
    keys = ["sample", "position", "layer", "rank"]
    original = run.assignments().sort_values(keys)[[*keys, "expert"]].reset_index(drop=True)
    imported = back.assignments().sort_values(keys)[[*keys, "expert"]].reset_index(drop=True)
    assert original.astype("int64").equals(imported.astype("int64"))
    ids = back.tokens().sort_values(["sample", "position"])["token_id"].to_numpy()
    np.testing.assert_array_equal(ids, tokens.reshape(-1))
    again = export_run("olmoe-jsonl", back, tmp_path / "again.jsonl")
    assert again.read_text() == first.read_text()


def test_megatron_round_trip_keeps_every_step_and_layer(store: Store, tmp_path: Path) -> None:
    run, experts, _ = planted_text(store, "steps", steps=2)
    first = export_run("megatron-jsonl", run, tmp_path / "router_trace_rank0.jsonl")
    back = import_trace("megatron", [first], store, "back", n_experts=6)
    rows = back.assignments().sort_values(["sample", "layer", "position", "rank"])
    for step in range(2):  # one imported sample per (rank, step), its tokens in the exported order
        for layer in range(3):
            part = rows[(rows["sample"] == step) & (rows["layer"] == layer)]
            expected = experts[layer, :, step].reshape(-1)  # (sample, position, rank) order
            np.testing.assert_array_equal(part["expert"].to_numpy(), expected)
    again = export_run("megatron-jsonl", back, tmp_path / "again.jsonl")
    assert again.read_text() == first.read_text()
    for kind, params in (("placement", {"devices": 2, "replicas": 1}), ("hot-set", {}), ("coverage", {})):
        assert compute(kind, back, **params).equals(compute(kind, run, **params))  # an ids-only import
    assert compute("drift", run, other=back)["tv_distance"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(
        InputError, match="this Megatron import has expert ids only; olmoe-jsonl needs token ids"
    ):
        export_run("olmoe-jsonl", back, tmp_path / "x.jsonl")


def test_a_recording_agrees_with_its_round_trip_on_every_decision(
    tiny_lm: routescope.LoadedModel, store: Store, tmp_path: Path
) -> None:
    run = routescope.record(tiny_lm, ["def f(x):", "The cat sat."], store=store, name="rec", progress=False)
    n_experts = run.info.routers[0].n_experts
    olmoe = import_trace(
        "olmoe", [export_run("olmoe-jsonl", run, tmp_path / "o.jsonl")], store, "o", n_experts=n_experts
    )
    trace = export_run("megatron-jsonl", run, tmp_path / "router_trace_rank0.jsonl")
    megatron = import_trace("megatron", [trace], store, "m", n_experts=n_experts)
    decisions = len(run.decisions()) // len(run.info.routers)
    table = agreement(run, olmoe)
    assert table["decisions"].tolist() == [decisions] * len(run.info.routers)
    assert table["top1_agreement"].tolist() == [1.0] * len(table)
    assert table["topk_overlap"].tolist() == [1.0] * len(table)
    original = run.assignments().sort_values(["layer", "sample", "position", "rank"])
    imported = megatron.assignments().sort_values(["layer", "sample", "position", "rank"])
    np.testing.assert_array_equal(original["expert"].to_numpy(), imported["expert"].to_numpy())


def test_sglang_logical_count_reads_back_as_the_load(store: Store, tmp_path: Path) -> None:
    """The JSON as SGLang's `init_by_eplb` takes it (2-D, a steps dimension added), saved as the stat dump
    SGLang's recorder writes, imports as a counts-only run with the same load and placement."""
    import json

    import torch

    run, _, _ = planted_text(store, "counts")
    exported = json.loads(export_run("sglang-eplb", run, tmp_path / "eplb.json").read_text())
    counts = torch.tensor(exported["logical_count"]).unsqueeze(0)  # what init_by_eplb does with 2-D input
    torch.save({"rank": 0, "logical_count": counts}, tmp_path / "stat.pt")
    back = import_trace("sglang", [tmp_path / "stat.pt"], store, "stat")
    assert "counts" in back.info.caps
    for kind, params in (("load", {}), ("placement", {"devices": 3, "replicas": 2}), ("hot-set", {})):
        assert compute(kind, back, **params).equals(compute(kind, run, **params)), kind
