"""Routing by modality (analysis/modality.py): load shares and the within-input permutation test, on
planted runs written through the real store writer (image tokens forced to experts 0–1, text tokens to
2–3) and on nulls (experts drawn without regard to modality), plus the refusal for runs without modality.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from routescope.analysis import compute
from routescope.store import InputError, Store
from tests.planted import planted_run
from tests.planted_modality import modality_run


def test_load_shares_by_modality(tmp_path) -> None:
    run = modality_run(Store(tmp_path), "planted", planted=True, seed=0)
    table = compute("modality", run)
    a = run.assignments().merge(run.tokens()[["sample", "position", "modality"]], on=["sample", "position"])
    expected = a.groupby(["layer", "modality"])["expert"].value_counts(normalize=True)
    mine = table.set_index(["layer", "modality", "expert"])["share"]
    pd.testing.assert_series_equal(
        mine.sort_index(), expected.rename("share").sort_index(), check_names=False
    )
    planted_layer = table[table["layer"] == 1]
    assert planted_layer[planted_layer["modality"] == "image"]["expert"].tolist() == [0, 1]
    assert planted_layer[planted_layer["modality"] == "text"]["expert"].tolist() == [2, 3]
    load = a[a["layer"] == 1]["expert"].value_counts(normalize=True)
    row = planted_layer[(planted_layer["modality"] == "image") & (planted_layer["expert"] == 0)].iloc[0]
    assert row["lift"] == pytest.approx(row["share"] / load[0])
    assert set(compute("modality", run, layer=0)["layer"]) == {0}


def test_specialization_finds_the_planted_split_and_not_the_null(tmp_path) -> None:
    run = modality_run(Store(tmp_path), "planted", planted=True, seed=0)
    table = compute("modality-specialization", run, n_permutations=199).set_index("layer")
    assert table.loc[1, "tvd"] == pytest.approx(1.0)
    assert table.loc[1, "p_value"] == pytest.approx(1 / 200)
    assert table.loc[1, "unit"] == "sample"
    assert table.loc[1, "n_units"] == 12
    assert table.loc[1, "method"] == "permutation within units (sample)"
    assert (table.loc[1, "visual_tokens"], table.loc[1, "text_tokens"]) == (72, 120)
    assert table.loc[0, "p_value"] > 0.01  # layer 0 is drawn at random in the planted run too
    p_values = [
        compute(
            "modality-specialization",
            modality_run(Store(tmp_path), f"null{seed}", planted=False, seed=seed),
            n_permutations=99,
            seed=seed,
        )["p_value"]
        for seed in range(10)
    ]
    p = np.concatenate(p_values)
    assert (p < 0.05).mean() <= 0.2  # 20 null layers: about one below 0.05 by chance
    assert p.mean() > 0.3


def test_runs_without_modality_are_refused(tmp_path) -> None:
    run = planted_run(Store(tmp_path), "text", experts={0: [[0, 1], [1, 2]]})
    for kind in ("modality", "modality-specialization"):
        with pytest.raises(InputError, match="no token modality; record it with images") as info:
            compute(kind, run)
        assert info.value.field == "images"


def test_modality_figures_draw_the_tables_and_mark_only_the_planted_layer(tmp_path) -> None:
    from routescope.figures import make_figure, standard_set

    store = Store(tmp_path)
    run = modality_run(store, "planted", planted=True, seed=0)
    fig, table = make_figure("modality-specialization", run)
    line = next(trace for trace in fig.data if trace.name == "visual vs text")
    null = next(trace for trace in fig.data if trace.name == "permutation null (mean)")
    assert list(line.y) == pytest.approx(table.sort_values("layer")["tvd"].tolist())
    assert list(null.y) == pytest.approx(table.sort_values("layer")["null_mean"].tolist())
    filled = [colour != "white" for colour in line.marker.color]
    assert filled == (table.sort_values("layer")["p_value"] < 0.05).tolist() == [False, True]
    assert (line.customdata[0][1], line.customdata[0][3]) == (12, "sample")  # unit and its count on hover

    fig, table = make_figure("modality", run, layer=1)
    heat = fig.data[0]
    assert list(heat.x) == ["image", "text"]
    assert list(heat.y) == ["0", "1", "2", "3"]
    lift = table.set_index(["expert", "modality"])["lift"]
    assert heat.customdata[0][0] == pytest.approx(lift[(0, "image")])
    assert heat.customdata[2][0] == 0.0
    assert heat.customdata[2][1] == pytest.approx(lift[(2, "text")])
    assert heat.z[0][0] > 0 > heat.z[0][1]  # expert 0 prefers image tokens (log₂ lift)

    names = {figure.kind for figure in standard_set(run)}
    assert {"modality", "modality-specialization"} <= names
    text_only = planted_run(store, "text", experts={0: [[0, 1], [1, 2]]})
    assert not {"modality", "modality-specialization"} & {figure.kind for figure in standard_set(text_only)}


def test_experts_page_shows_the_modality_section_of_a_run_with_images(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from routescope.dashboard import state
    from tests.test_dashboard_pages import array, charts, open_page

    store = Store(tmp_path / "store")
    run = modality_run(store, "vlm", planted=True, seed=0)
    planted_run(store, "text", experts={0: [[0, 1], [1, 2]]})
    at = open_page(store.path, monkeypatch, "experts.py", state.EXPERTS_RUN, "vlm")
    at.selectbox(key=state.scoped(state.EXPERTS_MODALITY_LAYER, "vlm")).set_value(1).run()
    assert not at.exception
    drawn = charts(at)
    test = compute("modality-specialization", run).sort_values("layer")
    line = drawn[state.scoped(state.EXPERTS_MODALITY_CHART, "vlm")]["data"][0]
    np.testing.assert_allclose(array(line["y"]), test["tvd"])
    lift = compute("modality", run, layer=1).pivot(index="expert", columns="modality", values="lift")
    heat = drawn[state.scoped(state.EXPERTS_MODALITY_LIFT_CHART, "vlm", 1)]["data"][0]
    np.testing.assert_allclose(array(heat["customdata"]), lift.fillna(0.0).to_numpy())

    at.selectbox(key=state.EXPERTS_RUN).set_value("text").run()  # a run without images: no section
    assert not at.exception
    assert not [key for key in charts(at) if key.startswith(state.EXPERTS_MODALITY_CHART)]
