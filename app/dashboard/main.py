"""The dashboard's entry script (`streamlit run main.py`, started by `routescope app`).

It opens the store named by `ROUTESCOPE_STORE`, starts the first start's background job (the default runs
the store lacks) and shows its progress while it runs, lists the store's other unfinished jobs in the
sidebar, and hands over to `st.navigation`, which runs the chosen page from `app_pages.PAGES`.
"""

from __future__ import annotations

import streamlit as st

from routescope.dashboard.app_pages import PAGES
from routescope.dashboard.first_start import ensure_runs
from routescope.dashboard.job_view import sidebar_jobs
from routescope.dashboard.widgets import open_store


def main() -> None:
    st.set_page_config(page_title="RouteScope", page_icon=":material/hub:", layout="wide")
    store = open_store()
    st.sidebar.text(f"Store: {store.path.resolve()}")
    navigation = st.navigation(
        [
            st.Page(page.path, title=page.title, icon=page.icon, url_path=page.url_path, default=page.default)
            for page in PAGES
        ]
    )
    ensure_runs(store)
    sidebar_jobs(store)
    navigation.run()


if __name__ == "__main__":
    main()
