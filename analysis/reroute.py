"""Counterfactual-route tables: how often an equal-compute alternative route would have served a token better.

The reroute probe (`routescope.probes.probe_reroute`) stores, in its run's probe entry, one row per sampled
decision × alternative top-k set (drawn from the router's own distribution) with the loss change of
rerunning the input with only that decision replaced. These functions line those rows up with the
decisions' entropy and margin (the run's `decisions` table: the unedited model's own decisions):

- `reroute_routes`: one row per decision × alternative (`delta_next`, `delta_rest`, entropy, margin);
- `reroute_tokens`: one row per decision: `best` = the smallest loss change over its alternatives that
  differ from the router's own set and `better` = best < −`tolerance` (a route with a lower loss exists
  among the K drawn; a decision whose K draws all equal its own set has none);
- `reroute_share`: the share of decisions with a better route — the unit counted is the *decision*
  (a token at one router), the unit of independence is the *sequence* — overall and per quantile bin of
  margin or entropy, with a percentile bootstrap interval that resamples sequences (tokens of one
  sequence share its context and are not independent draws). It estimates a share; there is no null.

`loss="next"` (the headline) is the next-token NLL at the decision's own position; `loss="rest"` the NLL
summed from that position to the end of its sequence. The default `tolerance` (1e-5 nats) sits above the
rounding noise of batched reruns (about 1e-6).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from routescope.store import InputError, Run

from .frames import sql

LossKind = Literal["next", "rest"]
LOSSES: tuple[LossKind, ...] = ("next", "rest")
ShareBy = Literal["all", "margin", "entropy"]
SHARE_BY: tuple[ShareBy, ...] = ("all", "margin", "entropy")
ALL = "(all)"
"""The `bin` of the row over every sampled decision."""
UNIT = "sequence"
DECISION_KEYS = ["sample", "position", "router"]


def _entry(run: Run) -> dict[str, Any]:
    found = ((run.probe or {}).get("metrics") or {}).get("reroute")
    if found is None:
        raise InputError(
            f"run {run.name!r} carries no reroute results; record it with routescope probe reroute "
            "(routescope.probes.probe_reroute)"
        )
    return dict(found)


def reroute_routes(run: Run) -> pd.DataFrame:
    """`sample, position, router, layer, alternative, experts, original, same, base_next, delta_next,
    delta_rest, entropy, margin`: one row per sampled decision × alternative (experts as "a,b")."""
    entry = _entry(run)
    table = pd.DataFrame(entry)
    if table.empty:
        return table
    for column in ("experts", "original"):
        table[column] = [",".join(str(e) for e in experts) for experts in table[column]]
    wanted = table[DECISION_KEYS].drop_duplicates()
    samples = ", ".join(str(int(s)) for s in sorted(wanted["sample"].unique()))
    decisions = sql(
        run,
        "SELECT sample, position, router, entropy, margin FROM decisions "
        f"WHERE step = 0 AND call = 0 AND sample IN ({samples})",
    )
    merged = table.merge(decisions, on=DECISION_KEYS, how="left", validate="many_to_one")
    if merged["margin"].isna().any():
        raise InputError(f"run {run.name!r}: some rerouted decisions are missing from its decisions table")
    return merged.sort_values([*DECISION_KEYS, "alternative"]).reset_index(drop=True)


def _column(loss: str) -> str:
    if loss not in LOSSES:
        raise InputError(f"loss must be one of {', '.join(LOSSES)}, not {loss!r}", field="param")
    return f"delta_{loss}"


def reroute_tokens(run: Run, loss: LossKind = "next", tolerance: float = 1e-5) -> pd.DataFrame:
    """`sample, position, router, layer, entropy, margin, alternatives, distinct, best, better`: one row per
    sampled decision; `distinct` counts alternatives whose set differs from the router's own and `best` is
    the smallest loss change among those (NaN when every draw was the router's own set)."""
    column = _column(loss)
    routes = reroute_routes(run)
    if routes.empty:
        return routes
    grouped = routes.groupby(DECISION_KEYS, sort=True)
    table = grouped.agg(
        layer=("layer", "first"),
        entropy=("entropy", "first"),
        margin=("margin", "first"),
        alternatives=("alternative", "size"),
        distinct=("same", lambda s: int((~s).sum())),
    ).reset_index()
    other = routes[~routes["same"]].groupby(DECISION_KEYS)[column].min().rename("best")
    table = table.merge(other, left_on=DECISION_KEYS, right_index=True, how="left")
    table["better"] = table["best"] < -float(tolerance)
    return table


def _bootstrap(table: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """95 % percentile interval of Σ better / Σ decisions, resampling sequences with replacement."""
    per = table.groupby("sample")["better"].agg(["sum", "size"])
    if len(per) < 2:
        return float("nan"), float("nan")
    draws = rng.multinomial(len(per), np.full(len(per), 1 / len(per)), size=n_boot)
    shares = (draws @ per["sum"].to_numpy()) / (draws @ per["size"].to_numpy())
    low, high = np.nanpercentile(shares, [2.5, 97.5])
    return float(low), float(high)


def reroute_share(
    run: Run,
    by: ShareBy = "margin",
    loss: LossKind = "next",
    bins: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    tolerance: float = 1e-5,
    layer: int | None = None,
) -> pd.DataFrame:
    """`by, bin, low, high, decisions, sequences, better, share, ci_low, ci_high, mean_best, unit`: the share
    of sampled decisions with a better route, per quantile bin of `by` (margin or entropy; `bins` bins of
    about equal size, edges `low`–`high`) and over all (`bin` = "(all)"). The interval is a 95 % percentile
    bootstrap over sequences (`n_boot` resamples, `seed`); `unit` names that unit of independence. `layer`
    keeps the decisions of one MoE layer."""
    if by not in SHARE_BY:
        raise InputError(f"by must be one of {', '.join(SHARE_BY)}, not {by!r}", field="param")
    if int(bins) < 1 or int(n_boot) < 1:
        raise InputError("bins and n_boot must be ≥ 1", field="param")
    tokens = reroute_tokens(run, loss, tolerance)
    if layer is not None and not tokens.empty:
        tokens = tokens[tokens["layer"] == int(layer)]
    rng = np.random.default_rng(seed)
    groups: list[tuple[str, float, float, pd.DataFrame]] = []
    if by != "all" and not tokens.empty:
        edges = np.unique(np.quantile(tokens[by].to_numpy(), np.linspace(0, 1, int(bins) + 1)))
        codes = np.clip(np.searchsorted(edges, tokens[by].to_numpy(), side="right") - 1, 0, len(edges) - 2)
        for code in range(max(len(edges) - 1, 0)):
            part = tokens[codes == code]
            groups.append((str(code), float(edges[code]), float(edges[code + 1]), part))
    if not tokens.empty:
        low, high = (np.nan, np.nan) if by == "all" else (float(tokens[by].min()), float(tokens[by].max()))
        groups.append((ALL, low, high, tokens))
    rows = []
    for name, low, high, part in groups:
        ci_low, ci_high = _bootstrap(part, int(n_boot), rng) if len(part) else (np.nan, np.nan)
        rows.append(
            {
                "by": by,
                "bin": name,
                "low": low,
                "high": high,
                "decisions": len(part),
                "sequences": int(part["sample"].nunique()),
                "better": int(part["better"].sum()),
                "share": float(part["better"].mean()) if len(part) else np.nan,
                "ci_low": ci_low,
                "ci_high": ci_high,
                "mean_best": float(part["best"].mean()) if part["best"].notna().any() else np.nan,
                "unit": UNIT,
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["interval"] = f"95 % percentile bootstrap over sequences ({int(n_boot)} resamples)"
    table.attrs["loss"] = _column(loss)
    return table
