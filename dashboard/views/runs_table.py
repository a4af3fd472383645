"""Every run: filter, sort, open one."""

from __future__ import annotations

import streamlit as st

from dashboard import data

COLUMNS = [
    "id",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "dataset_size",
    "fbeta_oof",
    "fbeta_holdout",
    "reason",
]


def render(url: str) -> None:
    st.title("Runs")
    runs = data.runs(url)
    statuses = sorted(runs["status"].unique())
    chosen = st.multiselect("Status", statuses, default=statuses, key="status_filter")
    search = st.text_input("Reason contains", key="reason_filter")
    shown = runs[runs["status"].isin(chosen)]
    if search:
        shown = shown[shown["reason"].fillna("").str.contains(search, case=False, regex=False)]
    st.dataframe(
        shown[COLUMNS].iloc[::-1],
        hide_index=True,
        column_config={
            "fbeta_oof": st.column_config.NumberColumn("OOF F-beta", format="%.4f"),
            "fbeta_holdout": st.column_config.NumberColumn("holdout F-beta", format="%.4f"),
            "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
        },
        key="runs_table",
    )
    st.caption(f"{len(shown)} of {len(runs)} runs; click a column header to sort.")
    if not shown.empty:
        run_id = st.selectbox("Open run", shown["id"].tolist()[::-1], key="open_run")
        st.button("Open run detail", key="open", on_click=open_run, args=(run_id,))


def open_run(run_id: int) -> None:
    # A callback: it runs before the next script run, when widget values may still change.
    st.session_state["run"] = run_id
    st.session_state["page"] = "Run detail"
