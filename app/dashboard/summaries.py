"""The aggregated tables the Experts and Balance pages draw, kept importable under their old home.

Their SQL now lives in `routescope.analysis` (`decisions.py`, `tokens.py`, `specialization.py`) as
registered views, so the CLI's figures and the dashboard compute them one way; the pages read them
through `cache.table(run, kind, ...)`. This module only re-exports them for code that imported them here.
"""

from __future__ import annotations

from routescope.analysis.decisions import HISTOGRAM_VALUES, decision_histogram, most_uncertain
from routescope.analysis.specialization import peak_lift
from routescope.analysis.tokens import expert_tokens

__all__ = ["HISTOGRAM_VALUES", "decision_histogram", "expert_tokens", "most_uncertain", "peak_lift"]
