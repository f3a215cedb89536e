"""The run store's contract: exact columns and types, round trip, safe names, atomic publish, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import routescope
from routescope.hooks import LoadedModel
from routescope.store import (
    CorruptRunError,
    InvalidNameError,
    RunExistsError,
    RunNotFoundError,
    Store,
    StoreError,
)
from routescope.store.schema import SCHEMA_VERSION

TEXTS = ["def f(x):\n    return x + 1", "The cat sat on the mat."]


def _record(lm: LoadedModel, store: Store, name: str, **kwargs: object) -> routescope.Run:
    return routescope.record(lm, TEXTS, store=store, name=name, progress=False, **kwargs)  # type: ignore[arg-type]


def test_columns_and_types_are_the_contract(tiny_lm: LoadedModel, store: Store) -> None:
    run = _record(tiny_lm, store, "golden", labels={"domain": ["code", "prose"]})
    types = {
        t: {f.name: str(f.type) for f in pq.read_schema(run.table_path(t))} for t in run.manifest["tables"]
    }
    assert types["assignments"] == {
        "sample": "int32",
        "position": "int32",
        "step": "int32",
        "router": "int16",
        "layer": "int16",
        "call": "int16",
        "rank": "int16",
        "expert": "int32",
        "weight": "float",
        "dropped": "bool",
    }
    assert types["decisions"] == {
        "sample": "int32",
        "position": "int32",
        "step": "int32",
        "router": "int16",
        "layer": "int16",
        "call": "int16",
        "entropy": "float",
        "margin": "float",
        "max_prob": "float",
    }
    assert types["tokens"] == {
        "sample": "int32",
        "position": "int32",
        "token_id": "int32",
        "token": "string",
        "generated": "bool",
        "stack": "string",
        "row": "int32",
        "col": "int32",
    }
    assert types["samples"] == {
        "sample": "int32",
        "text": "string",
        "n_tokens": "int32",
        "n_generated": "int32",
        "generated": "string",
        "domain": "string",
    }
    assert types["steps"] == {"step": "int32", "timestep": "double", "sigma": "double"}


def test_round_trip_counts_and_manifest(tiny_lm: LoadedModel, store: Store) -> None:
    run = _record(tiny_lm, store, "rt", labels={"domain": ["code", "prose"]})
    reopened = Store(store.path).open("rt")
    n_tokens = [len(tiny_lm.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert reopened.samples()["n_tokens"].tolist() == n_tokens
    assert reopened.samples()["domain"].tolist() == ["code", "prose"]
    assert len(reopened.tokens()) == sum(n_tokens)
    assert len(reopened.decisions()) == sum(n_tokens) * 4  # 4 MoE layers
    assert len(reopened.assignments()) == sum(n_tokens) * 4 * 2  # top-2
    m = reopened.manifest
    assert m["status"] == "complete"
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["rows"] == {
        "samples": 2,
        "tokens": sum(n_tokens),
        "assignments": sum(n_tokens) * 8,
        "decisions": sum(n_tokens) * 4,
        "steps": 1,
    }
    assert [r["path"] for r in m["routers"]] == [f"model.layers.{i}.mlp.gate" for i in range(4)]
    assert m["model"]["family"] == "mixtral"
    assert m["model"]["spec"] == "bundled:tiny-mixtral"
    assert set(m["packages"]) >= {"torch", "transformers", "nnsight", "routescope"}
    assert store.runs() == ["rt"]
    assert run.path == reopened.path
    # tokens text decodes back to the input
    tokens = reopened.tokens().sort_values(["sample", "position"])
    assert "".join(tokens[tokens["sample"] == 1]["token"]) == TEXTS[1]


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "..", ".hidden", "", "x" * 200, "a\nb", "a..b"])
def test_bad_run_names_are_refused_and_store_untouched(tiny_lm: LoadedModel, store: Store, name: str) -> None:
    with pytest.raises(InvalidNameError):
        _record(tiny_lm, store, name)
    assert not store.path.exists()


def test_existing_run_refused_unless_overwrite(tiny_lm: LoadedModel, store: Store) -> None:
    first = _record(tiny_lm, store, "same")
    before = first.assignments()
    with pytest.raises(RunExistsError):
        routescope.record(tiny_lm, ["other text"], store=store, name="same", progress=False)
    assert Store(store.path).open("same").assignments().equals(before)
    replaced = routescope.record(
        tiny_lm, ["other text"], store=store, name="same", overwrite=True, progress=False
    )
    assert replaced.samples()["text"].tolist() == ["other text"]
    assert store.runs() == ["same"]
    assert store.incomplete() == []


def test_store_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store(target)


def test_interrupted_recording_is_incomplete_and_earlier_runs_survive(
    tiny_lm: LoadedModel, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = _record(tiny_lm, store, "earlier")
    before = earlier.assignments()
    from routescope.hooks import recorder

    calls = {"n": 0}
    original = recorder._Session.capture

    def interrupt_second_batch(self: object, units: list) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, units)  # type: ignore[arg-type]

    monkeypatch.setattr(recorder._Session, "capture", interrupt_second_batch)
    with pytest.raises(KeyboardInterrupt):
        routescope.record(tiny_lm, TEXTS * 3, store=store, name="partial", batch_size=2, progress=False)
    assert store.runs() == ["earlier"]
    assert store.incomplete() == ["partial"]
    manifest = json.loads((store.incomplete_path("partial") / "manifest.json").read_text())
    assert manifest["status"] == "incomplete"
    with pytest.raises(RunNotFoundError, match="interrupted"):
        store.open("partial")
    with pytest.raises(RunExistsError, match="interrupted"):
        routescope.record(tiny_lm, TEXTS, store=store, name="partial", progress=False)
    assert Store(store.path).open("earlier").assignments().equals(before)
    assert store.clean() == ["partial"]
    assert store.incomplete() == []


def test_truncated_parquet_gives_one_line_error(tiny_lm: LoadedModel, store: Store) -> None:
    run = _record(tiny_lm, store, "bad")
    path = run.table_path("assignments")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptRunError, match=r"assignments\.parquet") as info:
        store.open("bad").assignments()
    assert "\n" not in str(info.value)


def test_foreign_parquet_is_named(tiny_lm: LoadedModel, store: Store) -> None:
    run = _record(tiny_lm, store, "foreign")
    pq.write_table(pa.table({"a": [1, 2]}), run.table_path("decisions"))
    with pytest.raises(CorruptRunError, match=r"decisions\.parquet.*foreign"):
        store.open("foreign").decisions()


def test_future_schema_version_and_missing_fields(tiny_lm: LoadedModel, store: Store) -> None:
    run = _record(tiny_lm, store, "future")
    manifest_path = run.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(CorruptRunError, match="upgrade routescope"):
        store.open("future")
    del manifest["routers"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptRunError, match="lacks routers"):
        store.open("future")
    assert store.runs() == []
    assert store.damaged() == ["future"]


def test_label_column_colliding_with_core_column(tiny_lm: LoadedModel, store: Store) -> None:
    with pytest.raises(routescope.RouteScopeError, match="collide"):
        _record(tiny_lm, store, "clash", labels={"expert": ["a", "b"]})
    assert store.runs() == []
    assert store.incomplete() == []
