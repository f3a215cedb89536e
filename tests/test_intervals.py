"""`intervals.mean_intervals`: bootstrap intervals of group means over units, on hand-built per-unit sums
with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from routescope.analysis.intervals import mean_intervals
from routescope.store import InputError


def test_identical_units_give_a_point_interval_at_the_mean() -> None:
    per_unit = pd.DataFrame(
        {"group": [0, 0, 0, 1, 1, 1], "unit": [0, 1, 2, 0, 1, 2], "total": [6.0, 3.0, 9.0, 1.0, 2.0, 4.0],
         "count": [2, 1, 3, 1, 2, 4]}
    )  # fmt: skip
    out = mean_intervals(per_unit, ["group"], n_boot=200)
    assert out["group"].tolist() == [0, 1]
    np.testing.assert_allclose(out["ci_low"], [3.0, 1.0])  # every unit's mean is 3 (group 0) and 1 (group 1)
    np.testing.assert_allclose(out["ci_high"], [3.0, 1.0])


def test_interval_spans_the_unit_means_and_narrows_with_more_units() -> None:
    two = pd.DataFrame({"g": [0, 0], "unit": [0, 1], "total": [10.0, 30.0], "count": [10, 10]})
    out = mean_intervals(two, ["g"], n_boot=1000, seed=1)
    assert out["ci_low"].iloc[0] == pytest.approx(1.0)  # a resample of unit 0 twice
    assert out["ci_high"].iloc[0] == pytest.approx(3.0)
    many = pd.DataFrame(
        {"g": 0, "unit": range(40), "total": [10.0, 30.0] * 20, "count": 10}
    )  # the same two kinds of unit, 20 of each
    wide = mean_intervals(many, ["g"], n_boot=1000, seed=1)
    assert 1.0 < wide["ci_low"].iloc[0] < 2.0 < wide["ci_high"].iloc[0] < 3.0


def test_groups_of_several_columns_and_bad_options() -> None:
    per_unit = pd.DataFrame(
        {
            "layer": [0, 0, 1],
            "bin": [2, 3, 2],
            "unit": [0, 1, 1],
            "total": [1.0, 2.0, 3.0],
            "count": [1, 1, 1],
        }
    )
    out = mean_intervals(per_unit, ["layer", "bin"], n_boot=50)
    assert list(zip(out["layer"], out["bin"], strict=True)) == [(0, 2), (0, 3), (1, 2)]
    with pytest.raises(InputError, match="n_boot"):
        mean_intervals(per_unit, ["layer"], n_boot=5)
    with pytest.raises(InputError, match="level"):
        mean_intervals(per_unit, ["layer"], level=1.5)


def test_groups_in_chunks_read_the_same_resamples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many groups (a token label) are bootstrapped a chunk at a time; each chunk draws the same resamples,
    so the intervals equal those of one pass."""
    import routescope.analysis.intervals as intervals

    rng = np.random.default_rng(0)
    per_unit = pd.DataFrame(
        {
            "g": rng.integers(0, 9, 300),
            "unit": rng.integers(0, 40, 300),
            "total": rng.gamma(2.0, 1.0, 300),
            "count": rng.integers(1, 4, 300),
        }
    ).drop_duplicates(["g", "unit"])
    whole = mean_intervals(per_unit, ["g"], n_boot=200, seed=3)
    monkeypatch.setattr(intervals, "GROUP_CHUNK", 2)
    chunked = mean_intervals(per_unit, ["g"], n_boot=200, seed=3)
    pd.testing.assert_frame_equal(whole, chunked)


def test_a_group_only_one_unit_holds_has_no_interval() -> None:
    per_unit = pd.DataFrame({"g": [0, 0, 1], "unit": [0, 1, 1], "total": [2.0, 6.0, 5.0], "count": [1, 2, 1]})
    out = mean_intervals(per_unit, ["g"], n_boot=500).set_index("g")
    assert out.loc[0, "ci_low"] == pytest.approx(2.0)
    assert out.loc[0, "ci_high"] == pytest.approx(3.0)
    assert np.isnan(out.loc[1, "ci_low"])
    assert np.isnan(out.loc[1, "ci_high"])
