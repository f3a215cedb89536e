"""Pruning loss curves: next-token loss as each layer's lowest-scoring experts are disabled, per criterion.

The prune probe (`routescope.probes.probe_prune`) records one run per criterion and ratio, each carrying
its loss under the edit, beside the unedited base run. `prune_curve` lines them up so that criteria can be
compared on one plot (DeepSeekMoE's redundancy test, generalised): loss = Σ NLL / Σ predicted tokens over
all inputs (nats per token, token-weighted as a language-model loss is); `delta` = loss − the base run's.
Each criterion's curve starts at ratio 0 with the base run. `experts_off` is the number of experts the
edit disabled, summed over the edited routers.

The registered kind `prune-curve` is computed on the base run: it finds the prune runs of the same store
whose probe entry names that base (`routescope report NAME.base --kind prune-curve`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from routescope.store import InputError, RouteScopeError, Run, Store

from .ablation import _metrics

PRUNE = "prune"


def _loss(run: Run) -> tuple[float, int]:
    loss = _metrics(run, "loss")
    tokens = int(sum(loss["tokens"]))
    return float(sum(loss["nll"])) / max(tokens, 1), tokens


def prune_curve(base: Run, pruned: Sequence[Run]) -> pd.DataFrame:
    """`criterion, ratio, experts_off, tokens, loss, delta`: one row per criterion at ratio 0 (the base run)
    and one per pruned run, sorted by criterion and ratio (loss in nats per predicted token)."""
    base_loss, tokens = _loss(base)
    rows = []
    for run in pruned:
        entry = run.probe or {}
        if entry.get("probe") != PRUNE:
            raise InputError(
                f"run {run.name!r} is not a prune probe run; record it with routescope probe prune"
            )
        loss, n = _loss(run)
        if n != tokens:
            raise InputError("the runs were not recorded on the same inputs; run one prune probe")
        edits = entry.get("intervention", {}).get("routers", {})
        off = sum(len(edit.get("disable", ())) for edit in edits.values())
        params = entry["params"]
        rows.append((params["criterion"], float(params["ratio"]), off, n, loss))
    criteria = sorted({row[0] for row in rows})
    rows += [(criterion, 0.0, 0, tokens, base_loss) for criterion in criteria]
    table = pd.DataFrame(rows, columns=["criterion", "ratio", "experts_off", "tokens", "loss"])
    table["delta"] = table["loss"] - base_loss
    return table.sort_values(["criterion", "ratio"], kind="stable").reset_index(drop=True)


def prune_runs(base: Run) -> list[Run]:
    """The prune probe runs beside `base` in its store whose probe entry names it as their base (runs that
    cannot be opened are skipped)."""
    store = Store(base.path.parent)
    found = []
    for name in store.runs():
        if name == base.name:
            continue
        try:
            run = store.open(name)
        except RouteScopeError:  # an unreadable run of the store is none of this study's
            continue
        entry = run.probe or {}
        if entry.get("probe") == PRUNE and entry.get("base") == base.name:
            found.append(run)
    return found


def prune_curve_of(run: Run) -> pd.DataFrame:
    """`prune_curve` of a prune study's base run and the prune runs beside it in its store."""
    pruned = prune_runs(run)
    if not pruned:
        raise InputError(
            f"no prune probe runs name {run.name!r} as their base; record them with routescope probe prune"
        )
    return prune_curve(run, pruned)
