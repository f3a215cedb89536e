"""The dashboard's pages: one file each in this folder, listed once in `PAGES`.

(Not `pages/`: Streamlit treats a `pages/` folder beside the entry script as the legacy multipage app and
would serve `/tokens` from it directly, bypassing `main.py` and its navigation.)

Adding a page is its file here plus one `PageFile(...)` line below; `main.py` builds the navigation from
this list, in its order. Page files are Streamlit scripts (run with `__name__ == "__main__"`), each
reading widgets, asking `cache.table` for a table and drawing it with a `routescope.figures` builder
through `widgets.show_figure` (which adds the export menu).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).parent


@dataclass(frozen=True, kw_only=True)
class PageFile:
    """One page: its script in this folder, its title, icon and URL path."""

    file: str
    """Script file name in this folder."""
    title: str
    """Title in the navigation menu and the browser tab."""
    icon: str
    """A Material icon (`:material/NAME:`) or an emoji."""
    url_path: str
    """The page's path in the URL (`/run`)."""
    default: bool = False
    """The page the app opens on; Streamlit serves it at `/` (its `url_path` is then not used)."""

    @property
    def path(self) -> Path:
        return FOLDER / self.file


PAGES: tuple[PageFile, ...] = (
    PageFile(file="run.py", title="Run", icon=":material/play_circle:", url_path="run"),
    PageFile(
        file="tokens.py", title="Tokens", icon=":material/text_fields:", url_path="tokens", default=True
    ),
    PageFile(file="experts.py", title="Experts", icon=":material/hub:", url_path="experts"),
    PageFile(file="noise_steps.py", title="Noise steps", icon=":material/blur_on:", url_path="noise-steps"),
    PageFile(file="balance.py", title="Balance & uncertainty", icon=":material/balance:", url_path="balance"),
    PageFile(file="placement.py", title="Placement", icon=":material/dns:", url_path="placement"),
    PageFile(file="embeddings.py", title="Embeddings", icon=":material/scatter_plot:", url_path="embeddings"),
    PageFile(file="compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    PageFile(
        file="interventions.py", title="Interventions", icon=":material/science:", url_path="interventions"
    ),
)
"""The navigation, in menu order."""
