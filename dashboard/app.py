"""The Foldwise dashboard: `foldwise dashboard -c F`, or `streamlit run dashboard/app.py` with Foldwise installed.

It reads the database named by FOLDWISE_DATABASE_URL (default: the demo's) and never writes to it.
`?page=Run detail&run=7` in the address opens a page (and a run).
"""

from __future__ import annotations

import streamlit as st

from foldwise.dashboard import data
from foldwise.dashboard.views import compare, data_view, overview, predictions, run_detail, runs_table

PAGES = {
    "Overview": overview.render,
    "Runs": runs_table.render,
    "Run detail": run_detail.render,
    "Compare": compare.render,
    "Data": data_view.render,
    "Predictions": predictions.render,
}
LIVE_REFRESH_SECONDS = 10


def live_page(url: str, page: str, running: tuple[int, ...]) -> None:
    """The page, re-rendered every LIVE_REFRESH_SECONDS while a run is running. The whole app runs
    again when a run starts or ends (to read everything again) or when a button chose another page."""
    if data.running_runs(url) != running or st.session_state["page"] != page:
        st.rerun(scope="app")
    PAGES[page](url)


def refresh() -> None:
    st.cache_data.clear()


st.set_page_config(page_title="Foldwise", layout="wide")
url = data.database_url()
if "page" not in st.session_state and st.query_params.get("page") in PAGES:
    st.session_state["page"] = st.query_params["page"]
if "run" not in st.session_state and st.query_params.get("run", "").isdigit():
    st.session_state["run"] = int(st.query_params["run"])
st.sidebar.title("Foldwise")
page = st.sidebar.radio("Page", list(PAGES), key="page")
st.query_params["page"] = page
st.sidebar.caption(f"Database: `{data.shown_url(url)}`")
st.sidebar.button("Refresh now", key="refresh", on_click=refresh, help="Read the database again")

revision = data.schema_revision(url)
if revision == data.expected_revision() and data.running_runs(url) != data.recorded_as_running(url):
    st.cache_data.clear()  # a run started or ended since the cached reads: read everything again

if revision is None:
    st.title(page)
    st.info(
        "No runs yet, and no data. `foldwise ingest --config F` pulls the source (the Data page then "
        "shows it); `foldwise run --config F` (or `make demo`) trains. Then press **Refresh now**."
    )
elif revision != data.expected_revision():
    st.title(page)
    st.error(
        f"The database's schema is at revision {revision}; this Foldwise reads revision "
        f"{data.expected_revision()}. Run `foldwise db upgrade --config F` (the same version as this "
        "dashboard), then press **Refresh now**."
    )
elif data.runs(url).empty and page != "Data":
    st.title(page)
    st.info(
        "No runs yet. `foldwise run --config F` (or `make demo`) trains, then press **Refresh now**; "
        "the Data page shows what has been pulled."
    )
elif running := data.running_runs(url):
    st.sidebar.info(
        f"Run {', '.join(map(str, running))} is running: this page refreshes every {LIVE_REFRESH_SECONDS} s."
    )
    st.fragment(live_page, run_every=LIVE_REFRESH_SECONDS)(url, page, running)
else:
    st.sidebar.caption(
        f"Data read at most every {data.TTL_SECONDS} s; pages refresh by themselves only while a run is "
        "running."
    )
    PAGES[page](url)
