"""The Streamlit dashboard: record runs and browse their routing (`routescope app`).

`main.py` is the entry script Streamlit runs; it opens the store, records the default runs on first start
and hands over to `st.navigation`. Pages live in `app_pages/` (one file each, listed in `pages.PAGES`); they
stay thin: widgets → a cached table (`cache.py`, the only module that caches) → a figure or table.
Importing this package does not import Streamlit, so the CLI can build the server's command line cheaply.
"""

from __future__ import annotations

from .settings import DEFAULT_STORE, ENTRY_SCRIPT, STORE_ENV, store_folder

__all__ = ["DEFAULT_STORE", "ENTRY_SCRIPT", "STORE_ENV", "store_folder"]
