"""Every CLI command with empty, huge, non-UTF-8 and hostile values: one line on stderr and exit 2 for what
cannot be done, the documented behaviour for what can (docs/reliability.md lists each case).

Commands run in-process through `routescope.cli.main` (the same code path as the console script, without
paying the torch import per case); the cases that need bytes in argv run as real subprocesses.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from routescope.cli import main
from routescope.store import Store

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "<script>alert('x')</script> & <b>bold</b> | pipe"
LONG_TEXT = "".join(f"{i % 10}" if i % 50 else "\n" for i in range(1, 4700)).replace("\n", " ")
"""About 4,700 bytes: more tokens than the tiny model's context (chunk) of 2,048."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files and a store with one run (`base`, labelled, HTML in its text and labels) that cases use."""
    root = tmp_path_factory.mktemp("bad-inputs")
    files = {
        "store": root / "store",
        "empty.txt": root / "empty.txt",
        "empty.jsonl": root / "empty.jsonl",
        "latin1.txt": root / "latin1.txt",
        "latin1.jsonl": root / "latin1.jsonl",
        "core.jsonl": root / "core.jsonl",
        "quote.jsonl": root / "quote.jsonl",
        "blank.jsonl": root / "blank.jsonl",
        "html.jsonl": root / "html.jsonl",
        "a-file": root / "a-file",
        "folder": root,
    }
    files["empty.txt"].write_text("\n  \n")
    files["empty.jsonl"].write_text("\n")
    files["latin1.txt"].write_bytes("café crème\n".encode("latin-1"))
    files["latin1.jsonl"].write_bytes(b'{"text": "caf\xe9"}\n')
    files["core.jsonl"].write_text(json.dumps({"text": "a b", "expert": "x"}) + "\n")
    files["quote.jsonl"].write_text(json.dumps({"text": "a b", 'a"b': "x"}) + "\n")
    files["blank.jsonl"].write_text(json.dumps({"text": "a b", "": "x"}) + "\n")
    rows = [{"text": HOSTILE, "domain": HOSTILE}, {"text": "plain words here", "domain": "prose"}]
    files["html.jsonl"].write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    files["a-file"].write_text("not a folder")
    base = ["record", "bundled:tiny-mixtral", "--store", str(files["store"]), "--name", "base"]
    assert main([*base, "--file", str(files["html.jsonl"]), "--label-column", "domain"]) == 0
    return files


def _fill(args: list[str], files: dict[str, Path]) -> list[str]:
    filled = []
    for arg in args:
        for key, path in files.items():
            arg = arg.replace("{" + key + "}", str(path))
        filled.append(arg)
    return filled


def cli(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; argparse's own refusals (SystemExit 2) count as exit 2."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


REC = ["record", "bundled:tiny-mixtral", "--store", "{store}"]
DIGITS = ["record", "bundled:dit-digits", "--store", "{store}", "--name", "digits"]
RUN = ["--store", "{store}", "--run", "base"]

REFUSED = [
    # (case id, arguments, what the one-line error says)
    ("record/empty-text", [*REC, "--name", "r", "--text", ""], "input 0 is empty"),
    ("record/blank-text", [*REC, "--name", "r", "--text", "   \n "], "input 0 is empty"),
    ("record/empty-name", [*REC, "--name", "", "--text", "hi"], "invalid run name"),
    (
        "record/empty-store",
        ["record", "bundled:tiny-mixtral", "--store", "", "--name", "r", "--text", "hi"],
        "empty store path",
    ),
    (
        "record/empty-model",
        ["record", "", "--store", "{store}", "--name", "r", "--text", "hi"],
        "empty model spec",
    ),
    ("record/empty-txt", [*REC, "--name", "r", "--file", "{empty.txt}"], "has no non-empty lines"),
    ("record/empty-jsonl", [*REC, "--name", "r", "--file", "{empty.jsonl}"], "has no rows"),
    (
        "record/empty-label-name",
        [*REC, "--name", "r", "--file", "{blank.jsonl}", "--label-column", ""],
        "label column name '' is empty",
    ),
    ("record/no-inputs", [*REC, "--name", "r"], "either --text"),
    ("record/huge-name", [*REC, "--name", "x" * 300, "--text", "hi"], "invalid run name"),
    (
        "record/huge-max-new-tokens",
        [*REC, "--name", "r", "--text", "hi", "--max-new-tokens", str(10**12)],
        "must be below the chunk size",
    ),
    ("record/huge-seed", [*REC, "--name", "r", "--text", "hi", "--seed", str(10**30)], "seed 1" + "0" * 30),
    ("record/huge-classes", [*DIGITS, "--classes", "0-100000000"], "at most 100000 classes"),
    ("record/huge-steps", [*DIGITS, "--classes", "0", "--steps", str(10**12)], "steps must be in 1..1000"),
    (
        "record/zero-chunk",
        [*REC, "--name", "r", "--text", "hi", "--chunk-size", "0"],
        "chunk_size must be ≥ 1",
    ),
    ("record/negative-chunk", [*REC, "--name", "r", "--text", "hi", "--chunk-size", "-5"], "chunk_size must"),
    ("record/zero-batch", [*REC, "--name", "r", "--text", "hi", "--batch-size", "0"], "batch_size and chunk"),
    ("record/zero-steps", [*DIGITS, "--classes", "0", "--steps", "0"], "steps ≥ 1"),
    ("record/zero-samples", [*DIGITS, "--classes", "0", "--samples-per-class", "0"], "samples_per_class ≥ 1"),
    ("record/nan-cfg", [*DIGITS, "--classes", "0", "--steps", "2", "--cfg-scale", "nan"], "finite number"),
    ("record/unknown-class", [*DIGITS, "--classes", "7-12"], "unknown class(es) 10, 11, 12"),
    ("record/latin1-txt", [*REC, "--name", "r", "--file", "{latin1.txt}"], "is not UTF-8 text (byte 3)"),
    ("record/latin1-jsonl", [*REC, "--name", "r", "--file", "{latin1.jsonl}"], "is not UTF-8 text"),
    ("record/name-parent", [*REC, "--name", "../evil", "--text", "hi"], "invalid run name '../evil'"),
    ("record/name-slash", [*REC, "--name", "a/b", "--text", "hi"], "invalid run name"),
    ("record/name-hidden", [*REC, "--name", ".hidden", "--text", "hi"], "invalid run name"),
    ("record/name-newline", [*REC, "--name", "ok\n", "--text", "hi"], "invalid run name"),
    (
        "record/label-core-column",
        [*REC, "--name", "r", "--file", "{core.jsonl}", "--label-column", "expert"],
        "collide with core columns",
    ),
    (
        "record/label-quote",
        [*REC, "--name", "r", "--file", "{quote.jsonl}", "--label-column", 'a"b'],
        "holds a double quote",
    ),
    ("record/existing-name", [*REC, "--name", "base", "--text", "hi"], "already exists"),
    (
        "record/store-is-file",
        ["record", "bundled:tiny-mixtral", "--store", "{a-file}", "--name", "r", "--text", "x"],
        "is a file",
    ),
    (
        "record/model-folder-no-config",
        ["record", "{folder}", "--store", "{store}", "--name", "r", "--text", "x"],
        "is not a checkpoint folder",
    ),
    (
        "record/model-path-escape",
        ["record", "../../nonexistent/..", "--store", "{store}", "--name", "r", "--text", "x"],
        "unknown model",
    ),
    ("record/device", [*REC, "--name", "r", "--text", "hi", "--device", "nonsense"], "cannot use device"),
    ("record/dtype", [*REC, "--name", "r", "--text", "hi", "--dtype", "__class__"], "unknown dtype"),
    ("runs/empty-store", ["runs", "--store", ""], "empty store path"),
    ("runs/store-is-file", ["runs", "--store", "{a-file}"], "is a file"),
    ("show/empty-run", ["show", "--store", "{store}", "--run", ""], "invalid run name"),
    ("show/path-run", ["show", "--store", "{store}", "--run", "../base"], "invalid run name"),
    ("show/missing-run", ["show", "--store", "{store}", "--run", "nope"], "no run 'nope'"),
    (
        "report/sql-in-label",
        ["report", *RUN, "--kind", "specialization", "--by", 'x" ; SELECT 1; --'],
        "has no label",
    ),
    (
        "report/bad-param",
        ["report", *RUN, "--kind", "load", "--param", "garbage"],
        "must look like KEY=VALUE",
    ),
    ("report/out-is-folder", ["report", *RUN, "--kind", "load", "--out", "{folder}"], "cannot write --out"),
    (
        "report/out-missing-folder",
        ["report", *RUN, "--kind", "load", "--out", "/nonexistent/x.csv"],
        "cannot write --out",
    ),
    ("report/empty-run", ["report", "--store", "{store}", "--run", "", "--kind", "load"], "invalid run name"),
    ("figure/no-kind", ["figure", *RUN, "--out", "{folder}/f.svg"], "give --kind"),
    ("figure/bad-extension", ["figure", *RUN, "--kind", "load", "--out", "{folder}/f.exe"], "not '.exe'"),
    (
        "figure/missing-folder",
        ["figure", *RUN, "--kind", "load", "--out", "/nonexistent/f.svg"],
        "does not exist",
    ),
    (
        "figure/dpi",
        ["figure", *RUN, "--kind", "load", "--out", "{folder}/f.png", "--dpi", "0"],
        "out of range",
    ),
    ("app/port-zero", ["app", "--store", "{store}", "--port", "0"], "give a port between 1 and 65535"),
    ("app/port-huge", ["app", "--store", "{store}", "--port", "70000"], "give a port between 1 and 65535"),
    ("app/empty-host", ["app", "--store", "{store}", "--host", ""], "--host is empty"),
    ("app/store-is-file", ["app", "--store", "{a-file}"], "is a file"),
    ("demo/store-is-file", ["demo", "--store", "{a-file}"], "is a file"),
]
ARGPARSE = [
    ("report/unknown-kind", ["report", *RUN, "--kind", "<script>"], "invalid choice"),
    ("report/unknown-format", ["report", *RUN, "--kind", "load", "--format", "html"], "invalid choice"),
    ("record/seed-not-int", [*REC, "--name", "r", "--text", "hi", "--seed", "1e99"], "invalid int value"),
    ("train/unknown-model", ["train", "nope"], "invalid choice"),
    ("runs/no-store", ["runs"], "the following arguments are required: --store"),
]


@pytest.mark.parametrize(("args", "message"), [pytest.param(a, m, id=i) for i, a, m in REFUSED])
def test_refused_in_one_line(world: dict[str, Path], args: list[str], message: str) -> None:
    before = sorted(p.name for p in world["store"].iterdir())
    code, _out, err = cli(_fill(args, world))
    assert code == 2
    assert err.startswith("routescope: error: ")
    assert err.count("\n") == 1, err
    assert message in err
    assert sorted(p.name for p in world["store"].iterdir()) == before  # nothing written, nothing left over


@pytest.mark.parametrize(("args", "message"), [pytest.param(a, m, id=i) for i, a, m in ARGPARSE])
def test_malformed_options_get_argparse_usage_and_exit_2(
    world: dict[str, Path], args: list[str], message: str
) -> None:
    code, out, err = cli(_fill(args, world))
    assert code == 2
    assert out == ""
    last = err.splitlines()[-1]
    assert last.startswith("routescope")
    assert message in last


def test_text_longer_than_the_context_is_chunked_not_crashed(world: dict[str, Path]) -> None:
    code, _out, err = cli(_fill([*REC, "--name", "long", "--text", LONG_TEXT, "--batch-size", "4"], world))
    assert code == 0, err
    run = Store(world["store"]).open("long")
    n_tokens = len(LONG_TEXT.encode())  # the byte tokenizer: one token per byte
    assert n_tokens > 2048
    assert run.samples()["n_tokens"].tolist() == [n_tokens]
    tokens = run.tokens().sort_values("position")
    assert tokens["position"].tolist() == list(range(n_tokens))
    decisions = run.decisions()
    assert len(decisions) == n_tokens * len(run.routers)
    assert decisions.groupby("router")["position"].nunique().tolist() == [n_tokens] * len(run.routers)


def test_huge_batch_size_is_one_batch(world: dict[str, Path]) -> None:
    args = [*REC, "--name", "bigbatch", "--text", "a b", "--text", "c d e", "--batch-size", str(10**12)]
    code, _out, err = cli(_fill(args, world))
    assert code == 0, err
    assert Store(world["store"]).open("bigbatch").samples()["n_tokens"].tolist() == [3, 5]


def test_html_in_text_and_labels_is_stored_verbatim_and_escaped_in_markdown(world: dict[str, Path]) -> None:
    run = Store(world["store"]).open("base")
    assert run.samples()["text"].tolist()[0] == HOSTILE
    assert run.samples()["domain"].tolist() == [HOSTILE, "prose"]
    args = ["report", *RUN, "--kind", "specialization", "--by", "domain", "--format", "markdown"]
    code, out, _err = cli(_fill(args, world))
    assert code == 0
    assert "<script>" not in out
    assert "<b>" not in out
    assert "&lt;script&gt;alert('x')&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt; \\| pipe" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert {line.count(" | ") for line in rows} == {rows[0].count(" | ")}  # the escaped pipe splits no cell


def test_runs_on_a_store_that_does_not_exist_yet(world: dict[str, Path]) -> None:
    code, out, _err = cli(["runs", "--store", str(world["folder"] / "not-yet")])
    assert (code, out) == (0, f"no runs in {world['folder'] / 'not-yet'}\n")
    assert not (world["folder"] / "not-yet").exists()


def subprocess_cli(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "routescope", *args], capture_output=True, timeout=300, check=False, cwd=ROOT
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([b"--name", b"r", b"--text", b"caf\xe9 \xff"], b"input 0 is not valid text", id="text"),
        pytest.param([b"--name", b"r\xff", b"--text", b"hi"], b"invalid run name", id="name"),
    ],
)
def test_bytes_that_are_not_utf8_in_argv(world: dict[str, Path], args: list[bytes], message: bytes) -> None:
    done = subprocess_cli("record", "bundled:tiny-mixtral", "--store", str(world["store"]), *args)
    assert done.returncode == 2
    assert done.stderr.count(b"\n") == 1
    assert message in done.stderr


def test_store_path_with_bytes_that_are_not_utf8(world: dict[str, Path]) -> None:
    """Arrow and DuckDB take paths as UTF-8 text, so such a store is refused before anything is written."""
    folder = bytes(world["folder"]) + b"/st\xffore"
    done = subprocess_cli("record", "bundled:tiny-mixtral", "--store", folder, "--name", "r", "--text", "hi")
    assert done.returncode == 2
    assert (
        done.stderr
        == b"routescope: error: store path '"
        + bytes(world["folder"])
        + b"/st\\udcffore' is not UTF-8; give a folder whose name is UTF-8 text\n"
    )
    assert not Path(folder.decode(errors="surrogateescape")).exists()
