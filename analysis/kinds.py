"""What an analysis kind is: `Analysis`, the entry `registry.ANALYSES` and `registry.VIEWS` hold, and the
capability sets entries name in `needs`. Kept apart from the registry so that a group of kinds can be
declared beside its functions (`placement_kinds.py`) and the registry merges them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

NOTHING: tuple[str, ...] = ()
SCORES = ("ids", "scores")
TOKEN_IDS = ("ids", "token_ids")

LABEL = "{label}"
"""Placeholder in `keys` for the label column the caller chose."""


@dataclass(frozen=True)
class Analysis:
    """One report kind: its function, what it answers, what it needs and which columns key its rows."""

    function: Callable[..., pd.DataFrame]
    description: str
    keys: tuple[str, ...]
    label: bool = False
    """Takes a label (`--by`) as its second argument."""
    layer: Literal["filter", "required", "optional"] = "filter"
    """`required`/`optional`: passed to the function as `layer=`; `filter`: rows of other layers dropped."""
    other: bool = False
    """Compares two runs: the second run is the function's second argument."""
    series: bool = False
    """Compares a series of runs (checkpoints, in order) with the run: the function's second argument is
    the tuple of them (`--compare A B C`; `compute(..., series=...)`)."""
    needs: tuple[str, ...] | Callable[[dict[str, Any]], tuple[str, ...]] = ("ids",)
    """Capabilities the run (and a second run) must have (routescope.store.capabilities); `compute` refuses
    in one line otherwise, so the CLI, figures and dashboard pages inherit the refusal."""
