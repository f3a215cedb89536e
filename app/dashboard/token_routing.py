"""The Experts page's token-routing section (text runs): how far routing follows the token, as a whole.

Four views, each a registered figure kind beside its chance level from the observed loads: OLMoE's
vocabulary specialization keyed on the input token (`vocabulary`) and, for runs recorded with token loss,
on the model's predicted next token (`vocabulary-predicted`); the most frequent top-1 paths through depth,
each beside its share if every layer chose independently (`paths`); and how often consecutive tokens share
a top-1 expert (`repeat`). A module of its own because these views are about the whole layer or stack,
not one expert's card; the Experts page calls `token_routing(run)` below its overview.
"""

from __future__ import annotations

import streamlit as st

from routescope.dashboard import state
from routescope.dashboard.widgets import show_kind
from routescope.figures.registry import FIGURES, FigureRequest, unmet
from routescope.store import Run

VIEWS = {
    "vocabulary": "Vocabulary (input token)",
    "vocabulary-predicted": "Vocabulary (predicted next token)",
    "paths": "Paths through depth",
    "repeat": "Consecutive tokens",
}
CAPTIONS = {
    "vocabulary": "Per layer, the CDF over token occurrences of the share of a token id's top-1 choices that "
    "go to its most frequent expert; a router that decides by the token alone piles up at 1, one that "
    "ignores it sits near the dashed 1/E.",
    "vocabulary-predicted": "As the input-token view, keyed on the model's argmax next token at each "
    "position (OLMoE's predicted-token specialization).",
    "paths": "The most frequent top-1 expert paths through the MoE layers (3>7>1>0), each beside its share "
    "if every layer chose independently with its own load.",
    "repeat": "Per layer, the share of consecutive tokens with the same top-1 expert (and with the first "
    "one's top-1 among the second's top-k), each with its chance level from the observed loads dashed.",
}


def offered(run: Run) -> list[str]:
    """The views this run can draw (text runs; `paths` needs two MoE layers, the predicted view token
    loss)."""
    request = FigureRequest(run=run)
    return [kind for kind in VIEWS if unmet(FIGURES[kind], request) is None]


def token_routing(run: Run) -> None:
    """A view picker and the chosen figure, with a caption saying what it shows."""
    views = offered(run)
    if not views:
        return
    st.markdown("**Token routing**: how far the whole layer's routing follows the token")
    kind = str(
        st.radio(
            "Token routing view",
            views,
            format_func=VIEWS.__getitem__,
            horizontal=True,
            key=state.scoped(state.EXPERTS_TOKEN_VIEW, run.name),
            label_visibility="collapsed",
        )
    )
    st.caption(CAPTIONS[kind])
    show_kind(kind, run, key=state.scoped(state.EXPERTS_TOKEN_CHART, run.name, kind))
