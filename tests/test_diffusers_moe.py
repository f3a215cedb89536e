"""record_pipeline on diffusers MoE transformers: a tiny random HiDream-I1 pipeline built in the test.

The pipeline runs its own denoising loop; the record must hold every MoE router call at every step with
the scheduler's timestep, both guidance branches as samples, and exactly the experts and weights the
HiDream gate chose (checked against the gate's own outputs captured independently).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from routescope.analysis.registry import compute
from routescope.hooks.diffusers_loop import VIEW, record_pipeline

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


def tiny_nucleus() -> tuple[object, dict[str, torch.Tensor]]:
    """A 2-block NucleusMoE-Image pipeline (both blocks MoE: 4 experts, expert choice with capacity factor
    1, so each expert takes ⌈16 / 4⌉ = 4 of a sequence's 16 patches) and random prompt embeddings."""
    torch.manual_seed(0)
    transformer = diffusers.NucleusMoEImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=8,
        axes_dims_rope=(2, 2, 4),
        dense_moe_strategy="all_moe",
        num_experts=4,
        moe_intermediate_dim=16,
        capacity_factors=1.0,
    ).eval()
    with torch.no_grad():  # the experts' weights are `torch.empty`: give every parameter a finite value
        for parameter in transformer.parameters():
            parameter.normal_(0.0, 0.1)
    pipe = diffusers.NucleusMoEImagePipeline(
        transformer=transformer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        vae=None,
        text_encoder=None,
        processor=None,
    )
    g = torch.Generator().manual_seed(1)
    n = len(PROMPTS)
    mask = torch.ones(n, 5, dtype=torch.long)
    embeds = {
        "prompt_embeds": torch.randn(n, 5, 8, generator=g),
        "prompt_embeds_mask": mask,
        "negative_prompt_embeds": torch.randn(n, 5, 8, generator=g),
        "negative_prompt_embeds_mask": mask,
    }
    return pipe, embeds


def test_a_nucleus_pipeline_records_what_each_expert_picked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expert choice: per expert, the tokens its own `torch.topk` picked, as assignment rows; a token gets
    as many rows as experts picked it (0 included) and keeps its decision row either way."""
    from diffusers.models.transformers.transformer_nucleusmoe_image import NucleusMoELayer

    pipe, embeds = tiny_nucleus()
    transformer = pipe.transformer  # type: ignore[attr-defined]
    inside: list[str] = []
    picks: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (layer path, indices [B, E, C], values)
    topk = torch.topk

    def spy(*args: object, **kwargs: object) -> object:
        out = topk(*args, **kwargs)  # type: ignore[arg-type]
        if inside:
            picks.append((inside[-1], out.indices.clone(), out.values.clone()))
        return out

    monkeypatch.setattr(torch, "topk", spy)
    for path, module in transformer.named_modules():
        if isinstance(module, NucleusMoELayer):
            module.register_forward_pre_hook(lambda _m, _a, p=path: inside.append(p))
            module.register_forward_hook(lambda _m, _a, _o: inside.__delitem__(-1))  # returns None
    run = record_pipeline(
        pipe,
        PROMPTS,
        store=tmp_path,
        name="nucleus",
        steps=2,
        guidance_scale=4.0,
        progress=False,
        height=64,
        width=64,
        **embeds,
    )
    monkeypatch.undo()
    routers = run.info.routers
    assert [r.path for r in routers] == [
        "transformer_blocks.0.img_mlp.gate",
        "transformer_blocks.1.img_mlp.gate",
    ]
    assert all(r.choice == "expert" and r.capacity_factor == 1.0 and r.top_k == 4 for r in routers)
    assert all(r.n_experts == 4 and r.weight_scale == 2.5 for r in routers)
    n = len(PROMPTS)
    samples = run.samples()
    assert samples["branch"].tolist() == ["cond"] * n + ["uncond"] * n
    tokens = run.tokens()
    assert len(tokens) == 2 * n * 16
    assert (tokens["row"].max(), tokens["col"].max()) == (3, 3)
    d, a = run.decisions(), run.assignments()
    assert len(d) == 2 * 2 * 2 * n * 16  # steps × routers × samples × patches: one row per token
    assert len(picks) == 2 * 2 * 2  # steps × transformer calls (cond, uncond) × layers
    by_path = {r.path.rsplit(".", 1)[0]: r.id for r in routers}
    empty = 0
    for index, (layer, indices, values) in enumerate(picks):
        step, branch = index // 4, (index // 2) % 2
        router = by_path[layer]
        batch, n_experts, capacity = indices.shape
        assert (batch, n_experts, capacity) == (n, 4, 4)
        expected: dict[tuple[int, int], dict[int, float]] = {}
        for b in range(batch):
            for e in range(n_experts):
                for c in range(capacity):
                    key = (b + branch * n, int(indices[b, e, c]))
                    expected.setdefault(key, {})[e] = float(values[b, e, c])
        got = a[(a["step"] == step) & (a["router"] == router) & (a["sample"] >= branch * n)]
        got = got[got["sample"] < (branch + 1) * n]
        recorded: dict[tuple[int, int], dict[int, float]] = {}
        for row in got.itertuples():
            recorded.setdefault((row.sample, row.position), {})[row.expert] = row.weight
        assert recorded.keys() == expected.keys()
        for key, chosen in expected.items():
            total = sum(chosen.values())
            assert recorded[key].keys() == chosen.keys()
            for e, value in chosen.items():
                assert recorded[key][e] == pytest.approx(value / total * 2.5, rel=1e-5)
            ranks = got[(got["sample"] == key[0]) & (got["position"] == key[1])].sort_values("rank")
            assert ranks["rank"].tolist() == list(range(len(chosen)))
            assert [chosen[e] for e in ranks["expert"]] == sorted(chosen.values(), reverse=True)
        empty += batch * 16 - len(expected)
    assert empty > 0  # some patches were picked by no expert and still have their decision rows
    # repeat rates: the uniform top-k level uses the paired patches' observed number of experts, not k = E
    k = a.groupby(["step", "router", "sample", "position"]).size().rename("k").reset_index()
    right = k.assign(position=k["position"] - 1)  # the raster neighbour of each patch, same row only
    pairs = k[k["position"] % 4 != 3].merge(right, on=["step", "router", "sample", "position"])
    rates = compute("repeat", run).set_index("layer")
    for router in routers:
        mine = pairs[pairs["router"] == router.id]
        mean_k = (mine["k_x"].sum() + mine["k_y"].sum()) / (2 * len(mine))
        assert rates.loc[router.layer, "pairs"] == len(mine)
        assert rates.loc[router.layer, "uniform_topk"] == pytest.approx(mean_k / 4)
