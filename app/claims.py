"""`routescope.claims`: the registry of published claims and their checks (`routescope.analysis.claims`),
under the short public name the notebooks and the `routescope claims` command use."""

from __future__ import annotations

from routescope.analysis.claims import CLAIMS, Claim, Verdict, applicable, check, check_all

__all__ = ["CLAIMS", "Claim", "Verdict", "applicable", "check", "check_all"]
