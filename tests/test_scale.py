"""Past one machine: remote traces, device maps and sharded recording all give the run a local,
single-process recording gives.

- Remote: nnsight's local simulation (`remote="local"`) serialises the trace and runs it with this
  project's modules hidden, as a server would; the run must equal the local one, family by family. The
  real service's failure modes (no key, unreachable host, model not hosted) are one-line errors, checked
  against a closed port and a small HTTP server that answers `/status` like NDIF.
- Device map: a checkpoint loaded with accelerate's `device_map` (on CPU here) records the same run.
- Shards: parts recorded separately (in-process, and as 2 concurrent CLI processes) merge into the run.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import routescope
from routescope.cli import main
from routescope.hooks import LoadedModel
from routescope.models.tokenizers import byte_tokenizer
from routescope.store import InputError, Run, RunExistsError, Store
from routescope.store.shards import SHARDS_DIR, merge, parse_shard
from tests.tiny_families import tiny_model

TEXTS = ["short", "a somewhat longer sentence to force padding", "def f(x): return x * 2", "hi", '{"a": 1}']
LABELS = {"domain": ["prose", "prose", "code", "prose", "json"]}
KEYS = ["sample", "step", "router", "call", "position", "rank", "stack"]
FACTS = ("assignments", "decisions", "tokens", "samples", "steps")


def _table(run: Run, table: str) -> pd.DataFrame:
    frame = getattr(run, table)()
    keys = [k for k in KEYS if k in frame.columns] or list(frame.columns[:1])
    return frame.sort_values(keys).reset_index(drop=True)


def assert_same_run(a: Run, b: Run, atol: float = 0.0) -> None:
    """Every table equal (rows in key order); float columns within `atol`."""
    for table in FACTS:
        x, y = _table(a, table), _table(b, table)
        assert len(x) == len(y) > 0, table
        pd.testing.assert_frame_equal(x, y, check_exact=atol == 0, atol=atol, rtol=0)


# --- remote: nnsight's local simulation of the remote path ---------------------------------------------


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the traces that went through nnsight's local simulation of the remote backend (it still
    runs: the spy only counts, so a passing test proves the serialise/deserialise path was taken)."""
    from nnsight.intervention.backends.local import LocalSimulationBackend

    calls: list[int] = []
    run = LocalSimulationBackend.__call__

    def counted(self: LocalSimulationBackend, tracer: object) -> None:
        calls.append(1)
        run(self, tracer)

    monkeypatch.setattr(LocalSimulationBackend, "__call__", counted)
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss", "switch_transformers"])
def test_remote_trace_equals_local(store: Store, family: str, simulated: list[int]) -> None:
    model = LoadedModel(model=tiny_model(family), tokenizer=byte_tokenizer())
    local = routescope.record(model, TEXTS, store=store, name="local", probs=True, progress=False)
    remote = routescope.record(
        model, TEXTS, store=store, name="remote", probs=True, progress=False, remote="local"
    )
    assert remote.manifest["options"]["remote"] == "local"
    assert len(simulated) == 1  # five short texts: one batch, one remote trace
    assert_same_run(local, remote)


def test_remote_generation_equals_local(tiny_lm: LoadedModel, store: Store, simulated: list[int]) -> None:
    kwargs = {"store": store, "max_new_tokens": 3, "progress": False}
    local = routescope.record(tiny_lm, TEXTS[:3], name="local", **kwargs)
    remote = routescope.record(tiny_lm, TEXTS[:3], name="remote", remote="local", **kwargs)
    assert sorted(local.steps()["step"]) == [0, 1, 2]
    assert len(simulated) == 2  # the dry forward pass that describes the routers, then one generation
    assert_same_run(local, remote)


def test_cli_remote_local(tmp_path: Path) -> None:
    store = tmp_path / "store"
    base = ["record", "bundled:tiny-mixtral", "--store", str(store), "--text", TEXTS[1], "--text", TEXTS[2]]
    assert main([*base, "--name", "here"]) == 0
    assert main([*base, "--name", "there", "--remote", "local"]) == 0
    runs = Store(store)
    assert_same_run(runs.open("here"), runs.open("there"))


def _record_remote(tmp_path: Path, remote: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    argv = [
        "record",
        "org/tiny-moe",
        "--remote",
        remote,
        "--store",
        str(tmp_path),
        "--name",
        "r",
        "--text",
        "x",
    ]
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_remote_without_a_key_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nnsight import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    code, err = _record_remote(tmp_path, "ndif", capsys)
    assert code == 2
    assert err.startswith("routescope: error: remote recording needs an NDIF API key: set NDIF_API_KEY")
    assert "\n" not in err


def test_unreachable_service_fails_fast_and_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NDIF_API_KEY", "test-key")
    code, err = _record_remote(tmp_path, "http://127.0.0.1:9", capsys)  # discard port: nothing listens
    assert code == 2
    assert err.startswith("routescope: error: NDIF at http://127.0.0.1:9 is not reachable (")
    assert "\n" not in err


@pytest.fixture
def fake_ndif() -> Iterator[tuple[str, list[dict]]]:
    """An HTTP server answering `/status` like NDIF with `org/hosted-moe` running; records requests."""
    seen: list[dict] = []

    class Status(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "key": self.headers.get("ndif-api-key")})
            body = json.dumps(
                {
                    "deployments": {
                        "a": {"repo_id": "org/hosted-moe", "application_state": "RUNNING"},
                        "b": {"repo_id": "org/cold-moe", "application_state": "DEPLOYING"},
                    }
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_model_not_hosted_names_what_is(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_ndif: tuple[str, list[dict]],
) -> None:
    url, seen = fake_ndif
    monkeypatch.setenv("NDIF_API_KEY", "test-key")
    code, err = _record_remote(tmp_path, url, capsys)
    assert code == 2
    assert err == (
        f"routescope: error: org/tiny-moe is not hosted on NDIF at {url} right now; running: org/hosted-moe "
        "(see nnsight.status())"
    )
    assert seen == [{"path": "/status", "key": "test-key"}]


def test_hosted_model_then_needs_its_hub_config(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_ndif: tuple[str, list[dict]],
) -> None:
    url, _ = fake_ndif
    monkeypatch.setenv("NDIF_API_KEY", "test-key")
    argv = [
        "record",
        "org/hosted-moe",
        "--remote",
        url,
        "--store",
        str(tmp_path),
        "--name",
        "r",
        "--text",
        "x",
    ]
    assert main(argv) == 2  # hosted: it goes on to build the architecture, whose config is offline here
    err = capsys.readouterr().err.strip()
    assert err.startswith("routescope: error: cannot read the config of 'org/hosted-moe' from the hub: ")
    assert "\n" not in err


def test_remote_takes_hub_ids_and_the_nnsight_engine(tiny_lm: LoadedModel, store: Store) -> None:
    with pytest.raises(routescope.RouteScopeError, match="remote recording takes a hub id"):
        routescope.load_model("bundled:tiny-mixtral", remote=True)
    with pytest.raises(InputError, match="use engine='nnsight'"):
        routescope.record(tiny_lm, TEXTS, store=store, name="x", engine="hooks", remote="local")


# --- large local models: accelerate device maps --------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-olmoe"
    tiny_model("olmoe").save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("device_map", ["auto", "cpu"])
def test_device_map_records_the_same_run(checkpoint: Path, store: Store, device_map: str) -> None:
    plain = routescope.record(routescope.load_model(str(checkpoint)), TEXTS, store=store, name="plain")
    mapped_model = routescope.load_model(str(checkpoint), device_map=device_map)
    assert {str(p.device) for p in mapped_model.model.parameters()} == {"cpu"}
    mapped = routescope.record(mapped_model, TEXTS, store=store, name="mapped")
    assert_same_run(plain, mapped)


def test_device_map_loads_in_the_dtype_asked(checkpoint: Path, store: Store) -> None:
    loaded = routescope.load_model(str(checkpoint), device_map="auto", dtype="bfloat16")
    assert {p.dtype for p in loaded.model.parameters()} == {__import__("torch").bfloat16}
    run = routescope.record(loaded, TEXTS, store=store, name="bf16", progress=False)
    assert run.manifest["model"]["dtype"] == "bfloat16"
    assert run.decisions()["sample"].nunique() == len(TEXTS)


def test_bundled_model_with_a_device_map(tiny_lm: LoadedModel, store: Store) -> None:
    mapped = routescope.load_model("bundled:tiny-mixtral", device_map="cpu")
    a = routescope.record(tiny_lm, TEXTS, store=store, name="a", progress=False)
    b = routescope.record(mapped, TEXTS, store=store, name="b", progress=False)
    assert_same_run(a, b)
    with pytest.raises(routescope.RouteScopeError, match="give --device or --device-map, not both"):
        routescope.load_model("bundled:tiny-mixtral", device_map="cpu", device="cpu")


# --- sharded recording -------------------------------------------------------------------------------


def test_shard_spec() -> None:
    assert parse_shard("1/3").samples(8) == [1, 4, 7]
    assert str(parse_shard((0, 2))) == "0/2"
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)


def test_shards_merge_into_the_single_process_run(tiny_lm: LoadedModel, store: Store) -> None:
    options = {"store": store, "labels": LABELS, "probs": True, "max_new_tokens": 2, "progress": False}
    single = routescope.record(tiny_lm, TEXTS, name="single", **options)
    parts = [routescope.record(tiny_lm, TEXTS, name="sharded", shard=f"{i}/3", **options) for i in range(3)]
    assert [sorted(p.samples()["sample"]) for p in parts] == [[0, 3], [1, 4], [2]]
    assert store.runs() == ["single"]  # parts are not runs until merged
    merged = merge(store, "sharded")
    assert merged.manifest["shards"] == 3
    assert merged.manifest["options"] == single.manifest["options"]
    assert_same_run(single, merged, atol=1e-5)  # batches differ: padding moves floats in the last bits
    assert merged.samples()["domain"].tolist() == LABELS["domain"]
    assert store.runs() == ["sharded", "single"]
    assert not (store.path / SHARDS_DIR / "sharded").exists()


def test_merge_refuses_missing_shards_and_existing_runs(
    tiny_lm: LoadedModel, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    routescope.record(tiny_lm, TEXTS, store=store, name="s", shard="0/2", progress=False)
    assert main(["runs", "--store", str(store.path)]) == 0  # the listing shows the pending shards
    assert "s\tshards\t(1 of 2 shard(s) finished, 0 unfinished; publish them with `routescope merge" in (
        capsys.readouterr().out
    )
    with pytest.raises(InputError, match=r"shard\(s\) 1/2 of 's' are not finished"):
        merge(store, "s")
    with pytest.raises(routescope.RouteScopeError, match="no finished shards of 'other'"):
        merge(store, "other")
    with pytest.raises(InputError, match="shard 5/6 has no inputs: 5 inputs for 6 shards"):
        routescope.record(tiny_lm, TEXTS, store=store, name="t", shard="5/6", progress=False)
    routescope.record(tiny_lm, TEXTS, store=store, name="s", shard="1/2", progress=False)
    merge(store, "s")
    with pytest.raises(RunExistsError):
        routescope.record(tiny_lm, TEXTS, store=store, name="s", shard="0/2", progress=False)


def test_merge_refuses_shards_recorded_differently(tiny_lm: LoadedModel, store: Store) -> None:
    routescope.record(tiny_lm, TEXTS, store=store, name="s", shard="0/2", probs=True, progress=False)
    routescope.record(tiny_lm, TEXTS, store=store, name="s", shard="1/2", probs=False, progress=False)
    differently = r"were recorded differently \(capabilities, options\)"
    with pytest.raises(routescope.RouteScopeError, match=differently):
        merge(store, "s")
    assert store.runs() == []
    assert sorted(p.name for p in (store.path / SHARDS_DIR / "s").iterdir() if p.name.startswith("part")) == [
        "part-00000-of-00002",
        "part-00001-of-00002",
    ]  # nothing published, the parts are kept


@pytest.mark.slow
def test_two_processes_record_shards_of_one_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(
        "".join(
            json.dumps({"text": t, "domain": d}) + "\n" for t, d in zip(TEXTS, LABELS["domain"], strict=True)
        )
    )
    base = ["record", "bundled:tiny-mixtral", "--store", str(store), "--file", str(inputs)]
    base += ["--label-column", "domain", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "routescope"]
    workers = [
        subprocess.Popen(
            [*command, *base, "--name", "big", "--shard", f"{i}/2"], env=env, stderr=subprocess.PIPE
        )
        for i in range(2)
    ]
    errors = [worker.communicate(timeout=600)[1].decode() for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    assert main(["merge", "--store", str(store), "--name", "big"]) == 0
    assert main([*base, "--name", "one"]) == 0
    runs = Store(store)
    assert_same_run(runs.open("one"), runs.open("big"))  # batch size 1: bit for bit
    np.testing.assert_array_equal(runs.open("big").samples()["sample"], np.arange(len(TEXTS)))
