"""A source written outside RouteScope records through the one driver into a valid run.

The planted source below is what a new source (an importer of engine traces, say) would write: routers,
batches of real router rows built with the recorders' own table builders, dimension tables and manifest
facts. The driver supplies the opening checks, the manifest, the writer and the progress.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from routescope.hooks import RunExistsError, Store
from routescope.hooks.dimensions import samples_table, steps_table
from routescope.hooks.driver import record_source
from routescope.hooks.manifest import ManifestFacts
from routescope.hooks.normalise import normalise
from routescope.hooks.routers import RouterSpec
from routescope.hooks.source import BaseSource, Plan, Sink, Source
from routescope.hooks.tables import router_call_tables, token_table
from routescope.hooks.units import Layout

N_EXPERTS, TOKENS_PER_SAMPLE, SAMPLES_PER_BATCH = 4, 3, 2


class PlantedSource(BaseSource):
    """Two batches of two samples; the top-1 expert of each token is (sample + position) mod 4."""

    def __init__(self, batches: int = 2, fail_at: int | None = None) -> None:
        self.labels = ["topic"]
        self.n_batches, self.fail_at = batches, fail_at
        self.spec = RouterSpec(
            id=0,
            path="layers.0.gate",
            layer=0,
            call_count=1,
            kind="ffn",
            stack="decoder",
            n_experts=4,
            top_k=2,
        )

    def prepare(self) -> Plan:
        return Plan(batches=self.n_batches, units=self.n_batches)

    def routers(self) -> list[RouterSpec]:
        return [self.spec]

    def manifest_facts(self) -> ManifestFacts:
        return ManifestFacts(
            kind="text",
            model={"spec": "planted"},
            tokenizer=None,
            labels=self.labels,
            seed=7,
            options={"probs": False},
        )

    def batches(self, sink: Sink) -> Iterator[None]:
        for index in range(self.n_batches):
            if index == self.fail_at:
                raise RuntimeError("the trace ended early")
            samples = torch.arange(SAMPLES_PER_BATCH) + index * SAMPLES_PER_BATCH
            sample = samples.repeat_interleave(TOKENS_PER_SAMPLE)
            position = torch.arange(TOKENS_PER_SAMPLE).repeat(SAMPLES_PER_BATCH)
            top1 = (sample + position) % N_EXPERTS
            logits = torch.nn.functional.one_hot(top1, N_EXPERTS).float() * 4.0
            weights, indices = logits.softmax(-1).topk(2, dim=-1)
            layout = Layout(sample=sample, position=position, real=torch.ones(len(sample), dtype=torch.bool))
            decoded = normalise((logits, weights, indices), self.spec.rule)
            assignments, decisions = router_call_tables(
                decoded, layout, self.spec, step=0, call=0, with_probs=False
            )
            sink.write("assignments", assignments)
            sink.write("decisions", decisions)
            sink.advance()
            yield

    def dimensions(self) -> Iterator[tuple[str, pa.Table]]:
        n = self.n_batches * SAMPLES_PER_BATCH
        yield "steps", steps_table([0])
        yield (
            "samples",
            samples_table(
                np.arange(n),
                n_tokens=np.full(n, TOKENS_PER_SAMPLE),
                labels={"topic": [f"t{i % 2}" for i in range(n)]},
            ),
        )
        for sample in range(n):
            ids = range(TOKENS_PER_SAMPLE)
            yield "tokens", token_table(sample, ids, ids, str, generated=False, stack="decoder")


def test_custom_source_records_a_valid_run(tmp_path: Path) -> None:
    source = PlantedSource()
    assert isinstance(source, Source)
    ticks: list[tuple[int, int]] = []
    run = record_source(
        source,
        store=tmp_path / "store",
        name="planted",
        progress=False,
        on_progress=lambda d, t: ticks.append((d, t)),
    )
    assert ticks == [(1, 2), (2, 2)]
    run = Store(tmp_path / "store").open("planted")
    run.verify()
    manifest = run.manifest
    assert (manifest["status"], manifest["kind"], manifest["seed"]) == ("complete", "text", 7)
    assert manifest["routers"] == [source.spec.to_manifest()]
    assert manifest["labels"] == ["topic"]
    assert manifest["rows"]["decisions"] == 12
    top1 = run.assignments().query("rank == 0")
    assert (top1["expert"] == (top1["sample"] + top1["position"]) % N_EXPERTS).all()
    assert run.samples()["topic"].tolist() == ["t0", "t1", "t0", "t1"]
    assert len(run.tokens()) == 12


def test_driver_refuses_a_taken_name_and_keeps_a_failed_run_out(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    record_source(PlantedSource(), store=store, name="taken", progress=False)
    with pytest.raises(
        RunExistsError, match=r"run 'taken' already exists in .*; choose another name or overwrite it"
    ):
        record_source(PlantedSource(), store=store, name="taken", progress=False)
    with pytest.raises(RuntimeError, match="ended early"):
        record_source(PlantedSource(fail_at=1), store=store, name="broken", progress=False)
    assert store.runs() == ["taken"]
    assert store.incomplete() == ["broken"]
    replaced = record_source(
        PlantedSource(batches=1), store=store, name="taken", overwrite=True, progress=False
    )
    assert replaced.manifest["rows"]["samples"] == SAMPLES_PER_BATCH
