"""What a page says when its run lacks something recorded only on request (token loss, expert output
norms), and how to record it: one sentence per capability, worded from `routescope.store.capabilities`
so the dashboard, the CLI's refusals and the docs name the same option.
"""

from __future__ import annotations

from routescope.store.capabilities import CAPABILITIES, ON_REQUEST

RECORD_FLAGS = {"token_loss": "--token-loss", "expert_stats": "--expert-stats"}
"""The `routescope record` flag of each recording option that adds an on-request capability."""
RUN_PAGE_BOXES = {"token_loss": "Keep per-token loss", "expert_stats": "Keep expert output norms"}
"""The Run page's checkbox of each such option."""


def how_to_record(capability: str, purpose: str) -> str:
    """'PURPOSE needs WORDS: record the run with OPTION (`routescope record MODEL ... --FLAG`, the Run
    page's “BOX”, or `routescope.record(..., OPTION=True)`).' for an on-request capability (`token_loss`,
    `output_norms`)."""
    option = ON_REQUEST[capability][1]
    words = CAPABILITIES[capability].split(" (")[0]  # "per-token loss", "expert output norms"
    return (
        f"{purpose} needs {words}: record the run with {option.replace('_', ' ')} (`routescope record MODEL "
        f"... {RECORD_FLAGS[option]}`, the Run page's “{RUN_PAGE_BOXES[option]}”, or "
        f"`routescope.record(..., {option}=True)`)."
    )
