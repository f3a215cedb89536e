"""Image inputs for vision-language MoEs: what RouteScope records equals what the model and its processor did.

For two transformers VLM MoE families (Qwen3-VL-MoE: softmax top-k; GLM-4.5V-MoE: sigmoid with a
correction bias and shared experts), a tiny random model and its own processor are built and saved to a
folder, loaded with `routescope.load_model`, and recorded on texts with generated images, batched and
right-padded. Each input is then run alone through the same processor and model, with hooks on the
routers and `output_router_logits`:
1. experts, weights and probabilities equal the router's own output, token by token;
2. `modality` is `image` exactly where the processor put the image placeholder id, and each image's tokens
   carry the (row, col) of its merged patch grid (`image_grid_thw` / merge) in raster order;
3. the nnsight and hooks engines write identical tables;
4. bad inputs (an image that does not decode, an image for a text-only model, more images than the text's
   placeholders, a missing file) stop the CLI with one line, exit 2 and nothing written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import routescope
from routescope.analysis import compute
from routescope.cli import main
from routescope.hooks.vision import with_placeholders
from routescope.store import InputError, Run, Store
from tests.tiny_vlms import VLM_FAMILIES, TinyVLM, random_image, tiny_vlm

SIZES = [(16, 24), None, [(16, 16), (24, 8)]]
"""Per input: one image, none, two images (merged grids 2×3, —, 2×2 and 3×1)."""


def _texts(vlm: TinyVLM) -> list[str]:
    token = vlm.image_token
    return ["look at this", "plain text only", f"{token} left and {token} right"]


def _images() -> list[Any]:
    out: list[Any] = []
    for index, entry in enumerate(SIZES):
        if entry is None:
            out.append(None)
        elif isinstance(entry, list):
            out.append([random_image(h, w, seed=10 * index + j) for j, (h, w) in enumerate(entry)])
        else:
            out.append(random_image(*entry, seed=10 * index))
    return out


@dataclass
class Recorded:
    vlm: TinyVLM
    loaded: Any
    runs: dict[str, Run]
    processed: list[dict[str, Any]] = field(default_factory=list)
    """Per input alone: the processor's output."""
    hooked: list[dict[str, Any]] = field(default_factory=list)
    """Per input alone: router path → the router's raw output."""
    logits: list[list[torch.Tensor]] = field(default_factory=list)
    """Per input alone: `output_router_logits`, one [T, E] per router."""


def _keep(seen: dict[str, Any], path: str) -> Callable[..., None]:
    def hook(_m: torch.nn.Module, _a: Any, output: Any) -> None:
        seen[path] = tuple(t.detach().clone() for t in output)

    return hook


def _reference(rec: Recorded) -> None:
    """Each input alone through the processor (placeholders written as `record` writes them) and model."""
    processor, model = rec.loaded.processor, rec.loaded.model
    paths = [r.path for r in rec.runs["hooks"].info.routers]
    for text, images in zip(_texts(rec.vlm), _images(), strict=True):
        images = [] if images is None else images if isinstance(images, list) else [images]
        pil = [Image.fromarray(image) for image in images]
        if pil and rec.vlm.image_token not in text:
            text = with_placeholders(processor, text, len(pil))
        out = processor(text=[text], images=pil or None, return_tensors="pt")
        seen: dict[str, Any] = {}
        handles = [model.get_submodule(p).register_forward_hook(_keep(seen, p)) for p in paths]
        try:
            with torch.no_grad():
                result = model(**out, output_router_logits=True)
        finally:
            for handle in handles:
                handle.remove()
        rec.processed.append(dict(out))
        rec.hooked.append(seen)
        rec.logits.append([t.reshape(-1, t.shape[-1]).float() for t in result.router_logits])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Recorded]:
    built: dict[str, Recorded] = {}

    def get(family: str) -> Recorded:
        if family not in built:
            torch.set_num_threads(1)
            root = tmp_path_factory.mktemp(family)
            vlm = tiny_vlm(family, root / "model")
            loaded = routescope.load_model(str(vlm.folder))
            runs = {
                engine: routescope.record(
                    loaded,
                    _texts(vlm),
                    images=_images(),
                    labels={"kind": ["one", "none", "two"]},
                    store=root / "store",
                    name=engine,
                    probs=True,
                    batch_size=2,
                    progress=False,
                    engine=engine,
                )
                for engine in ("nnsight", "hooks")
            }
            built[family] = Recorded(vlm, loaded, runs)
            _reference(built[family])
        return built[family]

    return get


def _probs(logits: torch.Tensor, scoring: str) -> np.ndarray:
    if scoring == "sigmoid":
        scores = logits.sigmoid()
        return (scores / scores.sum(-1, keepdim=True)).numpy()
    return logits.softmax(-1).numpy()


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_routing_equals_router_output(recorded: Callable[[str], Recorded], family: str) -> None:
    rec = recorded(family)
    run = rec.runs["nnsight"]
    routers = sorted(run.info.routers, key=lambda r: r.id)
    assert [r.path for r in routers] == [f"model.language_model.layers.{i}.mlp.gate" for i in range(2)]
    assert {r.scoring for r in routers} == {"sigmoid" if family == "glm4v_moe" else "softmax"}
    assignments = run.assignments()
    decisions = run.decisions()
    for sample, hooked in enumerate(rec.hooked):
        n = rec.processed[sample]["input_ids"].shape[1]
        for router in routers:
            mine = assignments[(assignments["sample"] == sample) & (assignments["router"] == router.id)]
            mine = mine.sort_values(["position", "rank"])
            assert mine["position"].unique().tolist() == list(range(n))
            _logits, weights, indices = hooked[router.path]
            assert np.array_equal(mine["expert"].to_numpy().reshape(n, -1), indices.numpy())
            np.testing.assert_allclose(mine["weight"].to_numpy().reshape(n, -1), weights.numpy(), rtol=1e-5)
            dec = decisions[(decisions["sample"] == sample) & (decisions["router"] == router.id)]
            probs = np.stack(dec.sort_values("position")["probs"].to_numpy())
            expected = _probs(rec.logits[sample][router.id], router.scoring)
            np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    if family == "glm4v_moe":  # the bias changes the choice: recorded experts are not topk(probs)
        chosen = assignments.sort_values(["sample", "router", "position", "rank"])["expert"].to_numpy()
        ordered = decisions.sort_values(["sample", "router", "position"])
        top = np.argsort(-np.stack(ordered["probs"].to_numpy()), axis=1)[:, :2]
        assert (np.sort(top, 1) != np.sort(chosen.reshape(-1, 2), 1)).any()


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_modality_and_patch_places_equal_the_processor(
    recorded: Callable[[str], Recorded], family: str
) -> None:
    rec = recorded(family)
    run = rec.runs["nnsight"]
    assert run.info.modality
    tokens = run.tokens()
    merge = rec.vlm.merge
    n_image_tokens = 0
    for sample, out in enumerate(rec.processed):
        ids = out["input_ids"][0].numpy()
        mine = tokens[tokens["sample"] == sample].sort_values("position")
        assert mine["token_id"].tolist() == ids.tolist()
        expected = np.where(ids == rec.vlm.image_token_id, "image", "text")
        assert mine["modality"].tolist() == expected.tolist()
        text = mine[mine["modality"] == "text"]
        assert text[["row", "col", "image", "frame"]].isna().all().all()
        images = mine[mine["modality"] == "image"]
        grids = out.get("image_grid_thw")
        assert (grids is None) == images.empty
        for index, (t, h, w) in enumerate([] if grids is None else grids.tolist()):
            patches = images[images["image"] == index]
            rows, cols = np.divmod(np.arange((h // merge) * (w // merge)), w // merge)
            assert t == 1
            assert patches["frame"].eq(0).all()
            assert patches["row"].astype(int).tolist() == rows.tolist()
            assert patches["col"].astype(int).tolist() == cols.tolist()
            n_image_tokens += len(patches)
        assert len(images) == (ids == rec.vlm.image_token_id).sum()
    assert n_image_tokens == 6 + 4 + 3  # 16×24 → 2×3, 16×16 → 2×2, 24×8 → 3×1 after a 2×2 merge


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_engines_write_identical_tables(recorded: Callable[[str], Recorded], family: str) -> None:
    runs = recorded(family).runs
    for table in ("tokens", "assignments", "decisions", "samples"):
        a, b = (getattr(runs[e], table)() for e in ("nnsight", "hooks"))
        pd.testing.assert_frame_equal(a, b)


def test_images_refuse_generation(recorded: Callable[[str], Recorded], tmp_path: Path) -> None:
    rec = recorded("qwen3_vl_moe")
    with pytest.raises(InputError, match="drop max_new_tokens"):
        routescope.record(
            rec.loaded, ["hi"], images=[random_image(8, 8)], max_new_tokens=2, store=tmp_path, name="g"
        )
    assert not Store(tmp_path).exists("g")
    lone = f"{rec.vlm.image_token} where is the image?"
    with pytest.raises(InputError, match=r"has 1 image placeholders .* for 0 images"):
        routescope.record(
            rec.loaded, [lone, "x"], images=[None, random_image(8, 8)], store=tmp_path, name="g"
        )
    assert not Store(tmp_path).exists("g")


# --- The CLI ---------------------------------------------------------------------------------------------


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def _nothing_written(store: Path) -> bool:
    return not store.exists() or not [p for p in store.rglob("*") if p.is_file()]


def test_cli_records_a_jsonl_with_images(
    recorded: Callable[[str], Recorded], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = recorded("qwen3_vl_moe")
    Image.fromarray(random_image(16, 24)).save(tmp_path / "a.png")
    Image.fromarray(random_image(16, 16, seed=1)).save(tmp_path / "b.png")
    rows = [
        {"text": "look", "image": "a.png", "domain": "photo"},
        {"text": "words only", "image": None, "domain": "prose"},
        {"text": "two", "image": ["a.png", str(tmp_path / "b.png")], "domain": "photo"},
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    store = tmp_path / "store"
    args = ["record", str(rec.vlm.folder), "--store", str(store), "--name", "cli"]
    code, err = _cli([*args, "--file", str(tmp_path / "in.jsonl"), "--label-column", "domain"], capsys)
    assert code == 0, err
    run = Store(store).open("cli")
    tokens = run.tokens()
    per_sample = tokens[tokens["modality"] == "image"].groupby("sample")["image"].nunique()
    assert per_sample.to_dict() == {0: 1, 2: 2}
    assert run.samples()["domain"].tolist() == ["photo", "prose", "photo"]
    code, err = _cli(
        [
            *args[:-1],
            "flag",
            "--text",
            "a",
            "--text",
            "b",
            "--image",
            str(tmp_path / "a.png"),
            "--image",
            str(tmp_path / "b.png"),
        ],
        capsys,
    )
    assert code == 0, err
    flagged = Store(store).open("flag").tokens()
    assert flagged.groupby("sample")["modality"].apply(lambda m: (m == "image").sum()).tolist() == [6, 4]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("undecodable", "cannot be decoded as an image"),
        ("text-only", "text-only model"),
        ("too-many", "image placeholders"),
        ("missing", "does not exist"),
        ("count", "give one --image per --text"),
    ],
)
def test_cli_bad_images_exit_2_with_nothing_written(
    recorded: Callable[[str], Recorded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
) -> None:
    rec = recorded("qwen3_vl_moe")
    good = tmp_path / "good.png"
    Image.fromarray(random_image(16, 16)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    store = tmp_path / "store"
    model = "bundled:tiny-mixtral" if case == "text-only" else str(rec.vlm.folder)
    base = ["record", model, "--store", str(store), "--name", "r"]
    token = rec.vlm.image_token
    extra = {
        "undecodable": ["--text", "hi", "--image", str(bad)],
        "text-only": ["--text", "hi", "--image", str(good)],
        "too-many": ["--text", f"{token} one", "--image", str(good), "--image", str(good)],
        "missing": ["--text", "hi", "--image", str(tmp_path / "nope.png")],
        "count": ["--text", "a", "--text", "b", "--text", "c", "--image", str(good), "--image", str(good)],
    }[case]
    code, err = _cli([*base, *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    assert _nothing_written(store)


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_modality_analyses_run_on_a_recording(recorded: Callable[[str], Recorded], family: str) -> None:
    run = recorded(family).runs["nnsight"]
    load = compute("modality", run)
    assert set(load["modality"]) == {"image", "text"}
    assert np.allclose(load.groupby(["layer", "modality"])["share"].sum(), 1.0)
    test = compute("modality-specialization", run, n_permutations=49)
    assert test["layer"].tolist() == [0, 1]
    assert test["visual_tokens"].tolist() == [13, 13]
    assert ((test["p_value"] > 0) & (test["p_value"] <= 1)).all()


def test_tokens_page_draws_each_image_as_its_patch_grid(
    recorded: Callable[[str], Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from routescope.dashboard import ENTRY_SCRIPT, STORE_ENV, state

    run = recorded("qwen3_vl_moe").runs["nnsight"]
    monkeypatch.setenv(STORE_ENV, str(Path(run.path).parent))
    at = AppTest.from_file(str(ENTRY_SCRIPT), default_timeout=240).run()
    at.switch_page("app_pages/tokens.py").run()
    at.selectbox(key=state.TOKENS_RUN).set_value(run.name).run()
    at.selectbox(key=state.scoped(state.TOKENS_SAMPLE, run.name)).set_value(2).run()
    at.selectbox(key=state.scoped(state.TOKENS_LAYER, run.name)).set_value(1).run()
    at.selectbox(key=state.scoped(state.TOKENS_IMAGE, run.name, 2)).set_value(1).run()
    assert not at.exception
    grid = next(h.value for h in at.html if 'class="rs-patch"' in h.value)
    cells = re.findall(r'data-position="(\d+)" data-expert="(\d+)"', grid)
    tokens = run.tokens()
    patches = tokens[(tokens["sample"] == 2) & (tokens["image"] == 1)]
    a = run.assignments()
    a = a[(a["sample"] == 2) & (a["router"] == 1) & (a["rank"] == 0)].set_index("position")["expert"]
    assert {int(p): int(e) for p, e in cells} == {int(p): int(a[p]) for p in patches["position"]}
    assert grid.count("<tr>") == 3  # the 24×8 image: 3 rows of 1 merged patch


def test_run_page_uploads_record_as_the_cli_records_image_files(
    recorded: Callable[[str], Recorded], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Run page's uploaded images (bytes, decoded in memory) give the tables `--image PATH` gives."""
    from routescope.dashboard.recording import TextOptions, text_request, typed_inputs, uploaded_images

    rec = recorded("qwen3_vl_moe")
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for seed, path in enumerate(paths):
        Image.fromarray(random_image(16, 24, seed=seed)).save(path)
    store = tmp_path / "store"
    texts = ["first picture", "second picture"]
    args = ["record", str(rec.vlm.folder), "--store", str(store), "--name", "cli"]
    code, err = _cli(
        [*args, *[a for t in texts for a in ("--text", t)], *[a for p in paths for a in ("--image", str(p))]],
        capsys,
    )
    assert code == 0, err
    inputs = uploaded_images(typed_inputs("\n".join(texts)), [(p.name, p.read_bytes()) for p in paths])
    request = text_request(inputs, TextOptions(), name="page")
    request.execute(rec.loaded, store=Store(store))
    cli, page = Store(store).open("cli"), Store(store).open("page")
    pd.testing.assert_frame_equal(cli.assignments(), page.assignments())
    pd.testing.assert_frame_equal(cli.tokens(), page.tokens())
    assert (page.tokens()["modality"] == "image").sum() == 2 * 6  # 16×24 px → a 2×3 merged grid each

    bad = [("notes.png", b"not an image at all")]
    with pytest.raises(InputError, match=r"notes\.png cannot be decoded as an image"):
        uploaded_images(typed_inputs("x"), bad)
    with pytest.raises(InputError, match="3 uploaded images for 2 inputs; give one per input"):
        uploaded_images(typed_inputs("a\nb"), [(p.name, p.read_bytes()) for p in [*paths, paths[0]]])
