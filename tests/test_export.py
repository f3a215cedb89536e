"""`routescope export` and `routescope.exporters.export_run`: SGLang EPLB `logical_count` JSON, OLMoE
JSONL and Megatron RouterTracer JSONL, each file's structure and values checked against the run's own
assignment rows; atomic writes and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import routescope
from routescope import exporters
from routescope.cli import main
from routescope.exporters import EXPORT_KINDS, export_run, logical_count
from routescope.store import InputError, Run, Store
from tests.planted import planted_run
from tests.planted_claims import write_run
from tests.test_placement import top1


def planted_text(store: Store, name: str = "text", steps: int = 1) -> tuple[Run, np.ndarray, np.ndarray]:
    """3 layers, 2 samples of 5 positions, top-2 of 6 experts at `steps` steps, random but planted."""
    rng = np.random.default_rng(3)
    experts = np.stack(
        [
            [[[rng.permutation(6)[:2] for _ in range(5)] for _ in range(steps)] for _ in range(2)]
            for _ in range(3)
        ]
    )  # [layer, sample, step, position, rank]
    tokens = rng.integers(0, 100, size=(2, 5))

    run = write_run(
        store,
        name,
        experts=experts,
        token_ids=tokens,
        samples=pd.DataFrame(index=range(2)),
        n_experts=6,
        manifest={"options": {"max_new_tokens": 0}},
    )
    return run, experts, tokens


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sglang_logical_count_is_the_load_with_dense_rows(store: Store, tmp_path: Path) -> None:
    run = planted_run(store, "deep", experts={1: top1([3, 1, 0, 0]), 3: top1([0, 0, 2, 2])})
    out = export_run("sglang-eplb", run, tmp_path / "eplb.json")
    data = json.loads(out.read_text())
    assert list(data) == ["logical_count"]
    assert data["logical_count"] == [[0, 0, 0, 0], [3, 1, 0, 0], [0, 0, 0, 0], [0, 0, 2, 2]]
    wider = export_run("sglang-eplb", run, tmp_path / "wide.json", num_layers=6)
    assert np.asarray(json.loads(wider.read_text())["logical_count"]).shape == (6, 4)
    rows = run.assignments()
    brute = np.zeros((4, 4), dtype=int)
    np.add.at(brute, (rows["layer"], rows["expert"]), 1)
    np.testing.assert_array_equal(logical_count(run), brute)
    with pytest.raises(InputError, match="num_layers=3 is fewer than the run's MoE layers reach"):
        export_run("sglang-eplb", run, tmp_path / "short.json", num_layers=3)


def test_olmoe_jsonl_is_token_rank_layer(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporters, "BATCH", 1)  # one sample per query: the batches join up in order
    run, experts, tokens = planted_text(store)
    records = lines(export_run("olmoe-jsonl", run, tmp_path / "olmoe.jsonl"))
    assert len(records) == 2
    for sample, record in enumerate(records):
        assert set(record) == {"input_ids", "exp_ids"}
        assert record["input_ids"] == tokens[sample].tolist()
        grid = np.asarray(record["exp_ids"])
        assert grid.shape == (5, 2, 3)  # T × k × L
        np.testing.assert_array_equal(grid, experts[:, sample, 0].transpose(1, 2, 0))
    diffusion = planted_text(store, "steps", steps=2)[0]
    with pytest.raises(InputError, match="olmoe-jsonl needs every position of a sample routed"):
        export_run("olmoe-jsonl", diffusion, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_megatron_jsonl_has_one_record_per_step_and_layer(store: Store, tmp_path: Path) -> None:
    run, experts, _ = planted_text(store, "two-steps", steps=2)
    records = lines(export_run("megatron-jsonl", run, tmp_path / "router_trace_rank0.jsonl"))
    assert [(r["step"], r["layer"]) for r in records] == [(s, layer) for s in range(2) for layer in range(3)]
    for record in records:
        assert {k: record[k] for k in ("stage", "block", "rank", "num_tokens", "topk")} == {
            "stage": "pre_dispatch",
            "block": "decoder",
            "rank": 0,
            "num_tokens": 10,
            "topk": 2,
        }
        expected = experts[record["layer"], :, record["step"]].reshape(10, 2)  # (sample, position) order
        assert record["top_indices"] == expected.tolist()


def test_export_writes_atomically_and_refuses_in_one_line(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _, _ = planted_text(store)
    out = tmp_path / "trace.jsonl"
    base = ["export", "--store", str(store.path), "--run", "text", "--out", str(out)]
    assert main([*base, "--kind", "megatron-jsonl"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote megatron-jsonl of run 'text' to {out}"
    before = out.read_text()
    assert main([*base, "--kind", "olmoe-jsonl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"routescope: error: {out} exists; choose another --out or overwrite it (pass --overwrite)"
    assert out.read_text() == before
    assert main([*base, "--kind", "olmoe-jsonl", "--overwrite"]) == 0
    assert len(lines(out)) == 2
    assert main([*base[:4], "nope", *base[5:], "--kind", "sglang-eplb"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main([*base, "--kind", "megatron-jsonl", "--overwrite", "--num-layers", "4"]) == 2
    assert "megatron-jsonl takes no num_layers" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "--store",
                str(store.path),
                "--run",
                "text",
                "--kind",
                "sglang-eplb",
                "--out",
                str(tmp_path / "no" / "f.json"),
            ]
        )
        == 2
    )
    assert "folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    with pytest.raises(InputError, match="unknown export kind 'vllm'"):
        export_run("vllm", run, tmp_path / "v.json")
    assert set(EXPORT_KINDS) == {"sglang-eplb", "olmoe-jsonl", "megatron-jsonl"}


def test_export_of_a_recorded_generation_trims_the_unrouted_last_token(
    tiny_lm: routescope.LoadedModel, store: Store, tmp_path: Path
) -> None:
    run = routescope.record(
        tiny_lm, ["def f(x):", "The cat"], store=store, name="gen", max_new_tokens=2, progress=False
    )
    records = lines(export_run("olmoe-jsonl", run, tmp_path / "gen.jsonl"))
    rows = run.assignments()
    tokens = run.tokens()
    n_layers = len(run.info.routers)
    for sample, record in enumerate(records):
        routed = rows[rows["sample"] == sample]
        positions = sorted(routed["position"].unique())
        assert len(record["input_ids"]) == len(positions) == int((tokens["sample"] == sample).sum()) - 1
        assert np.asarray(record["exp_ids"]).shape[1:] == (run.info.routers[0].top_k, n_layers)
        first = routed[(routed["position"] == 0) & (routed["rank"] == 0)].sort_values("layer")
        assert np.asarray(record["exp_ids"])[0, 0].tolist() == first["expert"].tolist()
    traced = lines(export_run("megatron-jsonl", run, tmp_path / "gen-trace.jsonl"))
    assert sum(r["num_tokens"] for r in traced) == len(rows) // run.info.routers[0].top_k
