"""The figure builders the dashboard pages added to `routescope.figures`, and the pages' pure helpers
(`summaries.peak_lift`, export file names and tables), on small hand-built tables with known answers:
each figure draws exactly its table's numbers, in the paper template."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from routescope.dashboard.exports import file_stem, table_text
from routescope.dashboard.markup import legend_html
from routescope.dashboard.summaries import peak_lift
from routescope.figures import (
    TEMPLATE,
    expert_colour,
    figure_binned_histogram,
    figure_branches,
    figure_expert_overview,
    figure_expert_steps,
    figure_partners,
    figure_side_by_side,
    figure_step_lines,
    figure_token_weights,
    width_px,
)
from routescope.store import InputError


def z_of(fig, trace: int = 0) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(fig.data[trace].z, dtype=float)


def test_expert_overview_draws_log2_lift_and_names_the_preferred_value() -> None:
    table = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "expert": [0, 2, 0, 1],
            "top_value": ["code", "<b>prose</b>", "maths", "code"],
            "lift": [4.0, 0.5, 1.0, 2.0],
        }
    )
    fig = figure_expert_overview(table, value="lift", label="domain")
    z = z_of(fig)
    assert z.shape == (2, 3)  # layers 0, 1 × experts 0, 1, 2 (expert 1 unused at layer 0)
    np.testing.assert_allclose(z[0, [0, 2]], [2.0, -1.0])
    np.testing.assert_allclose(z[1, :2], [0.0, 1.0])
    assert math.isnan(z[0, 1])  # no lift: left grey
    assert math.isnan(z[1, 2])
    custom = np.asarray(fig.data[0].customdata, dtype=object)
    assert custom[0, 2, 1] == "&lt;b&gt;prose&lt;/b&gt;"  # label values are escaped before plotly draws them
    assert float(custom[0, 0, 0]) == 4.0
    assert fig.layout.width == width_px("single")
    load = pd.DataFrame({"layer": [0, 0], "expert": [0, 1], "load": [0.25, 0.75]})
    np.testing.assert_allclose(z_of(figure_expert_overview(load, value="load")), [[0.25, 0.75]])


def test_partners_are_the_coactivation_row_with_the_independence_level() -> None:
    table = pd.DataFrame(
        {
            "expert_a": [3, 3, 3, 1],
            "expert_b": [0, 1, 2, 3],
            "count": [6, 2, 0, 2],
            "p_b_given_a": [0.6, 0.2, 0.0, 0.5],
            "lift": [1.5, 2.0, 0.0, 2.0],
        }
    )
    fig = figure_partners(table, expert=3, n=2)
    bars, chance = fig.data
    assert list(bars.x) == ["0", "1"]  # the two most frequent partners, most frequent first
    np.testing.assert_allclose(bars.y, [0.6, 0.2])
    np.testing.assert_allclose(chance.y, [0.6 / 1.5, 0.2 / 2.0])  # P(b) = P(b | a) / lift
    three = figure_partners(table, expert=3, n=5)
    assert math.isnan(float(three.data[1].y[2]))  # lift 0: no independence level to draw
    with pytest.raises(InputError, match="expert 2 was never chosen together"):
        figure_partners(table, expert=2)


def test_expert_steps_has_one_line_per_layer_with_zero_where_unused() -> None:
    steps = pd.DataFrame(
        {
            "layer": [0, 0, 0, 1, 1],
            "step": [0, 1, 2, 0, 2],
            "expert": [5, 5, 1, 5, 5],
            "count": [2, 1, 3, 4, 1],
            "load": [0.5, 0.25, 0.75, 1.0, 0.2],
        }
    )
    fig = figure_expert_steps(steps, expert=5)
    assert [t.name for t in fig.data] == ["layer 0", "layer 1"]
    np.testing.assert_allclose(fig.data[0].y, [0.5, 0.25, 0.0])
    np.testing.assert_allclose(fig.data[1].y, [1.0, 0.0, 0.2])
    assert list(fig.data[0].x) == [0, 1, 2]


def test_token_weights_matrix_on_a_fixed_scale_with_escaped_router_names() -> None:
    matrix = pd.DataFrame(
        [[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]], index=["layer 0", "<i>x</i>"], columns=[0, 1, 2]
    )
    fig = figure_token_weights(matrix, value="prob")
    np.testing.assert_allclose(z_of(fig), matrix.to_numpy())
    assert list(fig.data[0].y) == ["layer 0", "&lt;i&gt;x&lt;/i&gt;"]
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0.0, 1.0)
    assert fig.data[0].colorbar.title.text == "router probability"
    with pytest.raises(InputError, match="empty"):
        figure_token_weights(matrix.iloc[:0])


def test_step_lines_draw_the_experts_whose_load_changes_most() -> None:
    rows = []
    for step in range(4):
        for expert, load in enumerate([0.25, 0.25 + 0.05 * step, 0.25 - 0.05 * step, 0.25]):
            rows.append({"layer": 2, "step": step, "expert": expert, "count": 1, "load": load})
    steps = pd.DataFrame(rows)
    fig = figure_step_lines(steps, layer=2, max_experts=2)
    assert [t.name for t in fig.data] == ["expert 1", "expert 2"]
    np.testing.assert_allclose(fig.data[0].y, [0.25, 0.30, 0.35, 0.40])
    assert len(figure_step_lines(steps, layer=2).data) == 4
    with pytest.raises(InputError, match="no layer 0"):
        figure_step_lines(steps, layer=0)


def test_branches_are_each_branch_share_per_expert() -> None:
    table = pd.DataFrame(
        {
            "layer": [0, 0, 0, 0, 1],
            "expert": [0, 1, 0, 2, 0],
            "branch": ["cond", "cond", "uncond", "uncond", "cond"],
            "count": [3, 1, 2, 2, 1],
            "share": [0.75, 0.25, 0.5, 0.5, 1.0],
        }
    )
    fig = figure_branches(table, layer=0)
    assert [t.name for t in fig.data] == ["cond", "uncond"]
    np.testing.assert_allclose(fig.data[0].y, [0.75, 0.25, 0.0])
    np.testing.assert_allclose(fig.data[1].y, [0.5, 0.0, 0.5])
    assert fig.layout.barmode == "group"


def test_binned_histogram_draws_shares_at_bin_centres() -> None:
    table = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "bin_low": [0.0, 0.5, 0.0, 0.5],
            "bin_high": [0.5, 1.0, 0.5, 1.0],
            "share": [0.25, 0.75, 1.0, 0.0],
        }
    )
    fig = figure_binned_histogram(table, value="margin")
    assert [t.name for t in fig.data] == ["layer 0", "layer 1"]
    np.testing.assert_allclose(fig.data[0].x, [0.25, 0.75])
    np.testing.assert_allclose(fig.data[0].y, [0.25, 0.75])
    assert fig.layout.xaxis.title.text == "top-1 − top-2 probability"
    assert fig.layout.template.layout.font.size == pytest.approx(8 * 96 / 72)
    assert TEMPLATE == "routescope-paper"


def test_side_by_side_lines_per_layer_or_dots_against_the_diagonal() -> None:
    per_layer = pd.DataFrame(
        {"layer": [0, 1], "cv@a": [0.5, 0.7], "cv@b": [0.4, 0.9], "cv@diff": [-0.1, 0.2]}
    )
    fig = figure_side_by_side(per_layer, metric="cv", runs=("a", "b"), keys=["layer"])
    assert [t.name for t in fig.data] == ["a", "b"]
    np.testing.assert_allclose(fig.data[1].y, [0.4, 0.9])
    rows = pd.DataFrame(
        {"layer": [0, 0, 1], "expert": [0, 1, 0], "load@a": [0.2, 0.8, 1.0], "load@b": [0.3, np.nan, 0.6]}
    )
    dots = figure_side_by_side(rows, metric="load", runs=("a", "b"), keys=["layer", "expert"])
    diagonal, points = dots.data
    np.testing.assert_allclose(points.x, [0.2, 1.0])  # the row missing from b is left out
    np.testing.assert_allclose(points.y, [0.3, 0.6])
    assert list(points.hovertext) == ["layer 0, expert 0", "layer 1, expert 0"]
    assert list(diagonal.x) == list(diagonal.y) == [0.2, 1.0]


def test_peak_lift_picks_each_experts_largest_lift() -> None:
    specialization = pd.DataFrame(
        {
            "layer": [0, 0, 0, 0, 1, 1],
            "expert": [0, 0, 1, 1, 0, 0],
            "domain": ["code", "prose", "code", "prose", "code", "prose"],
            "count": [9, 1, 5, 5, 2, 4],
            "share": [0.9, 0.1, 0.5, 0.5, 0.2, 0.4],
            "lift": [1.8, 0.2, 1.0, 1.0, 0.5, 2.0],
        }
    )
    peaks = peak_lift(specialization, "domain")
    assert peaks[["layer", "expert", "top_value", "lift"]].values.tolist() == [
        [0, 0, "code", 1.8],
        [0, 1, "code", 1.0],  # a tie in lift and count: the first value in sorted order
        [1, 0, "prose", 2.0],
    ]
    with pytest.raises(InputError, match="class"):
        peak_lift(specialization, "class")


def test_export_names_are_safe_and_tables_render_as_csv_and_latex() -> None:
    assert file_stem("../my run", "load", None, "layer 0") == "my-run-load-layer-0"
    assert file_stem("", None) == "figure"
    table = pd.DataFrame({"domain": ["a_b", "50%"], "lift": [1.5, 2.0]})
    assert table_text(table, "csv") == "domain,lift\na_b,1.5\n50%,2.0\n"
    latex = table_text(table, "latex")
    assert r"a\_b & 1.5 \\" in latex
    assert r"50\% & 2 \\" in latex
    assert latex.startswith(r"\begin{tabular}{lr}")
    assert latex.endswith("\\end{tabular}\n")
    with pytest.raises(InputError, match="csv, latex"):
        table_text(table, "xlsx")


def test_expert_colours_are_one_palette_for_figures_and_markup() -> None:
    colours = [expert_colour(e, 8) for e in range(8)]
    assert len(set(colours)) == 8
    assert colours[0] == "hsl(0, 70%, 78%)"
    assert colours[2] == "hsl(90, 70%, 78%)"
    assert expert_colour(9, 8) == colours[1]
    assert f"background: {colours[3]};" in legend_html([3], 8)
