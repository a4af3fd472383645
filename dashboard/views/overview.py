"""Did last night's run go well, and is the model getting better?"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from dashboard import data


def render(url: str) -> None:
    st.title("Overview")
    runs = data.runs(url)
    succeeded = runs[runs["status"] == "succeeded"].dropna(subset=["fbeta_oof"])
    last = runs.iloc[-1]
    left, middle, right = st.columns(3)
    champion_id = data.champion(url)
    if succeeded.empty:
        left.metric("Best model", "none yet")
    else:
        # The model in use is the champion (the gate's choice); before any decision, the best OOF score.
        chosen = succeeded[succeeded["id"] == champion_id]
        best = chosen.iloc[0] if not chosen.empty else succeeded.loc[succeeded["fbeta_oof"].idxmax()]
        role = "Champion" if not chosen.empty else "Best model"
        left.metric(f"{role}: run {best['id']}", f"OOF F{best['beta']:g} {best['fbeta_oof']:.4f}")
        left.caption(f"trained {best['finished_at']:%Y-%m-%d %H:%M} UTC on {best['dataset_size']} samples")
    middle.metric(f"Last run: run {last['id']}", last["status"])
    middle.caption(last["reason"] or "")
    right.metric("Runs", len(runs), help="succeeded / skipped / failed / crashed")
    right.caption(" · ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items()))

    if not succeeded.empty:
        figure = go.Figure()
        figure.add_scatter(
            x=succeeded["finished_at"], y=succeeded["fbeta_oof"], mode="lines+markers", name="OOF F-beta"
        )
        figure.add_scatter(
            x=[best["finished_at"]],
            y=[best["fbeta_oof"]],
            mode="markers",
            marker={"symbol": "star", "size": 16},
            name=f"{role.lower()} (run {best['id']})",
        )
        figure.update_layout(title="F-beta of every successful run", yaxis_title="OOF F-beta", height=350)
        st.plotly_chart(figure, key="fbeta_over_time")
    pulls = data.data_pulls(url)
    if not pulls.empty:
        figure = go.Figure(go.Scatter(x=pulls["started_at"], y=pulls["dataset_size"], mode="lines+markers"))
        figure.update_layout(title="Data set size at each pull", yaxis_title="samples", height=300)
        st.plotly_chart(figure, key="size_over_time")
