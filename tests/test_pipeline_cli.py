"""`routescope record-pipeline` on a tiny random HiDream-I1 pipeline saved to a folder with save_pretrained.

The folder holds every component a real HiDream folder has (two CLIP encoders, T5, Llama, their
tokenizers, a VAE, the MoE transformer, the scheduler), at toy size, in safetensors. The command must
load it from disk alone, record the same routing a direct `record_pipeline` call records on the same
pipeline and seed, label each sample with its prompt, and turn bad input into one line and exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from routescope.cli import main
from routescope.hooks.diffusers_loop import record_pipeline
from routescope.models.tokenizers import byte_tokenizer
from routescope.store import Store
from tests.test_diffusers_moe import tiny_hidream

diffusers = pytest.importorskip("diffusers")

PROMPTS = ["a cat", "a dog"]
MAX_TEXT = 8  # T5 and Llama prompts are padded/truncated to the tokenizers' model_max_length
PATCHES = 16  # 16×16 pixels → 8×8 latents (VAE factor 2) → 4×4 patches of 2
SIDE = "16"


def _clip() -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=260,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=128,  # HiDream pads CLIP prompts to 128 tokens
        projection_dim=4,  # two CLIP projections concatenated = the transformer's text_emb_dim 8
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return CLIPTextModelWithProjection(config).eval()


def _tokenizer() -> object:
    tokenizer = byte_tokenizer()
    tokenizer.model_max_length = MAX_TEXT
    return tokenizer


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny HiDream transformer of test_diffusers_moe with real (random) encoders and VAE, saved."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5EncoderModel

    base, _ = tiny_hidream()
    torch.manual_seed(2)
    t5 = T5EncoderModel(T5Config(vocab_size=260, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2))
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=260,
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=4,  # the transformer reads llama_layers 0..3
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(4, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,
        shift_factor=0.0,
    )
    pipe = diffusers.HiDreamImagePipeline(
        scheduler=base.scheduler,  # type: ignore[attr-defined]
        vae=vae.eval(),
        transformer=base.transformer,  # type: ignore[attr-defined]
        text_encoder=_clip(),
        tokenizer=_tokenizer(),
        text_encoder_2=_clip(),
        tokenizer_2=_tokenizer(),
        text_encoder_3=t5.eval(),
        tokenizer_3=_tokenizer(),
        text_encoder_4=llama.eval(),
        tokenizer_4=_tokenizer(),
    )
    folder = tmp_path_factory.mktemp("hidream") / "pipe"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routescope", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_record_pipeline_from_a_folder_matches_a_direct_python_recording(
    pipeline_folder: Path, tmp_path: Path
) -> None:
    assert any(p.suffix == ".safetensors" for p in (pipeline_folder / "transformer").iterdir())
    store = tmp_path / "store"
    args = ["--store", str(store), "--steps", "2", "--seed", "3", "--height", SIDE, "--width", SIDE]
    prompts = [arg for p in PROMPTS for arg in ("--prompt", p)]
    done = run_cli("record-pipeline", str(pipeline_folder), "--name", "cli", *prompts, *args, "--probs")
    assert done.returncode == 0, done.stderr
    assert "recorded run 'cli'" in done.stdout
    assert "double_stream_blocks.0.block.ff_i.gate" in done.stdout
    run = Store(store).open("cli")

    assert len(run.steps()) == 2
    assert run.manifest["patch_grid"] == [4, 4]
    assert run.images().shape == (2, 16, 16)  # the VAE decoded 16×16 pixels, as asked
    samples = run.samples()
    assert samples["prompt"].tolist() == PROMPTS * 2
    assert samples["branch"].tolist() == ["cond", "cond", "uncond", "uncond"]
    text = MAX_TEXT + 2 * MAX_TEXT  # T5 + shared Llama layer + each single block's own Llama tokens
    a = run.assignments()
    per_router = a.groupby(["step", "router"]).size()
    expected = {r: 4 * (PATCHES if r < 2 else PATCHES + text) * 2 for r in range(4)}  # samples·tokens·k
    assert {(s, r): n for (s, r), n in per_router.items()} == {
        (s, r): expected[r] for s in (0, 1) for r in range(4)
    }
    assert len(run.decisions()) == len(a) // 2

    pipe = diffusers.DiffusionPipeline.from_pretrained(pipeline_folder, local_files_only=True)
    pipe.default_sample_size = 8  # HiDream rescales to this area: 8 latents × VAE factor 2 = 16 pixels
    direct = record_pipeline(
        pipe, PROMPTS, store=store, name="direct", steps=2, seed=3, progress=False, height=16, width=16
    )
    keys = ["step", "router", "sample", "position", "rank"]
    mine, theirs = a.sort_values(keys), direct.assignments().sort_values(keys)
    assert mine["expert"].tolist() == theirs["expert"].tolist()
    assert mine["weight"].to_numpy() == pytest.approx(theirs["weight"].to_numpy(), abs=1e-6)
    assert run.steps()["timestep"].tolist() == direct.steps()["timestep"].tolist()
    shown = run_cli("show", "--store", str(store), "--run", "cli")
    assert shown.returncode == 0, shown.stderr
    assert "sampling  2 steps, guidance 5.0, 2 prompt(s), patch grid 4×4" in shown.stdout


def test_prompts_from_a_jsonl_file_without_guidance_are_one_sample_each(
    pipeline_folder: Path, tmp_path: Path
) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "a red fox", "id": 1}) + "\n")
    store = tmp_path / "store"
    done = run_cli(
        *["record-pipeline", str(pipeline_folder), "--store", str(store), "--name", "fox"],
        *["--file", str(data), "--steps", "1", "--guidance-scale", "1", "--height", SIDE, "--width", SIDE],
    )
    assert done.returncode == 0, done.stderr
    run = Store(store).open("fox")
    assert run.samples()["prompt"].tolist() == ["a red fox"]
    assert run.samples()["branch"].tolist() == ["cond"]
    assert len(run.assignments()) == 1 * (2 * PATCHES + 2 * (PATCHES + 3 * MAX_TEXT)) * 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["FOLDER/missing", "--prompt", "x"], "is not a local pipeline folder (no model_index.json"),
        (["FOLDER/model_index.json", "--prompt", "x"], "is not a local pipeline folder"),
        (["FOLDER/transformer", "--prompt", "x"], "is not a local pipeline folder"),
        (["org/hub-id", "--prompt", "x"], "never from a hub"),
        (["FOLDER", "--prompt", "a cat", "--prompt", " "], "prompt 2 is empty"),
        (["FOLDER"], "give either --prompt (repeatable) or --file"),
        (["FOLDER", "--prompt", "x", "--file", "p.txt"], "give either --prompt (repeatable) or --file"),
        (["FOLDER", "--file", "FOLDER/nope.txt"], "does not exist"),
        (["FOLDER", "--prompt", "x", "--steps", "0"], "--steps must be at least 1"),
        (["FOLDER", "--prompt", "x", "--height", "16"], "give --height and --width together"),
        (["FOLDER", "--prompt", "x", "--height", "0", "--width", "16"], "--height and --width must be"),
        (["FOLDER", "--prompt", "x", "--dtype", "float99"], "unknown dtype 'float99'"),
        (["FOLDER", "--prompt", "x", "--name", "../up"], "invalid run name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    pipeline_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    args = [a.replace("FOLDER", str(pipeline_folder)) for a in args]
    name = [] if "--name" in args else ["--name", "bad"]
    code = main(["record-pipeline", *args, "--store", str(tmp_path / "store"), *name])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("routescope: error: "), err
    assert err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "store" / "bad").exists()


def test_an_existing_run_is_refused_before_the_pipeline_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "store" / "taken").mkdir(parents=True)
    (tmp_path / "store" / "taken" / "manifest.json").write_text("{}")
    code = main(
        [
            *["record-pipeline", str(tmp_path / "nowhere"), "--store", str(tmp_path / "store")],
            *["--name", "taken", "--prompt", "x"],
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "run 'taken' already exists" in err
    assert err.count("\n") == 1
