"""dit-moe:CONFIG — the published DiT-MoE layout, strict weights-only loading, the samplers, recording.

Nothing can be downloaded, so the layout is checked against the reference code's parameter list written
out by hand (on the meta device: no memory for the big configs) and everything else runs on a tiny config
with random weights saved in the real layout.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import routescope
from routescope.analysis.registry import compute
from routescope.models.dit_moe import (
    CheckpointError,
    DiTMoE,
    DiTMoEConfig,
    DiTMoESampler,
    check_matches,
    expected_shapes,
    latent_preview,
    load,
    load_dit_moe,
    named_config,
    read_state_dict,
    respaced_timesteps,
)
from routescope.models.dit_moe.sampling import ddpm_alphas_cumprod, ddpm_posterior, rgb_to_unit_luma
from routescope.store import ModelSpecError, Store

TINY = {
    "name": "tiny",
    "depth": 2,
    "hidden_size": 64,
    "num_heads": 4,
    "image_size": 64,
    "n_experts": 4,
    "num_classes": 10,
}
"""Depth 2, hidden 64, 4 experts (top-2), latent 8×8 → a 4×4 patch grid, 10 classes."""


def reference_layout(depth: int, d: int, experts: int, patch: int, tokens: int, flash: bool) -> dict:
    """The published checkpoints' keys and shapes, written out from the reference DiT-MoE definition."""
    shapes: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, tokens, d),
        "x_embedder.proj.weight": (d, 4, patch, patch),
        "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256),
        "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d),
        "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (1001, d),
        "final_layer.linear.weight": (patch * patch * 8, d),
        "final_layer.linear.bias": (patch * patch * 8,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d),
        "final_layer.adaLN_modulation.1.bias": (2 * d,),
    }
    for i in range(depth):
        b = f"blocks.{i}"
        if flash:
            head = d // 16
            attn = {"Wqkv": (3 * d, d), "out_proj": (d, d)}
            for norm in ("q_norm", "k_norm"):
                shapes[f"{b}.attn.{norm}.weight"] = (head,)
                shapes[f"{b}.attn.{norm}.bias"] = (head,)
        else:
            attn = {"qkv": (3 * d, d), "proj": (d, d)}
        for name, shape in attn.items():
            shapes[f"{b}.attn.{name}.weight"] = shape
            shapes[f"{b}.attn.{name}.bias"] = (shape[0],)
        shapes[f"{b}.moe.gate.weight"] = (experts, d)
        mlps = {f"experts.{e}": 4 * d for e in range(experts)} | {"shared_experts": 2 * d}
        for name, width in mlps.items():
            shapes[f"{b}.moe.{name}.gate_proj.weight"] = (width, d)
            shapes[f"{b}.moe.{name}.up_proj.weight"] = (width, d)
            shapes[f"{b}.moe.{name}.down_proj.weight"] = (d, width)
        shapes[f"{b}.adaLN_modulation.1.weight"] = (6 * d, d)
        shapes[f"{b}.adaLN_modulation.1.bias"] = (6 * d,)
    return shapes


def meta_state(config: DiTMoEConfig) -> dict[str, torch.Tensor]:
    """A state dict with the config's keys and shapes on the meta device (shapes only, no memory)."""
    return {k: torch.empty(s, device="meta") for k, s in expected_shapes(config).items()}


def tiny_model(seed: int = 0, **overrides: object) -> DiTMoE:
    """The tiny config with every weight random (the zero-initialised adaLN/output layers too)."""
    torch.manual_seed(seed)
    model = DiTMoE(DiTMoEConfig(**{**TINY, **overrides}))  # type: ignore[arg-type]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("pos_embed"):
                p.normal_(0.0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model's config (.json), a training-style .pt and a .safetensors file."""
    folder = tmp_path_factory.mktemp("dit-moe")
    model = tiny_model()
    state = model.state_dict()
    (folder / "tiny.json").write_text(json.dumps(TINY))
    wrapped = {"ema": {f"module.{k}": v for k, v in state.items()}, "args": argparse.Namespace(lr=1e-4)}
    torch.save(wrapped, folder / "tiny.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "tiny.safetensors"))
    return {
        "config": folder / "tiny.json",
        "pt": folder / "tiny.pt",
        "safetensors": folder / "tiny.safetensors",
    }


@pytest.mark.parametrize(
    ("name", "depth", "d", "experts", "flash"),
    [("S-8E2A", 12, 384, 8, False), ("B-16E2A", 12, 768, 16, False), ("XL-8E2A", 28, 1152, 8, True)],
)
def test_named_configs_have_the_published_keys_and_shapes(
    name: str, depth: int, d: int, experts: int, flash: bool
) -> None:
    assert expected_shapes(named_config(name)) == reference_layout(depth, d, experts, 2, 256, flash)


def test_published_sizes_have_the_papers_parameter_counts() -> None:
    counts = {
        name: sum(math.prod(s) for s in expected_shapes(named_config(name)).values())
        for name in ("S-8E2A", "XL-8E2A", "G-16E2A")
    }
    # reference layout, pos_embed included: DiT-MoE-S/2-8E2A ≈ 199M, XL/2-8E2A ≈ 4.2B, G/2-16E2A ≈ 16.5B
    assert counts["S-8E2A"] == sum(math.prod(s) for s in reference_layout(12, 384, 8, 2, 256, False).values())
    assert round(counts["XL-8E2A"] / 1e9, 1) == 4.2
    assert round(counts["G-16E2A"] / 1e9, 1) == 16.5


def test_config_names_parse_and_unknown_ones_are_refused() -> None:
    config = named_config("XL/2-16E2A-512")
    assert (config.name, config.depth, config.n_experts, config.top_k) == ("XL-16E2A-512", 28, 16, 2)
    assert (config.latent_size, config.grid, config.attention, config.default_sampler) == (
        64,
        32,
        "flash",
        "rf",
    )
    assert named_config("s-8e2a").default_sampler == "ddpm"
    with pytest.raises(ValueError, match="unknown DiT-MoE config 'M-8E2A'; known: S-8E2A, S-16E2A"):
        named_config("M-8E2A")


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
def test_random_weights_round_trip_with_strict_matching(tiny_files: dict[str, Path], kind: str) -> None:
    original = tiny_model()
    loaded = load_dit_moe(DiTMoEConfig(**TINY), tiny_files[kind])  # type: ignore[arg-type]
    state = loaded.state_dict()
    assert set(state) == set(original.state_dict())
    assert all(torch.equal(state[k], v) for k, v in original.state_dict().items())
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999]), torch.tensor([1, 9, 10])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), original(x, t, y))


def test_a_pickled_object_is_refused_not_run(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": Path("x")}, path)  # an arbitrary class instance
    with pytest.raises(CheckpointError, match=r"cannot read .*evil\.pt as weights only"):
        read_state_dict(path)


def test_a_mismatched_checkpoint_names_the_config_its_shapes_match() -> None:
    with pytest.raises(CheckpointError) as caught:
        check_matches(named_config("S-8E2A"), meta_state(named_config("S-16E2A")), "s16.pt")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("s16.pt does not fit dit-moe:S-8E2A (its shapes match dit-moe:S-16E2A): ")
    assert "288 unexpected: blocks.0.moe.experts.8.gate_proj.weight" in message
    assert "12 wrong shape: blocks.0.moe.gate.weight [16, 384] vs [8, 384]" in message
    # same keys, other widths: every shape but the output bias ([2·2·8] in both) differs
    wider = (
        r"\(its shapes match dit-moe:B-8E2A\): 419 wrong shape: pos_embed \[1, 256, 768\] vs \[1, 256, 384\]"
    )
    with pytest.raises(CheckpointError, match=wider):
        check_matches(named_config("S-8E2A"), meta_state(named_config("B-8E2A")), "b.pt")


def test_the_attention_layout_follows_the_checkpoint() -> None:
    flash_xl = meta_state(named_config("XL-8E2A"))
    timm_xl = meta_state(DiTMoEConfig(**{**named_config("XL-8E2A").to_dict(), "attention": "timm"}))
    assert check_matches(named_config("XL-8E2A"), flash_xl, "x").attention == "flash"
    assert check_matches(named_config("XL-8E2A"), timm_xl, "x").attention == "timm"


def test_load_model_maps_checkpoint_errors_to_one_line_model_spec_errors(tiny_files: dict[str, Path]) -> None:
    with pytest.raises(
        ModelSpecError, match=r"does not fit dit-moe:S-8E2A \(its shapes match a custom config"
    ):
        routescope.load_model("dit-moe:S-8E2A", weights=str(tiny_files["pt"]))
    with pytest.raises(ModelSpecError, match="needs its weights file"):
        routescope.load_model("dit-moe:S-8E2A")
    with pytest.raises(ModelSpecError, match="weights, vae and sampler go with a checkpoint family spec"):
        routescope.load_model("bundled:dit-digits", weights=str(tiny_files["pt"]))


def test_respacing_matches_the_reference_rounding() -> None:
    assert respaced_timesteps(4) == [0, 333, 666, 999]
    assert respaced_timesteps(1) == [0]
    steps = respaced_timesteps(250)
    assert (len(steps), steps[0], steps[-1]) == (250, 0, 999)
    assert steps == sorted({round(i * 999 / 249) for i in range(250)})


def test_the_learned_variance_spans_the_posterior_variance_to_beta() -> None:
    """IDDPM's learned range on respaced steps: v = −1 → posterior variance, v = +1 → β, mean by formula."""
    abar, kept = ddpm_alphas_cumprod(), respaced_timesteps(10)
    a, a_prev = float(abar[kept[5]]), float(abar[kept[4]])
    beta = 1 - a / a_prev
    z, x0 = (
        torch.full((1, 4, 2, 2), 0.5, dtype=torch.float64),
        torch.full((1, 4, 2, 2), -1.0, dtype=torch.float64),
    )
    low = ddpm_posterior(z, x0, torch.full_like(z, -1.0), abar, kept, 5)
    high = ddpm_posterior(z, x0, torch.full_like(z, 1.0), abar, kept, 5)
    assert float(low[1][0, 0, 0, 0]) == pytest.approx(math.log(beta * (1 - a_prev) / (1 - a)))
    assert float(high[1][0, 0, 0, 0]) == pytest.approx(math.log(beta))
    expected_mean = (
        beta * math.sqrt(a_prev) / (1 - a) * -1.0 + (1 - a_prev) * math.sqrt(1 - beta) / (1 - a) * 0.5
    )
    assert float(low[0][0, 0, 0, 0]) == pytest.approx(expected_mean)


def test_an_untrained_model_predicts_zero_so_the_samplers_have_known_answers() -> None:
    """adaLN-Zero: a freshly built network outputs exactly 0, so RF keeps the noise and DDIM rescales it."""
    model = DiTMoE(DiTMoEConfig(**TINY)).eval()  # type: ignore[arg-type]
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(7))
    calls: list[tuple[int, list[int]]] = []

    def forward(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append((x.shape[0], y.tolist()))
        return model(x, t, y)

    infos: list = []
    rf = DiTMoESampler("rf")(
        model, [3, 4], steps=4, cfg_scale=4.0, seed=7, forward=forward, on_step=infos.append
    )
    assert torch.allclose(rf, latent_preview(noise))
    assert calls == [(4, [3, 4, 10, 10])] * 4
    assert [(i.step, i.timestep, i.sigma) for i in infos] == [
        (0, 1.0, 1.0),
        (1, 0.75, 0.75),
        (2, 0.5, 0.5),
        (3, 0.25, 0.25),
    ]
    infos.clear()
    ddim = DiTMoESampler("ddim")(model, [3, 4], steps=4, cfg_scale=4.0, seed=7, on_step=infos.append)
    abar = ddpm_alphas_cumprod()
    assert torch.allclose(ddim, latent_preview(noise / math.sqrt(float(abar[999]))), atol=1e-5)
    assert [i.timestep for i in infos] == [999.0, 666.0, 333.0, 0.0]
    assert infos[1].sigma == pytest.approx(math.sqrt((1 - float(abar[666])) / float(abar[666])))
    ddpm = DiTMoESampler("ddpm")(model, [3, 4], steps=4, cfg_scale=4.0, seed=7)
    assert ddpm.shape == (2, 8, 8)
    assert not torch.allclose(ddpm, ddim)  # the ancestral noise makes it differ


def test_the_vae_decodes_latents_through_diffusers(tiny_files: dict[str, Path], tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    )
    vae.save_pretrained(tmp_path / "vae")
    model, sampler, info = load(
        str(tiny_files["config"]), weights=tiny_files["safetensors"], vae=tmp_path / "vae", sampler="ddim"
    )
    assert (info["sampler"], info["images"]) == ("ddim", "decoded by the VAE (luminance)")
    latents: list[torch.Tensor] = []
    images = sampler(
        model, [1], steps=2, cfg_scale=1.5, seed=0, on_step=lambda i: latents.append(i.latent_x0)
    )
    assert images.shape == (1, 16, 16)  # the tiny VAE upsamples 2×: 8×8 latents → 16×16 images
    with torch.no_grad():
        expected = rgb_to_unit_luma(vae.decode(latents[-1] / 0.18215).sample)
    assert torch.allclose(images, expected, atol=1e-5)


@pytest.mark.slow
def test_recording_a_small_config_from_the_cli_gives_a_complete_run(
    tiny_files: dict[str, Path], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "routescope",
            "record",
            f"dit-moe:{tiny_files['config']}",
            "--weights",
            str(tiny_files["safetensors"]),
            "--classes",
            "1,7",
            "--steps",
            "3",
            "--cfg-scale",
            "2",
            "--store",
            str(store),
            "--name",
            "tiny",
            "--engine",
            "hooks",
            "--save-x0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no --vae given: images are latent previews" in done.stdout
    run = Store(store).open("tiny")
    steps, samples, patches, routers, k = 3, 4, 16, 2, 2
    assignments = run.assignments()
    assert len(assignments) == steps * samples * patches * routers * k
    per_cell = assignments.groupby(["step", "sample", "position", "router"]).size()
    assert len(per_cell) == steps * samples * patches * routers
    assert set(per_cell) == {k}
    assert run.samples()["branch"].tolist() == ["cond", "cond", "uncond", "uncond"]
    assert run.samples()["class"].tolist() == ["1", "7", "1", "7"]
    assert run.steps()["timestep"].tolist() == [999.0, 500.0, 0.0]
    assert [r["path"] for r in run.routers] == ["blocks.0.moe.gate", "blocks.1.moe.gate"]
    assert run.manifest["model"]["sampler"] == "ddpm"
    tokens = run.tokens()
    assert sorted(zip(tokens["row"], tokens["col"], strict=True))[:5] == [(0, 0)] * 4 + [(0, 1)]

    # the recorded step-0 choices are the gate's own on the step-0 CFG batch
    model = load_dit_moe(DiTMoEConfig(**TINY), tiny_files["safetensors"])  # type: ignore[arg-type]
    z = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    seen: list = []
    handle = model.blocks[0].moe.gate.register_forward_hook(lambda _m, _a, out: seen.append(out))
    with torch.no_grad():
        model(torch.cat([z, z]), torch.full((4,), 999), torch.tensor([1, 7, 10, 10]))
    handle.remove()
    first = assignments[(assignments["step"] == 0) & (assignments["router"] == 0)]
    first = first.sort_values(["sample", "position", "rank"])
    assert first["expert"].tolist() == seen[0][2].reshape(-1).tolist()
    assert first["weight"].to_numpy() == pytest.approx(seen[0][1].reshape(-1).numpy(), abs=1e-6)

    for kind in ("steps", "step-similarity", "phases", "sensitivity", "spatial"):
        assert len(compute(kind, run)) > 0, kind
    load = compute("steps", run).groupby(["layer", "step"])["load"].sum()
    assert load.to_numpy() == pytest.approx(1.0)


def test_the_cli_reports_a_mismatched_checkpoint_in_one_line(
    tiny_files: dict[str, Path], tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "routescope",
            "record",
            "dit-moe:B-8E2A",
            "--weights",
            str(tiny_files["pt"]),
            "--classes",
            "1",
            "--store",
            str(tmp_path / "s"),
            "--name",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("routescope: error: ")
    assert (
        "does not fit dit-moe:B-8E2A (its shapes match a custom config (depth 2, hidden 64, 4 experts"
        in lines[0]
    )
