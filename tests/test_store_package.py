"""`routescope.store`: torch-free at import, and the typed manifest (`RunManifest`, `RouterInfo`) checked
on read and on write, with every key a writer put there kept."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from routescope.store import CorruptRunError, RouterInfo, RunManifest, Store, StoreError
from routescope.store.manifest import ManifestError
from routescope.store.schema import MANIFEST_FILE
from tests.planted import planted_run

HEAVY = ("torch", "transformers", "nnsight", "streamlit", "plotly")


def test_store_imports_no_heavy_package(tmp_path: Path) -> None:
    probe = (
        "import sys, routescope.store, routescope.store.shards, routescope.store.writer;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_hooks_reexports_the_store_for_compatibility() -> None:
    import routescope
    import routescope.hooks as hooks
    import routescope.store as store

    for name in ("Run", "Store", "InputError", "RouteScopeError", "RunExistsError", "CorruptRunError"):
        assert getattr(hooks, name) is getattr(store, name)
    assert routescope.Run is store.Run


def test_manifest_round_trips_every_key(store: Store) -> None:
    run = planted_run(store, "planted", experts={0: [[0, 1], [2, 3]], 3: [[1, 0], [3, 2]]})
    info = run.info
    assert isinstance(info, RunManifest)
    assert info.to_dict() == run.manifest
    assert RunManifest.from_dict(info.to_dict()) == info
    assert all(isinstance(r, RouterInfo) for r in info.routers)
    assert [r.layer for r in info.routers] == [0, 3]
    assert info.n_experts == 4
    assert not info.is_diffusion
    assert not info.probs
    assert info.label_columns == run.label_columns == []
    assert info.patch_grid is None
    assert run.routers == [r.to_dict() for r in info.routers]


def test_unknown_keys_survive_and_typed_fields_are_read(store: Store) -> None:
    run = planted_run(store, "planted", experts={0: [[0, 1]]})
    data = dict(run.manifest)
    data.update(
        kind="diffusion",
        patch_grid=[4, 6],
        future_field={"nested": [1, 2]},
        options={"probs": True, "steps": 5},
    )
    data["routers"] = [{**data["routers"][0], "experimental": 7}]
    info = RunManifest.from_dict(data)
    assert info.is_diffusion
    assert info.patch_grid == (4, 6)
    assert info.probs
    assert info.options["steps"] == 5
    assert info.extra == {"future_field": {"nested": [1, 2]}}
    assert info.routers[0].extra == {"experimental": 7}
    assert info.to_dict() == data
    assert json.loads(json.dumps(info.to_dict())) == data


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"routers": [{"id": 0, "layer": 0, "top_k": 2}]}, "a router lacks an integer id"),
        ({"patch_grid": [4]}, "patch_grid is not a pair of integers"),
        ({"kind": 3}, "kind is not a string"),
        ({"tables": ["samples"]}, "tables lacks tokens"),
    ],
)
def test_a_wrong_manifest_is_refused_on_read(store: Store, change: dict, problem: str) -> None:
    run = planted_run(store, "planted", experts={0: [[0, 1]]})
    with pytest.raises(ManifestError, match=problem):
        RunManifest.from_dict({**run.manifest, **change})
    (run.path / MANIFEST_FILE).write_text(json.dumps({**run.manifest, **change}), encoding="utf-8")
    with pytest.raises(CorruptRunError, match=problem):
        store.open("planted")


def test_a_wrong_manifest_is_refused_on_write(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.planted as planted

    real = planted.RunWriter

    class Broken(real):  # type: ignore[misc, valid-type]
        def publish(self, extra: dict | None = None) -> Path:
            self.manifest["routers"] = [{"id": 0, "layer": "zero", "n_experts": 4, "top_k": 2}]
            return super().publish(extra)

    monkeypatch.setattr(planted, "RunWriter", Broken)
    with pytest.raises(StoreError, match="a router lacks an integer id"):
        planted_run(store, "broken", experts={0: [[0, 1]]})
    assert not store.exists("broken")


def test_manifest_dataclasses_are_frozen() -> None:
    router = RouterInfo(id=0, layer=0, n_experts=4, top_k=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        router.layer = 1  # type: ignore[misc]
    assert RouterInfo.from_dict(router.to_dict()) == router
