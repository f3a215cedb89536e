"""No run lost, no half-written run shown as complete, no name clash that corrupts a store.

The crash test kills a recording process with a real SIGKILL at dozens of points: batch boundaries,
Parquet row-group writes, closing and fsyncing tables, writing the manifest, and the renames that publish
a run (`tests/_crash_child.py` is the fork server that records and dies). After every kill it checks
that earlier runs are byte-for-byte what they were, that every run the store lists as complete holds
exactly the rows that were written, and that `routescope runs` lists the killed one as incomplete with
the commands that delete or re-record it. The concurrency tests start real `routescope record`
processes on one store.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from routescope.cli import main
from routescope.store import RunExistsError, Store
from routescope.store.writer import RunWriter
from tests._crash_child import SCHEMAS, expected_tables, manifest

ROOT = Path(__file__).resolve().parents[1]
BATCHES, TOKENS = 5, 600
"""Per synthetic run: 5 batches of 600 tokens → 24,000 assignment rows in 8 row groups."""
TRIALS = {"fresh": 40, "overwrite": 14, "timer": 12}
"""Kill trials by kind: at an event of a new recording, at an event of one that overwrites an existing
run, and at a random moment chosen by the parent (an outside SIGKILL)."""


class ForkServer:
    """The `tests._crash_child` server: one request per line, one JSON answer per line."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests._crash_child"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert "ready" in json.loads(self.process.stdout.readline())

    def record(self, store: Path, name: str, seed: int, **kill: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        request = {"store": str(store), "name": name, "seed": seed, "batches": BATCHES, "tokens": TOKENS}
        self.process.stdin.write(json.dumps({**request, **kill}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def start_frozen(self, store: Path, name: str, seed: int, stop_event: int) -> int:
        """Start a recording that freezes itself (SIGSTOP) at event `stop_event`; return its pid once it
        is frozen. `reply()` gives the answer after it is resumed with SIGCONT and finishes."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        request = {"store": str(store), "name": name, "seed": seed, "batches": BATCHES, "tokens": TOKENS}
        self.process.stdin.write(json.dumps({**request, "stop_event": stop_event}) + "\n")
        self.process.stdin.flush()
        pid = int(json.loads(self.process.stdout.readline())["started"])
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "T":
            assert time.monotonic() < deadline, "the recording never reached its stop point"
            time.sleep(0.02)
        return pid

    def reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a child left frozen by a failed test: stop the server
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    fork_server = ForkServer()
    yield fork_server
    fork_server.close()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every Parquet file and the manifest of a run folder."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.suffix in (".parquet", ".json") and p.name != "owner.json"
    }


def assert_holds_exactly(store: Store, name: str, seed: int) -> int:
    """The run opens, and each table equals what the synthetic recording wrote; returns rows compared."""
    run = store.open(name)
    rows = 0
    for table, expected in expected_tables(seed, BATCHES, TOKENS).items():
        got = run.read_table(table)
        assert got.equals(expected.cast(got.schema)), f"{name}/{table} differs from what was written"
        rows += got.num_rows
    assert run.manifest["rows"] == {t: e.num_rows for t, e in expected_tables(seed, BATCHES, TOKENS).items()}
    return rows


def runs_listing(store: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    capsys.readouterr()
    assert main(["runs", "--store", str(store), *extra]) == 0
    return capsys.readouterr().out


def dry_events(server: ForkServer, store: Path, name: str, overwrite: bool, tmp: Path) -> list[str]:
    events_file = tmp / f"events-{name}-{overwrite}.json"
    reply = server.record(store, name, 0, overwrite=overwrite, events_file=str(events_file))
    assert reply == {"pid": reply["pid"], "killed": False, "code": 0}
    return json.loads(events_file.read_text())


def plan_trials(fresh: list[str], overwrite: list[str], seconds: float, seed: int) -> list[dict[str, Any]]:
    """Kill points, seeded: events taken round-robin over the phases (batch, row group, close table,
    fsync, manifest, rename, publish) so that every phase is hit, then random moments in time."""
    rng = random.Random(seed)
    trials: list[dict[str, Any]] = []
    for kind, events in (("fresh", fresh), ("overwrite", overwrite)):
        phases: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            phases.setdefault(event.split(":")[0], []).append(index)
        order = sorted(phases)
        for i in range(TRIALS[kind]):
            index = rng.choice(phases[order[i % len(order)]])
            trials.append({"kind": kind, "kill_event": index, "event": events[index]})
    for _ in range(TRIALS["timer"]):
        trials.append({"kind": "timer", "kill_after": rng.uniform(0.0, seconds), "event": "timer"})
    return trials


def test_sigkill_at_any_point_loses_no_run_and_publishes_no_half_run(
    server: ForkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = tmp_path / "store"
    store = Store(store_path)
    started = time.perf_counter()
    fresh = dry_events(server, store_path, "victim", False, tmp_path)
    seconds = time.perf_counter() - started
    overwrite = dry_events(server, store_path, "victim", True, tmp_path)
    assert server.record(store_path, "earlier", 1)["code"] == 0
    seeds = {"victim": 0, "earlier": 1}  # complete runs and the seed of their content
    hashes = {name: file_hashes(store.run_path(name)) for name in seeds}
    rows_checked = sum(assert_holds_exactly(store, name, seed) for name, seed in seeds.items())
    trials = plan_trials(fresh, overwrite, seconds, seed=8)
    outcome: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    for number, trial in enumerate(trials):
        seed = 100 + number
        target = "victim" if trial["kind"] == "overwrite" else f"t{number}"
        kill = {k: trial[k] for k in ("kill_event", "kill_after") if k in trial}
        reply = server.record(store_path, target, seed, overwrite=target == "victim", **kill)
        assert reply["killed"] or reply["code"] == 0, (trial, reply)
        outcome["killed" if reply["killed"] else "finished"] += 1
        if reply["killed"]:
            phases[trial["event"].split(":")[0]] += 1
        if store.unpublished():  # died between the complete manifest and the final rename
            outcome["recovered"] += 1
            assert target in store.unpublished()
            listing = runs_listing(store_path, capsys)
            assert f"{target}\tincomplete\t(finished but not moved into place;" in listing
            assert store.recover() == [target]
        listed = store.runs()
        # earlier runs: untouched, byte for byte (the overwritten one: old or new, never a mix)
        for name in seeds:
            if name == target:
                continue
            assert name in listed
            assert file_hashes(store.run_path(name)) == hashes[name], f"{name} changed after {trial}"
        published = target in listed and (
            target != "victim" or file_hashes(store.run_path(target)) != hashes[target]
        )
        if published:  # killed after the rename (or not at all): the whole run is there
            rows_checked += assert_holds_exactly(store, target, seed)
            seeds[target], hashes[target] = seed, file_hashes(store.run_path(target))
            outcome["published"] += 1
        elif target == "victim":  # the old run is still in place, byte for byte
            assert file_hashes(store.run_path(target)) == hashes[target]
        # nothing else is listed as complete
        assert set(listed) == set(seeds), (trial, listed)
        if not published and target in store.incomplete():
            outcome["incomplete"] += 1
            listing = runs_listing(store_path, capsys)
            line = next(line for line in listing.splitlines() if line.startswith(f"{target}\tincomplete\t"))
            assert line.startswith(f"{target}\tincomplete\t(interrupted; delete it with `routescope runs")
            assert "--clean" in line
            assert f"--name {target} --overwrite" in line
            refusal = "already exists" if target == "victim" else "interrupted recording.*clean"
            with pytest.raises(RunExistsError, match=refusal):
                RunWriter(store, target, schemas=SCHEMAS, manifest=manifest(seed), overwrite=False)
            if number % 3 == 0:  # re-record over the interrupted one: it must come out whole
                assert server.record(store_path, target, seed, overwrite=True)["code"] == 0
                rows_checked += assert_holds_exactly(store, target, seed)
                seeds[target], hashes[target] = seed, file_hashes(store.run_path(target))
                outcome["re-recorded"] += 1
        if number % 10 == 9:
            cleaned = runs_listing(store_path, capsys, "--clean")
            assert cleaned.startswith("removed ")
            assert store.incomplete() == []
            assert not (store_path / ".trash").exists()
            assert set(store.runs()) == set(seeds)
    # the command line, in its own process, agrees
    final = subprocess.run(
        [sys.executable, "-m", "routescope", "runs", "--store", str(store_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    for name in seeds:
        assert f"{name}\tcomplete\tsynthetic\t" in final.stdout
    for name in store.incomplete():
        assert f"{name}\tincomplete\t(interrupted;" in final.stdout
    for name, seed in seeds.items():
        rows_checked += assert_holds_exactly(store, name, seed)
    assert len(trials) >= 50
    assert outcome["killed"] >= 50
    assert set(phases) >= {"batch", "row group", "close table", "fsync", "manifest", "rename", "publish"}
    sys.stderr.write(
        f"\ncrash trials: {len(trials)} run, {outcome['killed']} killed, all survived; {dict(outcome)}; "
        f"kills by phase {dict(phases)}; rows compared {rows_checked}, rows lost 0\n"
    )


CLI = [sys.executable, "-m", "routescope"]
TEXTS = [f"line {i}: the quick brown fox jumps over the lazy dog" for i in range(6)]


def record_cli(store: Path, name: str, texts: Path, *extra: str) -> subprocess.Popen[str]:
    where = ["--store", str(store), "--name", name, "--file", str(texts)]
    return subprocess.Popen(
        [*CLI, "record", "bundled:tiny-mixtral", *where, "--batch-size", "2", "--engine", "hooks", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_two_processes_record_into_one_store_at_once(tmp_path: Path) -> None:
    """Different names at the same moment: both complete, neither corrupts the other, and (same model,
    inputs and seed) their routing tables are byte-identical."""
    store = tmp_path / "store"
    texts = tmp_path / "in.txt"
    texts.write_text("\n".join(TEXTS))
    processes = [record_cli(store, name, texts) for name in ("one", "two")]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    runs = Store(store)
    assert runs.runs() == ["one", "two"]
    assert runs.incomplete() == []
    one, two = runs.open("one"), runs.open("two")
    assert one.samples()["text"].tolist() == TEXTS
    for table in ("tokens", "assignments", "decisions", "samples", "steps"):
        assert one.read_table(table).equals(two.read_table(table))
        assert one.table_path(table).read_bytes() == two.table_path(table).read_bytes()


@pytest.mark.slow
def test_same_name_while_recording_is_refused_and_the_first_finishes_whole(
    server: ForkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recording frozen half-way (after its second batch) holds the name: a second `routescope record`
    process of that name is refused in one line, the listing says it is being recorded, `--clean` leaves
    it alone, and once resumed it publishes every row."""
    store_path = tmp_path / "store"
    events = dry_events(server, tmp_path / "dry", "x", False, tmp_path)
    second_batch = [i for i, e in enumerate(events) if e == "batch:boundary:after"][1]
    pid = server.start_frozen(store_path, "shared", 7, second_batch)
    try:
        texts = tmp_path / "in.txt"
        texts.write_text("\n".join(TEXTS))
        rival = record_cli(store_path, "shared", texts)
        _, err = rival.communicate(timeout=300)
        assert rival.returncode == 2
        assert err == (
            "routescope: error: run 'shared' is being recorded by another process right now; "
            "pick another name\n"
        )
        listing = runs_listing(store_path, capsys, "--clean")
        assert "removed 0 interrupted recording(s)" in listing
        assert "shared\tincomplete\t(being recorded right now by another process)" in listing
        with pytest.raises(RunExistsError, match="being recorded by another process"):
            RunWriter(Store(store_path), "shared", schemas=SCHEMAS, manifest=manifest(7), overwrite=True)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert server.reply() == {"pid": pid, "killed": False, "code": 0}
    store = Store(store_path)
    assert store.runs() == ["shared"]
    assert store.incomplete() == []
    assert assert_holds_exactly(store, "shared", 7) == sum(
        t.num_rows for t in expected_tables(7, BATCHES, TOKENS).values()
    )


# --- Safe loading -------------------------------------------------------------------------------------


def custom_code_checkpoint(folder: Path, marker: Path) -> Path:
    """A checkpoint folder whose config names its own Python code (`auto_map`); importing that code
    writes `marker`."""
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil_moe",
                "architectures": ["EvilModel"],
                "auto_map": {
                    "AutoConfig": "configuration_evil.EvilConfig",
                    "AutoModelForCausalLM": "modeling_evil.EvilModel",
                },
            }
        )
    )
    code = (
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('custom code ran')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil_moe'\n"
    )
    (folder / "configuration_evil.py").write_text(code)
    (folder / "modeling_evil.py").write_text(code)
    return folder


@pytest.mark.slow
def test_checkpoint_code_runs_only_with_trust_remote_code(tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    checkpoint = custom_code_checkpoint(tmp_path / "ckpt", marker)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    args = [
        *CLI,
        "record",
        str(checkpoint),
        "--store",
        str(tmp_path / "store"),
        "--name",
        "r",
        "--text",
        "hi",
    ]
    refused = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    assert refused.returncode == 2
    assert refused.stderr == (
        f"routescope: error: {str(checkpoint)!r} ships its own model code, which RouteScope runs only with "
        "--trust-remote-code (read that code first)\n"
    )
    assert not marker.exists()
    assert not (tmp_path / "store").exists()
    allowed = subprocess.run(
        [*args, "--trust-remote-code"], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    assert marker.read_text() == "custom code ran"  # the flag, and only the flag, lets it run
    assert allowed.returncode != 0  # (this stub has no model class; what matters is that it ran)


def test_torch_file_that_would_run_code_is_refused_and_plain_tensors_load(tmp_path: Path) -> None:
    import builtins

    import torch

    from routescope import load_model
    from routescope.models.tokenizers import byte_tokenizer
    from routescope.store import ModelSpecError
    from tests.tiny_families import tiny_model

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (builtins.exec, (f"open({str(marker)!r}, 'w').write('x')",))

    model = tiny_model("mixtral")
    for name, extra in (("plain", {}), ("hostile", {"payload": Payload()})):
        folder = tmp_path / name
        model.config.save_pretrained(folder)
        byte_tokenizer().save_pretrained(folder)
        torch.save({**model.state_dict(), **extra}, folder / "pytorch_model.bin")
    with pytest.raises(ModelSpecError, match="holds more than tensors") as refused:
        load_model(str(tmp_path / "hostile"))
    assert "\n" not in str(refused.value)
    assert not marker.exists()
    plain = load_model(str(tmp_path / "plain"))  # a torch file of tensors only loads (weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(plain.model.state_dict()[key], value)


def test_every_torch_load_in_the_package_is_weights_only() -> None:
    import re

    calls = []
    for folder in ("app", "hooks", "analysis", "models"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for match in re.finditer(r"torch\.load\(", text):
                call = text[match.start() : text.index(")", match.end()) + 1]
                calls.append((path.relative_to(ROOT).as_posix(), "weights_only=True" in call))
    assert calls  # the checkpoint reader of dit-moe uses one
    assert [path for path, safe in calls if not safe] == []


# --- Determinism --------------------------------------------------------------------------------------

DETERMINISM_TEXTS = ["def f(x):\n    return x * 2", "The cat sat on the mat.", "3 + 4 = 7"]


def table_bytes(run: Any) -> dict[str, bytes]:
    return {table: run.table_path(table).read_bytes() for table in run.manifest["tables"]}


def test_same_model_inputs_and_seed_give_byte_identical_tables(tiny_lm: Any, tmp_path: Path) -> None:
    import routescope

    store = Store(tmp_path / "store")
    options: dict[str, Any] = {"probs": True, "max_new_tokens": 3, "batch_size": 2, "seed": 3}
    labels = {"domain": ["code", "prose", "math"]}
    first, second = (
        routescope.record(
            tiny_lm, DETERMINISM_TEXTS, store=store, name=n, labels=labels, progress=False, **options
        )
        for n in ("first", "second")
    )
    assert table_bytes(first) == table_bytes(second)  # Parquet bytes, not only contents
    assert first.samples()["n_generated"].sum() > 0  # generation (greedy) is covered too
    volatile = {"name", "created", "finished"}
    assert {k: v for k, v in first.manifest.items() if k not in volatile} == {
        k: v for k, v in second.manifest.items() if k not in volatile
    }


def test_the_manifest_holds_what_repeats_the_run(tiny_lm: Any, tmp_path: Path) -> None:
    """Re-record from nothing but the run itself (manifest + its samples table): the same bytes."""
    import routescope

    store = Store(tmp_path / "store")
    original = routescope.record(
        tiny_lm,
        DETERMINISM_TEXTS,
        store=store,
        name="original",
        max_new_tokens=2,
        batch_size=3,
        progress=False,
    )
    m = original.manifest
    assert set(m["model"]) >= {"spec", "source", "class", "family", "revision", "dtype", "device"}
    assert m["model"]["spec"] == "bundled:tiny-mixtral"
    assert (m["model"]["dtype"], m["model"]["device"]) == ("float32", "cpu")
    assert m["tokenizer"]
    assert set(m["options"]) >= {
        "probs",
        "max_new_tokens",
        "batch_size",
        "chunk_size",
        "engine",
        "generate_kwargs",
    }
    assert set(m["packages"]) >= {"python", "routescope", "torch", "transformers", "nnsight", "pyarrow"}
    assert isinstance(m["seed"], int)
    samples = original.samples()
    repeated = routescope.record(
        routescope.load_model(m["model"]["spec"]),
        samples["text"].tolist(),
        store=store,
        name="repeated",
        labels={c: samples[c].tolist() for c in m["labels"]} or None,
        probs=m["options"]["probs"],
        max_new_tokens=m["options"]["max_new_tokens"],
        batch_size=m["options"]["batch_size"],
        chunk_size=m["options"]["chunk_size"],
        engine=m["options"]["engine"],
        generate_kwargs=m["options"]["generate_kwargs"],
        seed=m["seed"],
        progress=False,
    )
    assert table_bytes(repeated) == table_bytes(original)


def test_diffusion_with_the_same_seed_is_byte_identical_and_the_seed_matters(tmp_path: Path) -> None:
    import numpy as np

    import routescope

    dit = routescope.load_model("bundled:dit-digits")
    store = Store(tmp_path / "store")
    runs = {
        (name, seed): routescope.record_diffusion(
            dit,
            classes=[1, 7],
            samples_per_class=1,
            steps=3,
            cfg_scale=3.0,
            seed=seed,
            store=store,
            name=name,
            save_x0=True,
            progress=False,
        )
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    }
    a, b, c = runs[("a", 0)], runs[("b", 0)], runs[("c", 1)]
    assert table_bytes(a) == table_bytes(b)
    assert a.manifest["seed"] == 0
    assert not np.array_equal(a.images(), c.images())
