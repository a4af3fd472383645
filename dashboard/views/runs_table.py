"""Every run: filter, sort, open one or compare some."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from foldwise import metrics
from foldwise.dashboard import data, present

COLUMNS = [
    "id",
    "badges",
    "started_at",
    "duration",
    "dataset_size",
    "score_oof",
    "score_gate_set",
    "decision",
    "reason",
]
BADGES = [*present.OUTCOME_COLORS, present.CHAMPION]


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs as the table shows them, newest first: badges as a list, durations in words."""
    shown = runs.iloc[::-1].copy()
    shown["badges"] = [
        [outcome, present.CHAMPION] if champion else [outcome]
        for outcome, champion in zip(shown["outcome"], shown["champion"], strict=True)
    ]
    shown["duration"] = [
        "running" if status == "running" else present.duration(seconds)
        for status, seconds in zip(shown["status"], shown["duration_s"], strict=True)
    ]
    return shown[COLUMNS]


def render(url: str) -> None:
    st.title("Runs")
    runs = data.runs(url)
    outcomes = [o for o in present.OUTCOME_COLORS if o in set(runs["outcome"])]
    chosen = st.multiselect("Outcome", outcomes, default=outcomes, key="outcome_filter")
    search = st.text_input("Reason or gate decision contains", key="reason_filter")
    shown = runs[runs["outcome"].isin(chosen)]
    if search:
        text = shown["reason"].fillna("") + " " + shown["decision"].fillna("")
        shown = shown[text.str.contains(search, case=False, regex=False)]
    metric = data.newest_metric_name(runs)
    st.dataframe(
        table(shown),
        hide_index=True,
        placeholder=present.MISSING,
        column_config={
            "id": st.column_config.NumberColumn("run", format="%d"),
            "badges": st.column_config.MultiselectColumn(
                "outcome",
                options=BADGES,
                color=[*present.OUTCOME_COLORS.values(), present.CHAMPION_COLOR],
            ),
            "started_at": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm"),
            "duration": st.column_config.TextColumn("duration"),
            "dataset_size": st.column_config.NumberColumn("samples", format="%d"),
            "score_oof": st.column_config.NumberColumn(metrics.oof_label(metric), format="%.4f"),
            "score_gate_set": st.column_config.NumberColumn(f"gate set {metric}", format="%.4f"),
            "decision": st.column_config.TextColumn("gate decision", width="large"),
            "reason": st.column_config.TextColumn("why it ran (or did not)", width="large"),
        },
        key="runs_table",
    )
    st.caption(f"{len(shown)} of {len(runs)} runs; click a column header to sort.")
    if shown.empty:
        return
    left, right = st.columns(2)
    with left:
        run_id = st.selectbox("Open run", shown["id"].tolist()[::-1], key="open_run")
        st.button("Open run detail", key="open", on_click=open_run, args=(run_id,))
    with right:
        succeeded = shown[shown["status"] == "succeeded"]["id"].tolist()[::-1]
        picked = st.multiselect("Compare runs", succeeded, default=succeeded[:2], key="runs_to_compare")
        st.button("Compare", key="compare", on_click=compare_runs, args=(picked,), disabled=len(picked) < 2)


def open_run(run_id: int) -> None:
    # A callback: it runs before the next script run, when widget values may still change.
    st.session_state["run"] = run_id
    st.session_state["page"] = "Run detail"


def compare_runs(run_ids: list[int]) -> None:
    st.session_state["compare"] = run_ids
    st.session_state["page"] = "Compare"
