"""record_pipeline on diffusers MoE transformers: a tiny random HiDream-I1 pipeline built in the test.

The pipeline runs its own denoising loop; the record must hold every MoE router call at every step with
the scheduler's timestep, both guidance branches as samples, and exactly the experts and weights the
HiDream gate chose (checked against the gate's own outputs captured independently).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from routescope.analysis.registry import compute
from routescope.hooks.diffusers_loop import VIEW, record_pipeline
from routescope.store import NoRoutersError

diffusers = pytest.importorskip("diffusers")

PROMPTS = ["a cat", "a dog"]
TEXT_TOKENS = 5 + 7 + 7  # T5 tokens + the shared Llama layer's + each single block's own Llama tokens


def tiny_hidream() -> tuple[object, dict[str, torch.Tensor]]:
    """A 2 double + 2 single block HiDream pipeline (4 experts, top-2) and random prompt embeddings."""
    torch.manual_seed(0)
    transformer = diffusers.HiDreamImageTransformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=[8, 8],
        text_emb_dim=8,
        num_routed_experts=4,
        num_activated_experts=2,
        axes_dims_rope=(4, 2, 2),
        max_resolution=(16, 16),
        llama_layers=[0, 1, 2, 3],
    ).eval()
    none = dict.fromkeys(
        [f"{kind}{suffix}" for kind in ("text_encoder", "tokenizer") for suffix in ("", "_2", "_3", "_4")]
    )
    pipe = diffusers.HiDreamImagePipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=None, transformer=transformer, **none
    )
    pipe.default_sample_size = 8  # the pipeline rescales to this area: 64×64 pixels → 8×8 latents
    g = torch.Generator().manual_seed(1)
    n = len(PROMPTS)
    embeds = {
        "prompt_embeds_t5": torch.randn(n, 5, 8, generator=g),
        "negative_prompt_embeds_t5": torch.randn(n, 5, 8, generator=g),
        "prompt_embeds_llama3": torch.randn(4, n, 7, 8, generator=g),
        "negative_prompt_embeds_llama3": torch.randn(4, n, 7, 8, generator=g),
        "pooled_prompt_embeds": torch.randn(n, 8, generator=g),
        "negative_pooled_prompt_embeds": torch.randn(n, 8, generator=g),
    }
    return pipe, embeds


def test_a_hidream_pipeline_records_every_router_at_every_step(tmp_path: Path) -> None:
    pipe, embeds = tiny_hidream()
    transformer = pipe.transformer  # type: ignore[attr-defined]
    keys_before = set(transformer.state_dict())
    seen_timesteps: list[float] = []
    first_gate: list[tuple[torch.Tensor, torch.Tensor]] = []
    gate = transformer.double_stream_blocks[0].block.ff_i.gate
    pre = transformer.register_forward_pre_hook(
        lambda _m, _a, kw: seen_timesteps.append(float(kw["timesteps"][0])), with_kwargs=True
    )
    post = gate.register_forward_hook(lambda _m, _a, out: first_gate.append((out[0].clone(), out[1].clone())))
    run = record_pipeline(
        pipe, PROMPTS, store=tmp_path, name="hidream", steps=3, probs=True, progress=False, **embeds
    )
    pre.remove()
    post.remove()

    assert [r["path"] for r in run.routers] == [
        "double_stream_blocks.0.block.ff_i.gate",
        "double_stream_blocks.1.block.ff_i.gate",
        "single_stream_blocks.0.block.ff_i.gate",
        "single_stream_blocks.1.block.ff_i.gate",
    ]
    assert [r["layer"] for r in run.routers] == [0, 1, 2, 3]  # block numbers collide: execution order
    assert {(r["router_class"], r["n_experts"], r["top_k"]) for r in run.routers} == {("MoEGate", 4, 2)}
    assert run.routers[0]["shared_experts"] == ["double_stream_blocks.0.block.ff_i.shared_experts"]
    assert run.manifest["patch_grid"] == [4, 4]
    assert run.steps()["timestep"].tolist() == pytest.approx(seen_timesteps)
    assert run.steps()["sigma"].tolist() == pytest.approx(pipe.scheduler.sigmas[:3].tolist())  # type: ignore[attr-defined]
    samples = run.samples()
    assert samples["branch"].tolist() == ["cond", "cond", "uncond", "uncond"]
    assert samples["prompt"].tolist() == PROMPTS * 2

    a = run.assignments()
    per_step = 4 * (16 + 16 + (16 + TEXT_TOKENS) * 2) * 2  # samples × tokens of the 4 routers × k
    assert len(a) == 3 * per_step
    assert a.groupby("router")["position"].max().tolist() == [15, 15, 15 + TEXT_TOKENS, 15 + TEXT_TOKENS]

    # step 0, router 0: the transformer batch is [uncond, cond]; samples are cond 0..1, uncond 2..3
    idx, weight = first_gate[0]
    tokens = 16
    step0 = a[(a["step"] == 0) & (a["router"] == 0)].sort_values(["sample", "position", "rank"])
    for batch_row, sample in enumerate([2, 3, 0, 1]):
        rows = slice(batch_row * tokens, (batch_row + 1) * tokens)
        order = weight[rows].argsort(dim=-1, descending=True)
        mine = step0[step0["sample"] == sample]
        assert mine["expert"].tolist() == idx[rows].gather(-1, order).reshape(-1).tolist()
        assert mine["weight"].to_numpy() == pytest.approx(weight[rows].gather(-1, order).reshape(-1).numpy())
    d = run.decisions()
    top1 = a[a["rank"] == 0].merge(d, on=["sample", "position", "step", "router", "call"])
    assert top1["max_prob"].to_numpy() == pytest.approx(top1["weight"].to_numpy(), abs=1e-6)  # unrenormalised

    for kind in ("steps", "step-similarity", "phases", "sensitivity", "spatial"):
        assert len(compute(kind, run)) > 0, kind
    assert not [name for name, _ in transformer.named_modules() if VIEW in name]
    assert set(transformer.state_dict()) == keys_before


def test_expert_choice_layers_are_refused_before_anything_runs(tmp_path: Path) -> None:
    from diffusers.models.transformers.transformer_nucleusmoe_image import NucleusMoELayer

    layer = NucleusMoELayer(
        hidden_size=8,
        moe_intermediate_dim=8,
        num_experts=4,
        capacity_factor=1.0,
        use_sigmoid=False,
        route_scale=1.0,
    )
    pipe = SimpleNamespace(transformer=torch.nn.ModuleDict({"moe": layer}))
    with pytest.raises(NoRoutersError, match=r"^moe \(NucleusMoELayer\) routes by expert choice"):
        record_pipeline(pipe, ["x"], store=tmp_path, name="nucleus", steps=1)
    assert not (tmp_path / "nucleus").exists()
