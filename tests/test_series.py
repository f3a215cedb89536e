"""Router saturation over a checkpoint series (issue 17 item 5): a few-step `routescope train moe-lm` run
saving checkpoints, each recorded on the same texts, against OLMoE's saturation computed here in pandas
from the runs' own assignments."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import routescope
from routescope.analysis import compute
from routescope.cli import main
from routescope.figures import make_figure
from routescope.store import InputError, Run, Store

TEXTS = ["the cat sat on the mat and then", "def f(x): return x + 1", "in 1850 the treaty was signed"]
STEPS, EVERY = 6, 2


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Store, list[Run]]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("series")
    out = root / "moe-lm"
    argv = ["train", "moe-lm", "--out", str(out), "--steps", str(STEPS), "--smoke", "--threads", "1"]
    assert main([*argv, "--save-every", str(EVERY)]) == 0
    store = Store(root / "store")
    runs = []
    for step in range(EVERY, STEPS + 1, EVERY):
        model = routescope.load_model(str(out / "checkpoints" / f"step-{step}"))
        runs.append(routescope.record(model, TEXTS, store=store, name=f"step-{step}", progress=False))
    final = routescope.load_model(str(out))
    runs.append(routescope.record(final, TEXTS, store=store, name="final", progress=False))
    return out, store, runs


def olmoe_saturation(run: Run, reference: Run) -> pd.DataFrame:
    """Per layer: mean |E_run ∩ E_ref| / k over tokens, and the share with the same top-1 expert."""
    keys = ["sample", "position", "step", "layer", "call"]

    def sets(r: Run) -> pd.DataFrame:
        a = r.assignments()
        a = a[~a["dropped"]].sort_values([*keys, "rank"])
        return a.groupby(keys).agg(experts=("expert", list)).reset_index()

    both = sets(reference).merge(sets(run), on=keys, suffixes=("_ref", "_run"))
    both["overlap"] = [
        len(set(x) & set(y)) / len(x) for x, y in zip(both["experts_ref"], both["experts_run"], strict=True)
    ]
    both["same"] = [x[0] == y[0] for x, y in zip(both["experts_ref"], both["experts_run"], strict=True)]
    return both.groupby("layer").agg(
        decisions=("overlap", "size"), saturation=("overlap", "mean"), top1=("same", "mean")
    )


def test_training_saves_loadable_checkpoints_every_n_steps(series: tuple[Path, Store, list[Run]]) -> None:
    out, _, runs = series
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["checkpoints"] == [f"checkpoints/step-{s}" for s in range(EVERY, STEPS + 1, EVERY)]
    for step in range(EVERY, STEPS + 1, EVERY):
        folder = out / "checkpoints" / f"step-{step}"
        for name in ("config.json", "model.safetensors", "tokenizer.json", "domains.jsonl"):
            assert (folder / name).is_file(), (step, name)
    assert len(runs) == STEPS // EVERY + 1


def test_saturation_series_equals_olmoe_saturation_from_assignments(
    series: tuple[Path, Store, list[Run]],
) -> None:
    _, _, runs = series
    *checkpoints, final = runs
    table = compute("saturation", final, series=checkpoints)
    assert list(table["run"].unique()) == [r.name for r in checkpoints]
    for index, run in enumerate(checkpoints):
        expected = olmoe_saturation(run, final)
        got = table[table["checkpoint"] == index].set_index("layer")
        assert list(got.index) == list(expected.index)
        assert (got["decisions"] == expected["decisions"]).all()
        assert got["saturation"].to_numpy() == pytest.approx(expected["saturation"].to_numpy(), abs=1e-12)
        assert got["top1_agreement"].to_numpy() == pytest.approx(expected["top1"].to_numpy(), abs=1e-12)
    # the last checkpoint is the final weights: saturated everywhere
    last = table[table["checkpoint"] == len(checkpoints) - 1]
    assert (last["saturation"] == 1.0).all()


def test_report_and_figure_take_the_series_after_compare(
    series: tuple[Path, Store, list[Run]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, store, runs = series
    *checkpoints, final = runs
    names = [r.name for r in checkpoints]
    csv = tmp_path / "saturation.csv"
    argv = ["report", "--store", str(store.path), "--run", "final", "--kind", "saturation"]
    assert main([*argv, "--compare", *names, "--format", "csv", "--out", str(csv)]) == 0
    printed = pd.read_csv(csv)
    table = compute("saturation", final, series=checkpoints)
    assert printed["saturation"].to_numpy() == pytest.approx(table["saturation"].to_numpy())
    assert list(printed["run"]) == list(table["run"])
    capsys.readouterr()
    # a two-run kind refuses a series; a series kind refuses no series, both in one line, exit 2
    agreement = ["report", "--store", str(store.path), "--run", "final", "--kind", "agreement"]
    assert main([*agreement, "--compare", *names]) == 2
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert all("--compare" in line for line in err)
    fig, _drawn = make_figure("saturation", final, series=checkpoints)
    layers = sorted(table["layer"].unique())
    assert len(fig.data) == len(layers)
    for trace, layer in zip(fig.data, layers, strict=True):
        expected = table[table["layer"] == layer].sort_values("checkpoint")["saturation"]
        assert list(trace.y) == pytest.approx(expected.tolist())
    with pytest.raises(InputError, match="series"):
        make_figure("saturation", final)
