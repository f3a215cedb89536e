"""Expert output norms on diffusion runs (issue 17 item 1: expert_stats for the DiT-MoE blocks):
`record_diffusion(..., expert_stats=True)` and `routescope record --expert-stats --classes ...` against
‖down(silu(gate·x) ⊙ up·x)‖₂ computed here from each block's expert weights, on the MoE layer's input as a
hook on the block's `moe` module (not the router) sees it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import routescope
from routescope.cli import main
from routescope.hooks import LoadedModel, record_diffusion
from routescope.models.dit_moe import DiTMoE, DiTMoEConfig
from routescope.store import Run

CLASSES = [1, 7]
STEPS = 2
TINY = {"name": "tiny", "depth": 2, "hidden_size": 64, "num_heads": 4, "image_size": 64, "n_experts": 4}


def moe_inputs(model: torch.nn.Module) -> tuple[dict[int, list[torch.Tensor]], list[object]]:
    """Hooks keeping every block's MoE input `[B, T, D]` per call (layer = block index)."""
    seen: dict[int, list[torch.Tensor]] = {}
    handles = []
    for layer, block in enumerate(model.blocks):

        def keep(_module: torch.nn.Module, args: tuple, layer: int = layer) -> None:
            seen.setdefault(layer, []).append(args[0].detach().clone())

        handles.append(block.moe.register_forward_pre_hook(keep))
    return seen, handles


def expected_norms(model: torch.nn.Module, run: Run, seen: dict[int, list[torch.Tensor]]) -> pd.Series:
    """‖f_e(x)‖₂ per assignment row, from the expert weights; calls of other batch sizes (the router
    probe's one-class step) are skipped, so call i of the recording is its sampler step i."""
    rows = 2 * len(CLASSES)
    a = run.assignments()
    values = np.empty(len(a), dtype=np.float64)
    for i, (layer, step, sample, position, expert) in enumerate(
        a[["layer", "step", "sample", "position", "expert"]].itertuples(index=False)
    ):
        calls = [h for h in seen[int(layer)] if h.shape[0] == rows]
        x = calls[int(step)][int(sample), int(position)].double()
        member = model.blocks[int(layer)].moe.experts[int(expert)]
        gate, up, down = (
            m.weight.detach().double() for m in (member.gate_proj, member.up_proj, member.down_proj)
        )
        values[i] = float(F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down).norm())
    return pd.Series(values, index=a.index)


def check_run(model: torch.nn.Module, run: Run, seen: dict[int, list[torch.Tensor]]) -> None:
    a = run.assignments()
    assert "output_norm" in a.columns
    assert "output_norms" in run.info.caps
    assert a["output_norm"].notna().all()
    assert set(a["step"]) == set(range(STEPS))
    assert set(a["sample"]) == set(range(2 * len(CLASSES)))  # both CFG branches
    expected = expected_norms(model, run, seen)
    assert a["output_norm"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-4, abs=1e-6)
    shared = run.shared_experts()
    assert len(shared) == len(run.decisions())
    assert shared["output_norm"].gt(0).all()


@pytest.mark.parametrize("engine", ["hooks", "nnsight"])
def test_dit_digits_expert_norms_equal_the_experts_weights(engine: str, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    loaded = routescope.load_model("bundled:dit-digits")
    seen, handles = moe_inputs(loaded.model)
    try:
        run = record_diffusion(
            loaded, classes=CLASSES, steps=STEPS, store=tmp_path, name="dit", engine=engine,
            expert_stats=True, progress=False,
        )  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
    check_run(loaded.model, run, seen)


@pytest.fixture
def tiny_dit_moe(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = DiTMoE(DiTMoEConfig(**TINY))  # type: ignore[arg-type]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("pos_embed"):
                p.normal_(0.0, 0.05)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return config, weights


def test_dit_moe_expert_norms_from_the_record_cli_equal_the_experts_weights(
    tiny_dit_moe: tuple[Path, Path], tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    config, weights = tiny_dit_moe
    store = tmp_path / "store"
    argv = ["record", f"dit-moe:{config}", "--weights", str(weights), "--store", str(store), "--name", "tiny"]
    argv += ["--classes", ",".join(map(str, CLASSES)), "--steps", str(STEPS), "--engine", "hooks"]
    assert main([*argv, "--expert-stats"]) == 0
    run = routescope.Store(store).open("tiny")
    # the same weights, sampled again with the same seed, give the inputs the recorded experts saw
    loaded: LoadedModel = routescope.load_model(f"dit-moe:{config}", weights=str(weights))
    seen, handles = moe_inputs(loaded.model)
    try:
        again = record_diffusion(
            loaded, classes=CLASSES, steps=STEPS, store=store, name="again", engine="hooks", progress=False
        )
    finally:
        for handle in handles:
            handle.remove()
    key = ["sample", "position", "step", "layer", "rank"]
    pd.testing.assert_frame_equal(
        run.assignments()[[*key, "expert"]].sort_values(key).reset_index(drop=True),
        again.assignments()[[*key, "expert"]].sort_values(key).reset_index(drop=True),
    )
    check_run(loaded.model, run, seen)
