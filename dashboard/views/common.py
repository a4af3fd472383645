"""Pieces shared by the pages: choosing a run, showing a gallery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st


def choose_run(runs: pd.DataFrame, *, succeeded_only: bool = False) -> int:
    """A run picker shared by the pages (the Runs page sets it when a run is opened)."""
    candidates = runs[runs["status"] == "succeeded"] if succeeded_only else runs
    ids = candidates["id"].tolist()[::-1]  # newest first
    if st.session_state.get("run") not in ids:
        st.session_state["run"] = ids[0]
    labels = dict(zip(candidates["id"], candidates["status"], strict=True))
    return st.selectbox("Run", ids, key="run", format_func=lambda i: f"run {i} ({labels[i]})")


def gallery(items: list[dict[str, Any]], columns: int = 6) -> None:
    """Images with captions; a missing file shows its path instead of failing the page."""
    if not items:
        st.caption("Nothing to show.")
        return
    grid = st.columns(columns)
    for index, item in enumerate(items):
        with grid[index % columns]:
            if Path(item["image_path"]).is_file():
                st.image(item["image_path"], caption=item["caption"], width="stretch")
            else:
                st.caption(f"missing image {item['image_path']}: {item['caption']}")
