"""Per-sample views of a run: one sample's tokens with their routing, one token's weights at every router.

The aggregate analyses summarise whole runs; a page that shows one sentence or one image patch needs its
rows instead. These are registered in `routescope.analysis.registry.VIEWS`, so the dashboard reads them
through the same `compute` (and cache) as every analysis, and they stay plain functions of a `Run` that
return DataFrames — no Streamlit here. Each filters on `sample` first, so a large run reads a few row
groups, not the run. Top-1 means `rank = 0`, as in the analyses; `norm_entropy` is `frames.norm_entropy_sql`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routescope.store import InputError, RouterInfo, Run

from .engine import connect
from .frames import norm_entropy_sql


def _query(run: Run, query: str) -> pd.DataFrame:
    """DuckDB on two threads: a page's view is small and must not starve the server's other sessions."""
    con = connect(run, threads=2)
    try:
        return con.execute(query).df()
    finally:
        con.close()


def _router(run: Run, router: int) -> RouterInfo:
    for spec in run.info.routers:
        if spec.id == int(router):
            return spec
    raise InputError(f"run {run.name!r} has no router {router}; routers: 0..{len(run.info.routers) - 1}")


def samples_table(run: Run) -> pd.DataFrame:
    """The run's own `samples` table: one row per sample with its labels."""
    return run.read_table("samples").to_pandas()


def steps_table(run: Run) -> pd.DataFrame:
    """The run's own `steps` table: one row per sampler (or generation) step with its timestep."""
    return run.read_table("steps").to_pandas()


def router_names(run: Run) -> dict[int, str]:
    """A short name per router id: `layer L`, with its kind, stack or call count where a layer has several."""
    per_layer: dict[tuple[str, int], int] = {}
    for spec in run.info.routers:
        key = (spec.stack, spec.layer)
        per_layer[key] = per_layer.get(key, 0) + 1
    stacks = {spec.stack for spec in run.info.routers}
    names = {}
    for spec in run.info.routers:
        stack = spec.stack
        name = f"layer {spec.layer}"
        if len(stacks) > 1:
            name = f"{stack} {name}"
        if per_layer[(stack, spec.layer)] > 1:
            name += f" · {spec.kind} #{spec.id}"
        names[spec.id] = name
    return names


def token_routing(run: Run, *, sample: int, router: int, step: int | None = None) -> pd.DataFrame:
    """One sample's tokens (of the router's stack) with the router's top-1 choice for each.

    Columns: `position, token, generated, row, col, step, expert, weight, dropped, entropy, norm_entropy,
    margin, nll`, with `modality, image, frame` after `col` for runs recorded with images. `expert` is the
    rank-0 expert (null where the router never saw the token, e.g. the last generated token);
    `norm_entropy` = entropy / ln E; `nll` is the token's next-token loss (`tokens.nll`, runs recorded with
    token loss; null otherwise, and on a sequence's last token). Text runs route each position at one
    step, so `step=None` takes every step; diffusion runs route every patch at every step, so give `step`.
    """
    spec = _router(run, router)
    stack = spec.stack.replace("'", "''")
    on_step = "" if step is None else f" AND step = {int(step)}"
    where = f"sample = {int(sample)} AND router = {int(router)} AND call = 0{on_step}"
    norm = norm_entropy_sql("d.entropy", str(spec.n_experts))
    places = ", modality, image, frame" if run.info.modality else ""
    nll = "nll" if run.info.token_loss else "CAST(NULL AS FLOAT) AS nll"
    return _query(
        run,
        f"""WITH t AS (SELECT position, token, generated, "row", col{places}, {nll} FROM tokens
                       WHERE sample = {int(sample)} AND stack = '{stack}'),
                 d AS (SELECT position, step, entropy, margin FROM decisions WHERE {where}),
                 a AS (SELECT position, step, expert, weight, dropped FROM assignments
                       WHERE {where} AND rank = 0)
            SELECT t.position, t.token, t.generated, t."row", t.col{places.replace(", ", ", t.")}, d.step,
                   a.expert, a.weight, a.dropped, d.entropy, {norm} AS norm_entropy, d.margin, t.nll
            FROM t LEFT JOIN d USING (position) LEFT JOIN a ON a.position = d.position AND a.step = d.step
            ORDER BY t.position""",
    )


def token_weights(
    run: Run, *, sample: int, position: int, stack: str = "decoder", step: int | None = None
) -> pd.DataFrame:
    """One token's routing at every router of its stack: `router, layer, call, expert, weight, chosen,
    prob` with a row for every expert (weight 0 where not chosen; `prob` only if the run kept `probs`)."""
    quoted = stack.replace("'", "''")
    on_step = "" if step is None else f" AND a.step = {int(step)}"
    chosen = _query(
        run,
        f"""SELECT a.router, a.call, a.expert, a.weight FROM assignments a JOIN routers r ON r.id = a.router
            WHERE a.sample = {int(sample)} AND a.position = {int(position)} AND r.stack = '{quoted}'{on_step}
            ORDER BY a.router, a.call, a.rank""",
    )
    calls = chosen[["router", "call"]].drop_duplicates()
    sizes = {s.id: (s.n_experts, s.layer) for s in run.info.routers}
    grid = pd.DataFrame(
        [
            {"router": int(r), "layer": sizes[int(r)][1], "call": int(c), "expert": e}
            for r, c in calls.itertuples(index=False)
            for e in range(sizes[int(r)][0])
        ],
        columns=["router", "layer", "call", "expert"],
    )
    table = grid.merge(chosen, on=["router", "call", "expert"], how="left")
    table["chosen"] = table["weight"].notna()
    table["weight"] = table["weight"].fillna(0.0).astype(float)
    table["prob"] = np.nan
    if run.info.probs:
        probs = _query(
            run,
            f"""SELECT a.router, a.call, a.probs FROM decisions a JOIN routers r ON r.id = a.router
                WHERE a.sample = {int(sample)} AND a.position = {int(position)}
                AND r.stack = '{quoted}'{on_step}""",
        )
        for r, c, values in probs.itertuples(index=False):
            rows = (table["router"] == r) & (table["call"] == c)
            table.loc[rows, "prob"] = np.asarray(values, dtype=float)[table.loc[rows, "expert"].to_numpy()]
    return table.sort_values(["router", "call", "expert"]).reset_index(drop=True)


def weight_matrix(weights: pd.DataFrame, names: dict[int, str], value: str = "weight") -> pd.DataFrame:
    """The router × expert matrix of `token_weights` (`value`: weight or prob); rows named by `names`."""
    if value not in ("weight", "prob"):
        raise InputError(f"value must be weight or prob, not {value!r}")
    labels = [
        names.get(int(r), str(r)) + (f" call {int(c)}" if c else "")
        for r, c in zip(weights["router"], weights["call"], strict=True)
    ]
    frame = weights.assign(router_name=labels)
    order = list(dict.fromkeys(labels))
    matrix = frame.pivot(index="router_name", columns="expert", values=value).reindex(order)
    matrix.index.name, matrix.columns.name = "router", "expert"
    return matrix


def uncertain(routing: pd.DataFrame, *, entropy_at_least: float, margin_at_most: float) -> pd.Series:
    """Tokens whose normalised entropy is ≥ `entropy_at_least` or whose top-1/top-2 margin is ≤
    `margin_at_most` (the GW-MoE reading of an unsure router); unrouted tokens are never uncertain."""
    flagged = (routing["norm_entropy"] >= entropy_at_least) | (routing["margin"] <= margin_at_most)
    return flagged.fillna(False).astype(bool)


def label_choices(run: Run) -> list[str]:
    """Labels to break routing down by: the run's sample labels (not the CFG `pair` id), then the patch
    row and column for images, then the position; each has few values, unlike token ids."""
    labels = [c for c in run.label_columns if c != "pair"]
    if run.info.is_diffusion:
        labels += ["row", "col"]
    return [*labels, "position"]
