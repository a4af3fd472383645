"""The Foldwise dashboard: `foldwise dashboard -c F`, or `streamlit run dashboard/app.py`.

It reads the database named by FOLDWISE_DATABASE_URL (default: the demo's) and never writes to it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # `streamlit run` puts only dashboard/ on the path

from dashboard import data  # noqa: E402
from dashboard.views import data_view, overview, predictions, run_detail, runs_table  # noqa: E402

PAGES = {
    "Overview": overview.render,
    "Runs": runs_table.render,
    "Run detail": run_detail.render,
    "Data": data_view.render,
    "Predictions": predictions.render,
}

st.set_page_config(page_title="Foldwise", layout="wide")
url = data.database_url()
st.sidebar.title("Foldwise")
page = st.sidebar.radio("Page", list(PAGES), key="page")
st.sidebar.caption(f"Database: `{data.shown_url(url)}`")

if not data.has_schema(url) or data.runs(url).empty:
    st.title(page)
    st.info(
        "No runs yet. Run `foldwise run --config configs/demo.toml` (or `make demo`) and they appear "
        "here; this page refreshes its data every 30 seconds."
    )
else:
    PAGES[page](url)
