"""Claims about language-model routing: OLMoE's domain and vocabulary specialization, Mixtral's repeat
rate, GW-MoE's uncertain tokens and the Switch Transformer's balance.

Every criterion below was fixed before it was run on a bundled model. Layer-wise tests are combined with a
Bonferroni correction (p · L, L = the number of MoE layers tested); effect sizes are excesses over the
permutation mean (the chance level at this sample size) with a 95 % percentile bootstrap interval over the
run's units of independence.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from ..bootstrap import bootstrap_ci, unit_interval
from ..contingency import unit_tables
from ..frames import sql
from ..information import mutual_information, nmi
from ..nulls import repeat_null, uncertainty_null, uncertainty_tables, vocabulary_null, vocabulary_share
from ..permutation import DEFAULT_PERMUTATIONS
from ..sequence import neighbour_pairs_sql
from ..specialization import label_nmi
from ..uncertainty import DEFAULT_THRESHOLD, uncertainty
from ..units import count_units, unit_codes, unit_name
from .verdict import Verdict, yes_no

ALPHA = 0.01
"""Family-wise significance level of every claim that rests on a permutation test."""


def _adjusted(p_values: pd.Series) -> pd.Series:
    return (p_values * len(p_values)).clip(upper=1.0)


def check_resolution(run: Run, n_permutations: int) -> None:
    """A Bonferroni-corrected permutation test over L layers can reach α only with N ≥ L/α − 1
    permutations; fewer would make every verdict "does not reproduce", so that is refused in one line."""
    n_layers = len({r.layer for r in run.info.routers})
    needed = int(np.ceil(n_layers / ALPHA)) - 1
    if n_permutations < needed:
        raise InputError(
            f"n_permutations={n_permutations} cannot reach p ≤ {ALPHA} over {n_layers} layers "
            f"(Bonferroni); use at least {needed}"
        )


def _weakest(table: pd.DataFrame) -> pd.Series:
    """Add Bonferroni-adjusted p-values and excesses over the permutation mean to a `nulls` table (in
    place) and return its layer with the smallest excess."""
    table["p_adjusted"] = _adjusted(table["p_value"])
    table["excess"] = table["observed"] - table["null_mean"]
    return table.loc[table["excess"].idxmin()]


def _null_verdict(
    claim: str,
    *,
    ok: bool,
    row: pd.Series,
    table: pd.DataFrame,
    statistic: str,
    null: str,
    effect: str,
    interval: tuple[float, float, float],
    seed: int,
    sentence: str,
    details: pd.DataFrame | None = None,
) -> Verdict:
    """A verdict decided on every layer's permutation test, reported at the weakest layer `row`."""
    estimate, lo, hi = interval
    return Verdict(
        claim=claim,
        reproduces=ok,
        statistic=statistic,
        value=float(row["observed"]),
        null=null,
        p_value=float(table["p_adjusted"].max()),
        null_reference=float(row["null_mean"]),
        n_permutations=int(row["n_permutations"]),
        seed=seed,
        unit=str(row["unit"]),
        effect=effect,
        effect_size=estimate,
        effect_lo=lo,
        effect_hi=hi,
        sentence=sentence,
        details=table if details is None else details,
    )


def olmoe_domain(
    run: Run,
    *,
    label: str = "domain",
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_boot: int = 1000,
    seed: int = 0,
    unit: str | None = None,
) -> Verdict:
    """OLMoE §5: experts specialise in domains.

    Criterion: NMI(label; expert) exceeds its permutation null — the label shuffled between units, so
    routing cannot depend on it — at α = 0.01 after Bonferroni over layers (p · L ≤ 0.01) at one layer or
    more. Effect: excess NMI (NMI − permutation mean) at the layer with the largest excess."""
    check_resolution(run, n_permutations)
    table = label_nmi(run, label, n_permutations=n_permutations, seed=seed, unit=unit)
    table["p_adjusted"] = _adjusted(table["p_value"])
    table["excess"] = table["nmi"] - table["null_mean"]
    best = table.loc[table["excess"].idxmax()]
    data = unit_tables(run, label, ("layer",), unit=unit)[(int(best["layer"]),)]
    n_labels, n_experts = len(data.values), data.counts.shape[1]
    estimate, lo, hi = unit_interval(
        data.per_unit(),
        lambda m: nmi(m.reshape(len(m), n_labels, n_experts)) - best["null_mean"],
        n_boot=n_boot,
        seed=seed,
    )
    ok = bool((table["p_adjusted"] <= ALPHA).any())
    return Verdict(
        claim="olmoe-domain",
        reproduces=ok,
        statistic=f"NMI({label}; expert) at layer {int(best['layer'])}",
        value=float(best["nmi"]),
        null=f"{label} independent of routing: {best['method']}",
        p_value=float(table["p_adjusted"].min()),
        null_reference=float(best["null_mean"]),
        n_permutations=int(best["n_permutations"]),
        seed=seed,
        unit=str(best["unit"]),
        effect="excess NMI over the permutation mean",
        effect_size=estimate,
        effect_lo=lo,
        effect_hi=hi,
        sentence=(
            f"Domain specialization {yes_no(ok)}: at layer {int(best['layer'])} NMI({label}; expert) = "
            f"{best['nmi']:.3f} against {best['null_mean']:.3f} with {label} shuffled between units "
            f"(Bonferroni p = {table['p_adjusted'].min():.3g}, {count_units(run, unit)} units)."
        ),
        details=table,
    )


def olmoe_vocabulary(
    run: Run,
    *,
    min_count: int = 10,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_boot: int = 1000,
    seed: int = 0,
    unit: str | None = None,
) -> Verdict:
    """OLMoE §5: routing is driven by the token id (vocabulary specialization).

    Criterion: at every layer, the token-weighted share of a token's top-1 choices that go to its most
    frequent expert (token ids seen ≥ `min_count` times) exceeds its permutation null — token ids shuffled
    among the top-1 decisions of one unit, a token-blind router that keeps each sequence's expert mix —
    with p · L ≤ 0.01. Effect: the smallest excess share over layers (share − permutation mean)."""
    check_resolution(run, n_permutations)
    table = vocabulary_null(run, min_count=min_count, n_permutations=n_permutations, seed=seed, unit=unit)
    worst = _weakest(table)
    data = unit_tables(run, "token_id", ("layer",), ranks="top1", unit=unit)[(int(worst["layer"]),)]
    n_tokens, n_experts = len(data.values), data.counts.shape[1]
    interval = unit_interval(
        data.per_unit(),
        lambda m: vocabulary_share(m.reshape(len(m), n_tokens, n_experts), min_count) - worst["null_mean"],
        n_boot=n_boot,
        seed=seed,
    )
    ok = bool((table["p_adjusted"] <= ALPHA).all())
    return _null_verdict(
        "olmoe-vocabulary",
        ok=ok,
        row=worst,
        table=table,
        statistic=(
            f"token-weighted top-expert share (tokens seen ≥ {min_count}×) at layer {int(worst['layer'])}"
        ),
        null=f"token-blind routing: {worst['method']}",
        effect="excess share over the permutation mean (weakest layer)",
        interval=interval,
        seed=seed,
        sentence=(
            f"Vocabulary specialization {yes_no(ok)}: the weakest layer ({int(worst['layer'])}) sends "
            f"{worst['observed']:.1%} of a token's top-1 choices to its top expert against "
            f"{worst['null_mean']:.1%} for token-blind routing (largest Bonferroni p = "
            f"{table['p_adjusted'].max():.3g})."
        ),
    )


def _repeat_per_unit(run: Run, layer: int, unit: str | None) -> np.ndarray:
    """`[U, 2]` per unit: consecutive top-1 pairs and pairs with the same expert, at `layer`."""
    pairs, _ = neighbour_pairs_sql(run)
    per_sample = sql(
        run,
        f"""WITH {pairs}
            SELECT sample, count(*) AS pairs, sum(CASE WHEN expert_a = expert_b THEN 1 ELSE 0 END) AS same
            FROM pairs WHERE layer = {int(layer)} GROUP BY ALL""",
    )
    codes = unit_codes(run, unit)
    per_sample["unit"] = per_sample["sample"].map(dict(zip(codes["sample"], codes["unit"], strict=True)))
    sums = per_sample.groupby("unit")[["pairs", "same"]].sum()
    return sums.reindex(range(int(codes["unit"].max()) + 1), fill_value=0).to_numpy(dtype=np.float64)


def mixtral_repeat(
    run: Run,
    *,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_boot: int = 1000,
    seed: int = 0,
    unit: str | None = None,
) -> Verdict:
    """Mixtral §5: consecutive tokens are often routed to the same expert.

    Criterion: at every layer, the share of consecutive positions whose top-1 expert is the same exceeds
    its permutation null — top-1 experts shuffled along each sequence, so a sequence's own expert mix (its
    domain) is kept and only the order is broken — with p · L ≤ 0.01. Effect: the smallest excess repeat
    rate over layers (rate − permutation mean)."""
    check_resolution(run, n_permutations)
    table = repeat_null(run, n_permutations=n_permutations, seed=seed, unit=unit)
    worst = _weakest(table)
    interval = unit_interval(
        _repeat_per_unit(run, int(worst["layer"]), unit),
        lambda m: m[:, 1] / np.maximum(m[:, 0], 1e-300) - worst["null_mean"],
        n_boot=n_boot,
        seed=seed,
    )
    ok = bool((table["p_adjusted"] <= ALPHA).all())
    return _null_verdict(
        "mixtral-repeat",
        ok=ok,
        row=worst,
        table=table,
        statistic=f"top-1 repeat rate of consecutive tokens at layer {int(worst['layer'])}",
        null=f"order-blind routing: {worst['method']}, experts shuffled along each sequence",
        effect="excess repeat rate over the shuffled-order mean (weakest layer)",
        interval=interval,
        seed=seed,
        sentence=(
            f"Consecutive-token repeats {yes_no(ok)}: the weakest layer ({int(worst['layer'])}) repeats the "
            f"top-1 expert at {worst['observed']:.1%} of consecutive positions against "
            f"{worst['null_mean']:.1%} with the same experts in shuffled order (largest Bonferroni p = "
            f"{table['p_adjusted'].max():.3g})."
        ),
    )


def gw_moe_uncertain_tokens(
    run: Run,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_count: int = 20,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_boot: int = 1000,
    seed: int = 0,
    unit: str | None = None,
) -> Verdict:
    """GW-MoE: uncertain tokens (normalised router entropy ≥ `threshold`) are a minority that concentrates
    on particular tokens.

    Criterion, at every layer: (a) a minority — the uncertain share is above 0 and its 95 % bootstrap
    upper bound below 0.5; (b) concentrated — the mutual information between a decision's token id (ids
    seen ≥ `min_count` times) and its uncertain flag exceeds its permutation null (flags shuffled among the
    decisions of one unit) with p · L ≤ 0.01. Effect: the smallest excess MI over layers (nats)."""
    check_resolution(run, n_permutations)
    shares = uncertainty(run, threshold=threshold)
    intervals = bootstrap_ci(run, "uncertainty", n_boot=n_boot, seed=seed, threshold=threshold, unit=unit)
    upper = intervals[intervals["metric"] == "uncertain_share"].set_index("layer")["hi"]
    minority = bool(((shares.set_index("layer")["uncertain_share"] > 0) & (upper < 0.5)).all())
    table = uncertainty_null(
        run, threshold=threshold, min_count=min_count, n_permutations=n_permutations, seed=seed, unit=unit
    )
    layers = sorted(shares["layer"].unique())
    concentrated = len(table) == len(layers)
    if table.empty:
        return Verdict(
            claim="gw-moe-uncertain-tokens",
            reproduces=False,
            statistic="uncertain share",
            value=float(shares["uncertain_share"].max()),
            null="no layer has both certain and uncertain decisions on frequent tokens",
            p_value=None,
            null_reference=None,
            n_permutations=0,
            seed=seed,
            unit=unit_name(run, unit),
            effect="none",
            effect_size=float("nan"),
            effect_lo=float("nan"),
            effect_hi=float("nan"),
            sentence="Uncertain-token concentration does not reproduce: no uncertain decisions to test.",
            details=shares,
        )
    worst = _weakest(table)
    table["p_adjusted"] = (table["p_value"] * len(layers)).clip(upper=1.0)  # every layer counts
    concentrated = concentrated and bool((table["p_adjusted"] <= ALPHA).all())
    data = uncertainty_tables(run, threshold=threshold, min_count=min_count, unit=unit)[int(worst["layer"])]
    n_tokens = data.counts.shape[1]
    interval = unit_interval(
        data.per_unit(),
        lambda m: mutual_information(m.reshape(len(m), 2, n_tokens)) - worst["null_mean"],
        n_boot=n_boot,
        seed=seed,
    )
    details = table.merge(shares[["layer", "uncertain_share"]], on="layer").assign(
        uncertain_share_hi=lambda t: t["layer"].map(upper)
    )
    ok = minority and concentrated
    return _null_verdict(
        "gw-moe-uncertain-tokens",
        ok=ok,
        row=worst,
        table=table,
        statistic=f"MI(token id; uncertain flag) at layer {int(worst['layer'])}, nats",
        null=f"uncertainty spread evenly over tokens: {worst['method']}, flags shuffled",
        effect="excess MI over the permutation mean (weakest layer), nats",
        interval=interval,
        seed=seed,
        sentence=(
            f"Uncertain tokens {yes_no(ok)}: a minority at every layer: {minority} (uncertain share "
            f"{shares['uncertain_share'].min():.1%}–{shares['uncertain_share'].max():.1%}); concentrated on "
            f"particular tokens at every layer: {concentrated} (largest Bonferroni p = "
            f"{table['p_adjusted'].max():.3g})."
        ),
        details=details,
    )


def needs_text(run: Run) -> str | None:
    """None for text runs; the reason otherwise."""
    return "a claim about text sequences; this is a diffusion run" if run.info.is_diffusion else None


def needs_label(label: str) -> Callable[[Run], str | None]:
    """An `applies` predicate: the run must have the sample label `label`."""

    def applies(run: Run) -> str | None:
        if label not in run.label_columns:
            return f"needs a sample label {label!r}; the run has {', '.join(run.label_columns) or 'none'}"
        return None

    return applies
