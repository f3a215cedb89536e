"""The `routescope` command line, run as a user runs it: in a subprocess, on real files and folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

import routescope
from routescope.models.tokenizers import byte_tokenizer
from routescope.store import Store
from tests.tiny_families import tiny_model

CLI = [sys.executable, "-m", "routescope"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_record_from_a_local_checkpoint_folder_reads_back_with_pandas_and_duckdb(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    tiny_model("qwen2_moe").save_pretrained(checkpoint)
    byte_tokenizer().save_pretrained(checkpoint)
    assert any(p.suffix == ".safetensors" for p in checkpoint.iterdir())
    data = tmp_path / "in.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"text": t, "domain": d})
            for t, d in [("x = 1 + 2", "code"), ("the sun rose", "prose"), ("print(x)", "code")]
        )
    )
    store = tmp_path / "store"
    done = run_cli(
        "record",
        str(checkpoint),
        "--store",
        str(store),
        "--name",
        "ckpt-run",
        "--file",
        str(data),
        "--label-column",
        "domain",
        "--probs",
    )
    assert done.returncode == 0, done.stderr
    assert "ckpt-run" in done.stdout
    assert "model.layers.1.mlp.gate" in done.stdout
    run = Store(store).open("ckpt-run")
    assert run.manifest["model"]["family"] == "qwen2_moe"
    assert run.manifest["model"]["source"] == "local"
    assert run.samples()["domain"].tolist() == ["code", "prose", "code"]
    per_domain = duckdb.sql(
        f"""SELECT s.domain, count(*) AS n FROM read_parquet('{run.table_path("assignments")}') a
            JOIN read_parquet('{run.table_path("samples")}') s USING (sample) GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    n_tokens = run.samples().groupby("domain")["n_tokens"].sum()
    assert per_domain == [("code", int(n_tokens["code"]) * 2 * 2), ("prose", int(n_tokens["prose"]) * 2 * 2)]
    shown = run_cli("show", "--store", str(store), "--run", "ckpt-run")
    assert shown.returncode == 0
    assert "qwen2_moe" in shown.stdout
    listed = run_cli("runs", "--store", str(store))
    assert listed.stdout.startswith("ckpt-run\tcomplete")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["record", "bundled:nope", "--name", "r", "--text", "hi"], "unknown bundled model"),
        (["record", "no/such-model-here", "--name", "r", "--text", "hi"], "cannot load model config"),
        (["record", "bundled:tiny-mixtral", "--name", "../up", "--text", "hi"], "invalid run name"),
        (["record", "bundled:tiny-mixtral", "--name", "a\\b", "--text", "hi"], "invalid run name"),
        (["record", "bundled:tiny-mixtral", "--name", "r", "--text", ""], "input 0 is empty"),
        (["record", "bundled:tiny-mixtral", "--name", "r"], "either --text"),
        (["show", "--run", "missing"], "no run 'missing'"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path: Path, args: list[str], message: str) -> None:
    store = tmp_path / "store"
    done = run_cli(*args[:1], "--store", str(store), *args[1:])
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert not store.exists() or Store(store).runs() == []


def test_bad_files(tmp_path: Path) -> None:
    store = tmp_path / "store"
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a", "domain": "x"}\n{"text": "b"}\n')
    done = run_cli(
        "record",
        "bundled:tiny-mixtral",
        "--store",
        str(store),
        "--name",
        "r",
        "--file",
        str(rows),
        "--label-column",
        "domain",
    )
    assert done.returncode == 2
    assert "rows.jsonl:2: no column 'domain'" in done.stderr
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    done = run_cli(
        "record", "bundled:tiny-mixtral", "--store", str(store), "--name", "r", "--file", str(binary)
    )
    assert done.returncode == 2
    assert "not UTF-8" in done.stderr
    as_file = tmp_path / "store-file"
    as_file.write_text("")
    done = run_cli("record", "bundled:tiny-mixtral", "--store", str(as_file), "--name", "r", "--text", "hi")
    assert done.returncode == 2
    assert "is a file" in done.stderr
    assert not store.exists()


def test_existing_name_refused_then_overwritten(tmp_path: Path) -> None:
    store = tmp_path / "store"
    base = ["record", "bundled:tiny-mixtral", "--store", str(store), "--name", "r"]
    assert run_cli(*base, "--text", "first").returncode == 0
    again = run_cli(*base, "--text", "second")
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert Store(store).open("r").samples()["text"].tolist() == ["first"]
    assert run_cli(*base, "--text", "second", "--overwrite").returncode == 0
    assert Store(store).open("r").samples()["text"].tolist() == ["second"]


def test_kill_9_mid_recording_leaves_earlier_runs_and_an_incomplete_one(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert (
        run_cli(
            "record", "bundled:tiny-mixtral", "--store", str(store), "--name", "kept", "--text", "hi"
        ).returncode
        == 0
    )
    before = Store(store).open("kept").assignments()
    texts = tmp_path / "many.txt"
    texts.write_text("\n".join(f"line {i} " + "abc " * 200 for i in range(100)))
    proc = subprocess.Popen(
        [
            *CLI,
            "record",
            "bundled:tiny-mixtral",
            "--store",
            str(store),
            "--name",
            "killed",
            "--file",
            str(texts),
            "--batch-size",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240  # a loaded machine can take minutes to start torch
    partial = store / ".incomplete" / "killed"
    while time.time() < deadline and not (partial / "assignments.parquet").exists():
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (partial / "assignments.parquet").exists()
    s = Store(store)
    assert s.runs() == ["kept"]
    assert s.incomplete() == ["killed"]
    assert s.open("kept").assignments().equals(before)
    listed = run_cli("runs", "--store", str(store))
    assert "killed\tincomplete" in listed.stdout
    cleaned = run_cli("runs", "--store", str(store), "--clean")
    assert "removed 1 interrupted recording(s): killed" in cleaned.stdout
    assert Store(store).incomplete() == []


def test_demo_is_the_readme_main_command(tmp_path: Path) -> None:
    done = run_cli("demo", "--store", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    store = Store(tmp_path / "runs")
    assert store.runs() == ["digits", "domains"]
    domains = store.open("domains")
    _texts, labels = routescope.load_dataset("bundled:domains")
    assert domains.samples()["domain"].tolist() == labels["domain"]
    assert set(labels["domain"]) == {"prose", "code", "arithmetic", "json", "chemistry"}
    assert len(domains.decisions()) == 4 * domains.manifest["rows"]["tokens"]
    digits = store.open("digits")
    assert digits.images().shape == (10, 8, 8)  # the default runs: one digit per class
    assert digits.steps()["step"].tolist() == list(range(25))
    assert "model.layers.3.mlp.gate" in done.stdout
    assert "blocks.3.moe.gate" in done.stdout
