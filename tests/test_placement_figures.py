"""Placement figure kinds draw their analysis tables: coverage curves, hot sets, device balance per
placement, drift between two runs and cross-layer predictability, through `make_figure` and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routescope.analysis import coverage, device_load, expert_drift, hot_set, layer_predictability, load_drift
from routescope.cli import main
from routescope.figures import FIGURES, make_figure
from routescope.store import Store
from tests.planted import planted_run
from tests.test_placement import CONCENTRATED, top1


@pytest.fixture
def pair(store: Store) -> tuple:
    a = planted_run(store, "a", experts=CONCENTRATED)
    b = planted_run(store, "b", experts={0: top1([3, 3, 2, 2]), 1: top1([4, 2, 2, 2])})
    return a, b


def test_placement_kinds_draw_their_tables(pair: tuple) -> None:
    a, b = pair
    fig, table = make_figure("coverage", a)
    assert table.equals(coverage(a))
    np.testing.assert_allclose(fig.data[0].y, [0.5, 0.8, 0.9, 1.0])
    assert fig.data[-1].name == "uniform"
    fig, table = make_figure("hot-set", a)
    assert table.equals(hot_set(a))
    np.testing.assert_allclose(fig.data[0].y, [1, 2])  # 50 %: layer 0, layer 1
    np.testing.assert_allclose(fig.data[1].y, [2, 2])  # its even-load level, dashed
    assert fig.data[1].line.dash == "dash"
    fig, table = make_figure("placement", a)
    expected = device_load(a, devices=4)  # 8 devices capped at the layers' 4 experts
    assert table.equals(expected)
    balanced = expected[expected["placement"] == "balanced"]["balancedness"]
    drawn = {trace.name: trace.y for trace in fig.data if trace.xaxis in ("x", None)}
    np.testing.assert_allclose(drawn["placement balanced"], balanced)
    fig, table = make_figure("drift", a, other=b)
    assert table.equals(load_drift(a, b))
    np.testing.assert_allclose(fig.data[0].y, table["tv_distance"])
    fig, table = make_figure("drift-experts", a, other=b)
    assert table.equals(expert_drift(a, b))
    np.testing.assert_allclose(np.asarray(fig.data[0].z)[0], table[table["layer"] == 0]["change"])
    fig, table = make_figure("predictability", a)
    assert table.equals(layer_predictability(a))
    np.testing.assert_allclose(fig.data[0].y, table["accuracy"])
    assert FIGURES["drift"].requires == ("other",)


def test_cli_reports_and_draws_placement(
    pair: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = pair
    store = str(a.path.parent)
    args = ["report", "--store", store, "--run", "a", "--kind", "placement", "--param", "devices=2"]
    assert main([*args, "--param", "replicas=1", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "layer,placement,devices,replicas,max_share,max_over_mean,balancedness"
    assert len(lines) == 1 + 2 * 3
    assert main(["report", "--store", store, "--run", "a", "--kind", "drift", "--compare", "b"]) == 0
    capsys.readouterr()
    out = tmp_path / "hot.svg"
    assert main(["figure", "--store", store, "--run", "a", "--kind", "hot-set", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert main([*args[:-2], "--param", "devices=9"]) == 2
    assert "devices must be between 1 and the 4 physical experts" in capsys.readouterr().err
