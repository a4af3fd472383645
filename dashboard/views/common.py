"""Pieces shared by the pages: choosing a run, outcome badges, a running run's progress, a gallery."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from foldwise.dashboard import data, present

GALLERY_CELL_PX = 170  # two a row on a 390 px phone


def run_label(runs: pd.DataFrame) -> dict[int, str]:
    """`run 7 · rejected`, `run 5 · promoted · champion`: how a run is named in pickers."""
    return {
        row.id: f"run {row.id} · {row.outcome}" + (f" · {present.CHAMPION}" if row.champion else "")
        for row in runs.itertuples()
    }


def choose_run(
    runs: pd.DataFrame, *, key: str = "run", succeeded_only: bool = False, default: int | None = None
) -> int:
    """A run picker, newest first; it opens on `default` (else the newest run). The Runs page sets
    the "run" key when a run is opened there."""
    candidates = runs[runs["status"] == "succeeded"] if succeeded_only else runs
    ids = candidates["id"].tolist()[::-1]
    if st.session_state.get(key) not in ids:
        st.session_state[key] = default if default in ids else ids[0]
    labels = run_label(candidates)
    chosen = st.selectbox("Run", ids, key=key, format_func=labels.__getitem__)
    if key == "run":
        st.query_params["run"] = str(chosen)  # the address opens this run again
    return chosen


def badges(outcome: str, champion: bool) -> str:
    """A run's badges (its outcome; champion or not) as Markdown."""
    text = f":{present.OUTCOME_COLORS.get(outcome, 'gray')}-badge[{outcome}]"
    return text + (
        f" :{present.CHAMPION_COLOR}-badge[:material/star: {present.CHAMPION}]" if champion else ""
    )


def live_run(url: str, run_id: int) -> int:
    """A running run's progress bar, what it is doing, its heartbeat and Prefect flow run. Returns its
    number of epoch rows (the key of its fresh learning curves)."""
    progress, epoch_rows, heartbeat_age = data.live_progress(url, run_id)
    record = data.run_record(url, run_id)
    st.progress(progress.fraction, text=f"Run {run_id}: {progress.describe()}")
    st.caption(
        f"Started {present.moment(record['started_at'])} on {record['host'] or '?'} (pid {record['pid']}); "
        f"last heartbeat {'never' if heartbeat_age is None else present.duration(heartbeat_age) + ' ago'}; "
        f"{flow_run_text(record['flow_run_id'])}."
    )
    stale_minutes = record["config"].get("service", {}).get("stale_after_minutes")
    if heartbeat_age is not None and stale_minutes and heartbeat_age > stale_minutes * 60:
        st.warning(
            f"Run {run_id} has not beaten for more than {stale_minutes:g} minutes "
            "(service.stale_after_minutes): its process is probably gone. The next run records it as crashed."
        )
    return epoch_rows


def flow_run_text(flow_run_id: str | None) -> str:
    """A link to the run's Prefect flow run, or why there is none."""
    if flow_run_id is None:
        return "not run by Prefect"
    link = present.flow_run_link(flow_run_id)
    if link is None:
        return f"Prefect flow run `{flow_run_id}` (set PREFECT_UI_URL or PREFECT_API_URL for a link)"
    return f"[Prefect flow run]({link})"


def markdown_text(text: str) -> str:
    """Text shown as is inside Markdown (ids and labels come from label files: `*`, `_` stay themselves)."""
    return re.sub(r"([\\`*_\[\]<>#|~$])", r"\\\1", text)


def gallery(items: list[dict[str, Any]]) -> None:
    """Images in rows that wrap, in order at any screen width (a phone shows two a row), each captioned
    by its title and lines. A missing file is listed by its path instead of failing the page."""
    shown = [item for item in items if Path(item["image_path"]).is_file()]
    if shown:
        st.image(
            [item["image_path"] for item in shown],
            caption=[
                "  \n".join(markdown_text(line) for line in [item["title"], *item["lines"]]) for item in shown
            ],
            width=GALLERY_CELL_PX,
        )
    for item in items:
        if item not in shown:
            st.caption(f"missing image {item['image_path']}: {item['title']}")
    if not items:
        st.caption("Nothing to show.")
