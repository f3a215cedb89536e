"""Where the dashboard finds its store and its entry script (no Streamlit import here).

`routescope app --store DIR` starts Streamlit with the store folder in the `ROUTESCOPE_STORE`
environment variable; an environment variable (rather than script arguments after `--`) reaches every
page and `AppTest` alike.
"""

from __future__ import annotations

import os
from pathlib import Path

STORE_ENV = "ROUTESCOPE_STORE"
"""Environment variable holding the store folder the dashboard reads and records into."""
DEFAULT_STORE = "runs"
"""Store folder when none is given (relative to the working directory, as for the CLI)."""
ENTRY_SCRIPT = Path(__file__).with_name("main.py")
"""The script `streamlit run` starts."""


def store_folder() -> Path:
    """The store folder of this dashboard process: `$ROUTESCOPE_STORE`, else `runs`."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)
