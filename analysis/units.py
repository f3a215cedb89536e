"""Units of independence: which rows of a run a bootstrap or a permutation test may treat as exchangeable.

Tokens of one sequence are not independent draws, and neither are the k assignments of one token nor the
two classifier-free-guidance branches of one generated image. Every interval and p-value in RouteScope is
therefore computed over *units*, declared once here:

- text runs: the sequence (`sample`);
- diffusion runs (a sampler or a diffusers pipeline): the generated image, i.e. the `pair` label that ties
  the conditional and the unconditional branch of one trajectory together;
- any run: another sample-level label named by the caller (`unit="document"`) or stored in the manifest
  (`manifest["unit"]`, e.g. a document id when several samples are chunks of one document).

`unit_codes(run)` maps every sample to a dense unit code `0 … U−1`; `unit_sql(run)` gives the same code as
an SQL expression next to a fact table, so per-unit sufficient statistics are aggregated in DuckDB once.
"""

from __future__ import annotations

import pandas as pd

from routescope.store import InputError, Run

SEQUENCE = "sample"
"""The unit of text runs: one input sequence."""
IMAGE = "pair"
"""The unit of diffusion runs: one generated image, both CFG branches (the samples table's `pair`)."""


def unit_name(run: Run, unit: str | None = None) -> str:
    """The unit of independence of `run`: `unit` when given, else the manifest's, else `pair` for
    diffusion runs that have it and `sample` otherwise. A unit that is not a sample-level column of the run
    is a one-line error."""
    name = unit or run.info.unit or (IMAGE if IMAGE in run.label_columns else SEQUENCE)
    if name != SEQUENCE and name not in run.label_columns:
        raise InputError(
            f"run {run.name!r} has no sample column {name!r} to use as the unit of independence; "
            f"choose from sample, {', '.join(run.label_columns)}"
        )
    return str(name)


def unit_codes(run: Run, unit: str | None = None) -> pd.DataFrame:
    """`sample, unit`: every sample of the run with the dense code (0 … U−1) of its unit."""
    name = unit_name(run, unit)
    if name == SEQUENCE:
        samples = run.samples(["sample"])
        keys = samples["sample"]
    else:
        samples = run.samples(["sample", name])
        keys = samples[name].astype(str)
    codes = {value: code for code, value in enumerate(sorted(keys.unique()))}
    return pd.DataFrame({"sample": samples["sample"].to_numpy(), "unit": keys.map(codes).to_numpy()})


def unit_sql(run: Run, unit: str | None = None, fact: str = "a") -> tuple[str, str]:
    """(JOIN clause, SQL expression) that put the unit key next to the fact table aliased `fact`; the key
    is the sample id itself or the unit label as text (map it with `unit_codes` when a dense code is
    needed)."""
    name = unit_name(run, unit)
    if name == SEQUENCE:
        return "", f"{fact}.sample"
    return f"JOIN samples su ON su.sample = {fact}.sample", f'CAST(su."{name}" AS VARCHAR)'


def count_units(run: Run, unit: str | None = None) -> int:
    """How many independent units the run holds (the `n` of every interval)."""
    return int(unit_codes(run, unit)["unit"].nunique())
