"""Bad trace files: one line naming the file and the record, exit status 2, nothing left in the store.

Each case is a file written here — a wrong kind, a truncated or foreign file, shapes that change between
records, negative or out-of-range ids, token and id counts that disagree, an unsafe pickle — imported
through the CLI's `main`, as a user would.
"""

from __future__ import annotations

import base64
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from routescope.cli import main
from routescope.store import Store


def line(record: dict) -> str:
    return json.dumps(record) + "\n"


def vllm(layers: int = 2, k: int = 2, tokens: int = 3, rows: int | None = None, first: int = 1) -> dict:
    ids = (np.arange((rows if rows is not None else tokens) * layers * k) % 7 + first).reshape(-1, layers, k)
    ids[..., 1] = ids[..., 0] + 1  # distinct experts within a decision
    return {"prompt_token_ids": list(range(tokens)), "output_token_ids": [], "routed_experts": ids.tolist()}


GOOD = line(vllm())
OLMOE = line({"input_ids": [1, 2], "exp_ids": [[[1, 2], [3, 4]], [[1, 2], [3, 4]]]})
MEGATRON = {"step": 0, "block": "decoder", "layer": 0, "rank": 0, "num_tokens": 2, "topk": 2}


def torch_counter(path: Path) -> bytes:
    import torch

    torch.save({"logical_count": Counter({1: 2})}, path)
    return path.read_bytes()


CASES = [
    ("wrong kind", "vllm", "t.jsonl", OLMOE, [], r"line 1: has no 'prompt_token_ids'"),
    ("truncated", "vllm", "t.jsonl", GOOD + GOOD + GOOD[:40], [], r"line 3: not valid JSON"),
    ("foreign json", "vllm", "t.jsonl", GOOD + line({"foo": 1}), [], r"line 2: has no 'prompt_token_ids'"),
    ("foreign bytes", "vllm", "t.jsonl", b"\x00\x01PK\xff\xfe garbage", [], r"t.jsonl(, line 1)?: not "),
    (
        "layers differ",
        "vllm",
        "t.jsonl",
        GOOD + line(vllm(layers=3)),
        [],
        r"line 2: routing rows of differing",
    ),
    (
        "top-k differs",
        "vllm",
        "t.jsonl",
        GOOD + GOOD + line(vllm(k=3)),
        [],
        r"line 3: routing rows of differ",
    ),
    ("negative id", "vllm", "t.jsonl", GOOD + line(vllm(first=-3)), [], r"line 2: negative expert id"),
    (
        "id out of range",
        "vllm",
        "t.jsonl",
        GOOD + GOOD,
        ["--experts", "4"],
        r"line 1: expert id \d+ out of range for 4 experts",
    ),
    ("token count", "vllm", "t.jsonl", GOOD + line(vllm(rows=5)), [], r"line 2: 5 routing rows for 3 tokens"),
    (
        "olmoe count",
        "olmoe",
        "o.jsonl",
        line({"input_ids": [1], "exp_ids": [[[1]], [[2]]]}),
        [],
        r"line 1: 2 exp_ids",
    ),
    (
        "olmoe pickle",
        "olmoe",
        "o.pkl",
        pickle.dumps(Counter({1: 2})),
        [],
        r"o.pkl: a Python pickle .* refused",
    ),
    ("torch counter", "sglang", "d.pt", torch_counter, [], r"d.pt: holds a Counter where tensors, dicts"),
    (
        "sglang shape",
        "sglang",
        "s.jsonl",
        line({"meta_info": {"routed_experts": "AAAAAA=="}}),
        [],
        r"line 1: give",
    ),
    (
        "sglang b64",
        "sglang",
        "s.jsonl",
        line({"meta_info": {"routed_experts": "!!"}}),
        ["--top-k", "2"],
        r"not base64",
    ),
    (
        "megatron rows",
        "megatron",
        "router_trace_rank0.jsonl",
        line({**MEGATRON, "top_indices": [[1, 2]]}),
        [],
        r"line 1: 1 rows of top_indices for num_tokens 2",
    ),
    (
        "megatron topk",
        "megatron",
        "router_trace_rank0.jsonl",
        line({**MEGATRON, "top_indices": [[1, 2], [3]]}),
        [],
        r"line 1: a row of top_indices has 1 ids, not topk 2",
    ),
    ("llamacpp negative", "llamacpp", "t.csv", "layer,expert\n0,1\n0,-2\n", [], r"t.csv, line 3: negative"),
    ("llamacpp foreign", "llamacpp", "t.csv", "a,b,c\nx,y,z\n", [], r"t.csv: not a layer,expert CSV"),
]


@pytest.mark.parametrize(
    ("case", "kind", "filename", "content", "extra", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_trace_is_one_line_and_nothing_is_published(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    kind: str,
    filename: str,
    content: str | bytes,
    extra: list[str],
    message: str,
) -> None:
    path = tmp_path / filename
    if callable(content):
        content = content(path)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    store = tmp_path / "store"
    code = main(["import", kind, str(path), "--store", str(store), "--name", "bad", *extra])
    err = capsys.readouterr().err
    assert code == 2, case
    assert err.count("\n") == 1, err
    assert err.startswith(f"routescope: error: {path}"), err
    assert __import__("re").search(message, err), err
    assert Store(store).runs() == []
    assert Store(store).incomplete() == []


def test_labels_that_do_not_match_the_requests_leave_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(GOOD + GOOD)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(line({"domain": "a"}))
    store = tmp_path / "store"
    args = ["import", "vllm", str(trace), "--store", str(store), "--name", "x", "--labels", str(labels)]
    assert main(args) == 2
    assert "label 'domain' has 1 values for 2 imported requests" in capsys.readouterr().err
    assert Store(store).runs() == []
    assert Store(store).incomplete() == []


def test_sglang_jsonl_decodes_base64_with_the_given_top_k(tmp_path: Path) -> None:
    ids = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 0]]], np.int32)  # 2 tokens routed of 3, 2 layers, top-2
    meta = {
        "prompt_tokens": 2,
        "completion_tokens": 1,
        "routed_experts": base64.b64encode(ids.tobytes()).decode(),
    }
    trace = tmp_path / "s.jsonl"
    trace.write_text(line({"meta_info": meta}))
    store = tmp_path / "store"
    assert main(["import", "sglang", str(trace), "--store", str(store), "--name", "s", "--top-k", "2"]) == 0
    run = Store(store).open("s")
    assert "token_ids" not in run.info.caps
    a = run.assignments().sort_values(["position", "layer", "rank"])
    assert a["expert"].tolist() == [1, 2, 3, 4, 5, 6, 7, 0]


def test_request_and_tokenizer_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from routescope.requests import ImportRequest
    from routescope.store import InputError

    trace = tmp_path / "t.jsonl"
    trace.write_text(GOOD)
    store = tmp_path / "store"
    with pytest.raises(InputError, match="layers and top_k unflatten SGLang JSONL only, not vllm traces"):
        ImportRequest(kind="vllm", files=(str(trace),), name="x", layers=4).execute(store=Store(store))
    args = ["import", "vllm", str(trace), "--store", str(store), "--name", "x", "--tokenizer", "hub/model"]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "routescope: error: tokenizer 'hub/model' is not a local folder (no hub downloads) "
        "(pass --tokenizer)\n"
    )
    assert Store(store).runs() == []


def test_megatron_logits_sidecar_missing_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "router_trace_rank0.jsonl"
    sidecar = {"logit_offset": 0, "logit_bytes": 8, "logit_shape": [2, 2]}
    trace.write_text(line({**MEGATRON, "top_indices": [[0, 1], [1, 0]], **sidecar}))
    store = tmp_path / "store"
    assert main(["import", "megatron", str(trace), "--store", str(store), "--name", "m"]) == 2
    assert capsys.readouterr().err == (
        f"routescope: error: {tmp_path / 'logits_rank0.bin'}: cannot read the logits that "
        "router_trace_rank0.jsonl, line 1 points to\n"
    )
    assert Store(store).runs() == []
    assert Store(store).incomplete() == []
