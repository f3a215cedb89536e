"""The Switch-DiT shared-path claim on planted timestep-gated runs: it reproduces where paths slide with
the step and not where they ignore it or never change; it applies only to runs with positionless routers."""

from __future__ import annotations

import pytest

from routescope import claims
from routescope.store import InputError, Run, Store
from tests import planted_claims as planted

FAST = {"n_boot": 200, "n_permutations": 199}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("gated"))


@pytest.fixture(scope="module")
def sliding(store: Store) -> Run:
    return planted.planted_gated(store, "sliding", paths="sliding")


def test_shared_paths_reproduce_when_the_gates_slide_with_the_step(sliding: Run) -> None:
    verdict = claims.check(sliding, "switch-dit-shared-paths", **FAST)
    assert verdict.reproduces is True
    assert verdict.p_value == pytest.approx(1 / 200)
    assert verdict.unit == "pair"
    row = verdict.details.iloc[0]
    assert row["adjacent_overlap"] > 0.4
    assert row["far_overlap"] < 0.1
    assert row["ratio_hi"] <= planted_isolation()
    assert verdict.effect_lo > 0
    assert verdict.value == pytest.approx(row["adjacent_overlap"] - row["far_overlap"])


def planted_isolation() -> float:
    from routescope.analysis.claims.paths import ISOLATION

    return ISOLATION


@pytest.mark.parametrize("paths", ["step-blind", "fixed"])
def test_shared_paths_do_not_reproduce_without_step_dependence(store: Store, paths: str) -> None:
    run = planted.planted_gated(store, paths, paths=paths)
    verdict = claims.check(run, "switch-dit-shared-paths", **FAST)
    assert verdict.reproduces is False
    assert verdict.p_value > 0.01
    assert verdict.effect_lo < 0.1


def test_shared_paths_overlap_is_the_jaccard_of_the_chosen_sets(store: Store) -> None:
    """Fixed gates choose the same set at every step: every overlap is exactly 1, the difference 0."""
    run = planted.planted_gated(store, "fixed-exact", paths="fixed", n_images=2, n_steps=6)
    verdict = claims.check(run, "switch-dit-shared-paths", **FAST)
    row = verdict.details.iloc[0]
    assert row["adjacent_overlap"] == pytest.approx(1.0)
    assert row["far_overlap"] == pytest.approx(1.0)
    assert verdict.value == pytest.approx(0.0)
    assert row["far"] == 2


def test_shared_paths_apply_only_to_timestep_gated_runs(sliding: Run, store: Store) -> None:
    assert claims.applicable(sliding) == ["switch-dit-phases", "switch-dit-shared-paths", "switch-balance"]
    for name in claims.applicable(sliding):  # the other claims that apply run on positionless decisions
        assert isinstance(claims.check(sliding, name, n_boot=50), claims.Verdict)
    tokens = planted.planted_diffusion(store, "token-routers", position=0.3, step=0.5)
    assert "switch-dit-shared-paths" not in claims.applicable(tokens)
    with pytest.raises(InputError, match="timestep-gated"):
        claims.check(tokens, "switch-dit-shared-paths")
    with pytest.raises(InputError, match="no positions"):  # DiT-MoE's per-patch claims refuse in one line
        claims.check(sliding, "dit-moe-depth-dispersion")
