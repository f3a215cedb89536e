"""Every claim verdict is tested twice: on a run with the effect planted (it reproduces) and on a null run
of the same shape (it does not). The runs are written through the real store writer
(`tests/planted_claims.py`); the unit of independence is the sequence for text runs and the generated
image (`pair`) for diffusion runs. Bonferroni over L ≤ 3 layers needs N ≥ 299 permutations: N = 399."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2

import routescope
from routescope import claims
from routescope.analysis.specialization import label_nmi
from routescope.store import InputError, Run, Store
from tests import planted_claims as planted

PERMUTATIONS = {"n_permutations": 399, "n_boot": 200}
BOOT = {"n_boot": 200}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("claims"))


@pytest.fixture(scope="module")
def domains(store: Store) -> Run:
    return planted.domain_run(store, "domains", extra_labels={"source": ["web"] * 32})


@pytest.fixture(scope="module")
def images(store: Store) -> Run:
    """Position- and step-dependent, class-blind routing."""
    return planted.planted_diffusion(store, "images", position=0.4, step=0.4)


def check(run: Run, name: str, **params: object) -> claims.Verdict:
    verdict = claims.check(run, name, **params)
    assert verdict.claim == name
    json.dumps(verdict.to_dict())
    return verdict


# --- olmoe-domain -------------------------------------------------------------------------------------


def test_domain_reproduces_on_planted_domain_routing(domains: Run) -> None:
    verdict = check(domains, "olmoe-domain", **PERMUTATIONS)
    assert verdict.reproduces is True
    assert verdict.unit == "sample"
    assert verdict.p_value == pytest.approx(2 / 400)  # the smallest p at N = 399, times L = 2
    assert 0 < verdict.effect_lo <= verdict.effect_size <= verdict.effect_hi


def test_domain_does_not_reproduce_with_labels_permuted_across_sequences(store: Store) -> None:
    run = planted.domain_run(store, "domains-permuted", permute_domains=0)  # same routing, labels shuffled
    verdict = check(run, "olmoe-domain", **PERMUTATIONS)
    assert verdict.reproduces is False
    assert verdict.p_value > 0.01


def test_domain_p_values_are_calibrated_when_tokens_cluster_within_sequences(store: Store) -> None:
    """Each sequence has its own preferred experts, so its tokens are not independent draws. Permuting
    whole sequences keeps the test calibrated; a token-level χ² test calls every shuffle significant."""
    run = planted.domain_run(
        store, "clustered", n_layers=1, strength=0.35, clustering=0.65, length=96, shuffles=20
    )
    rows = [label_nmi(run, f"shuffled_{i}", n_permutations=199, seed=0).iloc[0] for i in range(20)]
    p_values = np.array([row["p_value"] for row in rows])
    chi_square = np.array([chi2.sf(row["chi2"], row["dof"]) for row in rows])
    assert (p_values < 0.01).sum() <= 1
    assert (chi_square < 0.01).sum() == 20  # the failure the unit-level permutation avoids
    truth = label_nmi(run, "domain", n_permutations=199, seed=0).iloc[0]
    assert truth["p_value"] == pytest.approx(1 / 200)


# --- olmoe-vocabulary ---------------------------------------------------------------------------------


def test_vocabulary_reproduces_when_expert_follows_token_id(store: Store) -> None:
    run = planted.vocabulary_run(store, "vocabulary", token_driven=True)
    verdict = check(run, "olmoe-vocabulary", **PERMUTATIONS)
    assert verdict.reproduces is True
    assert verdict.effect_lo > 0


def test_vocabulary_does_not_reproduce_for_token_blind_router_with_uneven_load(store: Store) -> None:
    run = planted.vocabulary_run(store, "vocabulary-blind", token_driven=False)
    verdict = check(run, "olmoe-vocabulary", **PERMUTATIONS)
    assert verdict.reproduces is False
    assert verdict.p_value > 0.01
    # the uneven load alone puts far more than 1/E of a token's choices on its top expert
    assert verdict.value > 2 / 8


# --- mixtral-repeat -----------------------------------------------------------------------------------


def test_repeat_reproduces_on_sticky_routing(store: Store) -> None:
    verdict = check(planted.repeat_run(store, "sticky", sticky=True), "mixtral-repeat", **PERMUTATIONS)
    assert verdict.reproduces is True
    assert verdict.effect_lo > 0


def test_repeat_does_not_reproduce_for_sequence_specific_mixes(store: Store) -> None:
    """Experts i.i.d. within a sequence, each sequence preferring its own: many repeats, no order."""
    run = planted.repeat_run(store, "mixes", sticky=False)
    verdict = check(run, "mixtral-repeat", **PERMUTATIONS)
    assert verdict.reproduces is False
    top = run.assignments().query("rank == 0")
    for layer, part in top.groupby("layer"):
        pooled_chance = (part["expert"].value_counts(normalize=True) ** 2).sum()
        observed = verdict.details.set_index("layer").loc[layer, "observed"]
        assert observed > 1.5 * pooled_chance  # a shuffle across sequences would call this an effect


# --- gw-moe-uncertain-tokens --------------------------------------------------------------------------


def test_uncertain_tokens_reproduce_when_a_few_tokens_are_uncertain(store: Store) -> None:
    verdict = check(planted.uncertain_run(store, "uncertain"), "gw-moe-uncertain-tokens", **PERMUTATIONS)
    assert verdict.reproduces is True
    assert verdict.details["uncertain_share"].between(0.1, 0.3).all()


def test_uncertain_tokens_do_not_reproduce_when_flags_ignore_the_token(store: Store) -> None:
    run = planted.uncertain_run(store, "uncertain-random", by_token=False)
    verdict = check(run, "gw-moe-uncertain-tokens", **PERMUTATIONS)
    assert verdict.reproduces is False
    assert verdict.details["uncertain_share"].between(0.1, 0.3).all()  # the same minority share
    assert verdict.p_value > 0.01


def test_uncertain_tokens_do_not_reproduce_when_uncertainty_is_the_majority(store: Store) -> None:
    run = planted.uncertain_run(store, "uncertain-majority", uncertain_tokens=7)
    verdict = check(run, "gw-moe-uncertain-tokens", **PERMUTATIONS)
    assert verdict.reproduces is False
    assert verdict.p_value <= 0.01  # concentrated on particular tokens, but not a minority
    assert (verdict.details["uncertain_share"] > 0.5).all()


# --- switch-balance -----------------------------------------------------------------------------------


@pytest.mark.parametrize("record_probs", [False, True])
def test_balance_reproduces_on_even_loads(store: Store, record_probs: bool) -> None:
    run = planted.balance_run(store, f"even-{record_probs}", record_probs=record_probs)
    verdict = check(run, "switch-balance", **BOOT)
    assert verdict.reproduces is True
    assert ("aux_loss_hi" in verdict.details) is record_probs
    if record_probs:
        assert verdict.details["aux_loss"].between(0.95, 1.1).all()


def test_balance_does_not_reproduce_with_dead_experts(store: Store) -> None:
    verdict = check(planted.balance_run(store, "dead", dead=6), "switch-balance", **BOOT)
    assert verdict.reproduces is False
    assert (verdict.details["dead_experts"] == 6).all()


def test_balance_does_not_reproduce_with_aux_loss_above_margin(store: Store) -> None:
    run = planted.balance_run(store, "skewed", skew=0.6, record_probs=True)
    verdict = check(run, "switch-balance", **BOOT)
    assert verdict.reproduces is False
    assert (verdict.details["dead_experts"] == 0).all()
    assert (verdict.details["aux_loss"] > 1.4).all()


# --- dit-moe-position-step-not-class ------------------------------------------------------------------


def test_position_step_not_class_reproduces_on_class_blind_routing(images: Run) -> None:
    verdict = check(images, "dit-moe-position-step-not-class", **PERMUTATIONS)
    assert verdict.reproduces is True
    assert verdict.unit == "pair"
    assert verdict.effect_hi < 0.01


def test_position_step_not_class_does_not_reproduce_on_class_dependent_routing(store: Store) -> None:
    run = planted.planted_diffusion(store, "by-class", position=0.35, step=0.35, klass=0.3)
    verdict = check(run, "dit-moe-position-step-not-class", **PERMUTATIONS)
    assert verdict.reproduces is False
    assert verdict.p_value <= 0.01  # position and step still matter; the class effect breaks the claim
    assert (verdict.details["class_excess_lo"] > 0.01).all()


# --- dit-moe-depth-dispersion -------------------------------------------------------------------------


def test_depth_dispersion_reproduces_when_position_specificity_fades(store: Store) -> None:
    run = planted.planted_diffusion(store, "fading", position=lambda layer, step: (0.7, 0.35, 0.0)[layer])
    verdict = check(run, "dit-moe-depth-dispersion", **BOOT)
    assert verdict.reproduces is True
    assert verdict.effect_lo > 0


def test_depth_dispersion_does_not_reproduce_with_the_same_position_dependence_at_every_layer(
    images: Run,
) -> None:
    verdict = check(images, "dit-moe-depth-dispersion", **BOOT)
    assert verdict.reproduces is False
    assert verdict.effect_lo < 0 < verdict.effect_hi


# --- dit-moe-early-steps ------------------------------------------------------------------------------


def test_early_steps_reproduce_when_early_steps_are_more_position_specific(store: Store) -> None:
    run = planted.planted_diffusion(store, "early", position=lambda layer, step: 0.8 * (1 - step / 5))
    verdict = check(run, "dit-moe-early-steps", **BOOT)
    assert verdict.reproduces is True
    assert verdict.effect_lo > 0


@pytest.mark.parametrize("name", ["late", "images"])
def test_early_steps_do_not_reproduce_for_late_or_step_blind_specificity(
    store: Store, images: Run, name: str
) -> None:
    if name == "late":
        run = planted.planted_diffusion(store, "late", position=lambda layer, step: 0.8 * step / 5)
    else:
        run = images
    verdict = check(run, "dit-moe-early-steps", **BOOT)
    assert verdict.reproduces is False
    if name == "late":
        assert verdict.effect_hi < 0


# --- switch-dit-phases --------------------------------------------------------------------------------


def test_phases_reproduce_when_routing_drifts_smoothly_with_the_step(store: Store) -> None:
    run = planted.planted_diffusion(store, "drifting", position=0.3, step=0.5)
    verdict = check(run, "switch-dit-phases", **BOOT)
    assert verdict.reproduces is True
    assert verdict.effect_lo > 1


def test_phases_do_not_reproduce_for_step_blind_routing(store: Store) -> None:
    run = planted.planted_diffusion(store, "step-blind", position=0.5)
    verdict = check(run, "switch-dit-phases", **BOOT)
    assert verdict.reproduces is False
    assert verdict.effect_lo < 1 < verdict.effect_hi


# --- registry and bad inputs --------------------------------------------------------------------------


def test_applicable_claims_follow_the_run_kind(domains: Run, images: Run) -> None:
    assert claims.applicable(domains) == [
        "olmoe-domain",
        "olmoe-vocabulary",
        "mixtral-repeat",
        "gw-moe-uncertain-tokens",
        "switch-balance",
    ]
    assert claims.applicable(images) == [
        "dit-moe-position-step-not-class",
        "dit-moe-depth-dispersion",
        "dit-moe-early-steps",
        "switch-dit-phases",
        "switch-balance",
    ]


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["dit-moe-depth-dispersion", "dit-moe-position-step-not-class"])
def test_diffusion_claim_on_a_text_run_is_a_one_line_error(domains: Run, name: str) -> None:
    with pytest.raises(InputError) as excinfo:
        claims.check(domains, name)
    assert "diffusion" in one_line(excinfo)


def test_text_claim_on_a_diffusion_run_is_a_one_line_error(images: Run) -> None:
    with pytest.raises(InputError) as excinfo:
        claims.check(images, "mixtral-repeat")
    assert "text" in one_line(excinfo)


def test_unknown_claim_is_a_one_line_error(domains: Run) -> None:
    with pytest.raises(InputError) as excinfo:
        claims.check(domains, "olmoe-everything")
    assert "olmoe-domain" in one_line(excinfo)


@pytest.mark.parametrize("n_permutations", [0, 50, 198])
def test_too_few_permutations_for_bonferroni_are_refused(domains: Run, n_permutations: int) -> None:
    with pytest.raises(InputError) as excinfo:
        claims.check(domains, "olmoe-domain", n_permutations=n_permutations)
    assert "199" in one_line(excinfo)


def test_label_nmi_refuses_zero_permutations(domains: Run) -> None:
    with pytest.raises(InputError):
        label_nmi(domains, "domain", n_permutations=0)


def test_label_nmi_with_a_one_valued_label_is_refused(domains: Run) -> None:
    with pytest.raises(InputError) as excinfo:
        label_nmi(domains, "source", n_permutations=199)
    assert "source" in one_line(excinfo)


def test_unknown_unit_is_refused(domains: Run) -> None:
    with pytest.raises(InputError) as excinfo:
        claims.check(domains, "olmoe-domain", unit="nonexistent", **PERMUTATIONS)
    assert "nonexistent" in one_line(excinfo)


# --- real bundled models ------------------------------------------------------------------------------


def assert_verdicts(run: Run, verdicts: list[claims.Verdict]) -> None:
    assert [v.claim for v in verdicts] == claims.applicable(run)
    for verdict in verdicts:
        assert isinstance(verdict.reproduces, bool)
        numbers = [verdict.value, verdict.effect_size, verdict.effect_lo, verdict.effect_hi]
        if verdict.p_value is not None:
            assert 0 < verdict.p_value <= 1
            numbers.append(verdict.null_reference)
        assert all(math.isfinite(x) for x in numbers), verdict
        assert verdict.effect_lo <= verdict.effect_hi
        assert verdict.sentence
        json.loads(json.dumps(verdict.to_dict(), allow_nan=False))


@pytest.mark.slow
def test_check_all_on_bundled_moe_lm(tmp_path: Path) -> None:
    texts, labels = routescope.load_dataset("bundled:domains")
    run = routescope.record(
        routescope.load_model("bundled:moe-lm"),
        texts,
        labels=labels,
        probs=True,
        store=Store(tmp_path),
        name="moe-lm",
        progress=False,
    )
    verdicts = claims.check_all(run, n_permutations=399, n_boot=200)
    assert len(verdicts) == 5
    assert_verdicts(run, verdicts)


@pytest.mark.slow
def test_check_all_on_bundled_dit_digits(tmp_path: Path) -> None:
    run = routescope.record_diffusion(
        routescope.load_model("bundled:dit-digits"),
        classes=list(range(10)),
        samples_per_class=2,
        steps=10,
        seed=0,
        store=Store(tmp_path),
        name="dit-digits",
        progress=False,
    )
    verdicts = claims.check_all(run, n_permutations=399, n_boot=200)
    assert len(verdicts) == 5
    assert {v.unit for v in verdicts} == {"pair"}
    assert_verdicts(run, verdicts)
