"""The real recordings the figure tests draw from, made once per test session (tests/conftest.py
`figure_runs`): `lm` (moe-lm on six `bundled:domains` texts, with probabilities, token loss and expert
output norms), `dit` (dit-digits, 2 classes × 1 sample × 4 steps), a prune study's base run, a reroute
probe run and a planted vision-language run (`vlm`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import routescope
from routescope.store import Store
from tests.planted_modality import modality_run


def record_figure_runs(folder: Path) -> dict[str, Any]:
    """Real recordings: `lm` (moe-lm, 6 domain texts, with probabilities, token loss and expert output
    norms) and `dit` (dit-digits)."""
    store = Store(folder / "store")
    texts, labels = routescope.load_dataset("bundled:domains")
    keep = [
        i
        for d in ("prose", "code", "arithmetic")
        for i in np.flatnonzero(np.array(labels["domain"]) == d)[:2]
    ]
    lm = routescope.record(
        routescope.load_model("bundled:moe-lm"),
        [texts[i][:160] for i in keep],
        store=store,
        name="lm",
        labels={"domain": [labels["domain"][i] for i in keep]},
        probs=True,
        token_loss=True,
        expert_stats=True,
        progress=False,
    )
    dit = routescope.record_diffusion(
        routescope.load_model("bundled:dit-digits"),
        classes=[0, 1],
        samples_per_class=1,
        steps=4,
        cfg_scale=4.0,
        seed=0,
        store=store,
        name="dit",
    )
    from routescope.probes import RecordOptions, probe_prune, probe_reroute

    study = probe_prune(
        routescope.load_model("bundled:moe-lm"),
        [texts[i][:160] for i in keep],
        store=Store(store.path.parent / "prune-store"),
        name="pr",
        criteria=["frequency"],
        ratios=[0.25],
        options=RecordOptions(engine="hooks"),
    )
    reroute = probe_reroute(
        routescope.load_model("bundled:moe-lm"),
        [texts[i][:160] for i in keep],
        store=store,
        name="reroute",
        alternatives=3,
        tokens=30,
    )
    vlm = modality_run(store, "vlm", planted=True, seed=0)
    return {"lm": lm, "dit": dit, "store": store, "prune": study.base, "reroute": reroute, "vlm": vlm}
