"""One run: its config, learning curves, per-class results, thresholds, folds and change."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import data
from dashboard.views.common import choose_run


def learning_curves(epochs: pd.DataFrame) -> go.Figure:
    """Losses and F-beta per epoch, a panel each, a line per fold; dotted lines where a stage begins."""
    epochs = epochs.copy()
    epochs["step"] = epochs.groupby("fold").cumcount() + 1
    long = epochs.melt(
        id_vars=["fold", "step"], value_vars=["train_loss", "valid_loss", "fbeta"], var_name="metric"
    )
    long["fold"] = "fold " + long["fold"].astype(str)
    figure = px.line(long, x="step", y="value", color="fold", facet_col="metric", markers=True, height=340)
    figure.update_yaxes(matches=None, showticklabels=True)
    first_fold = epochs[epochs["fold"] == epochs["fold"].min()]
    for _, start in first_fold.groupby("stage").head(1).iterrows():
        figure.add_vline(x=start["step"] - 0.5, line_dash="dot", annotation_text=f"{int(start['size'])} px")
    figure.update_layout(title="Learning curves (x: epoch across stages)")
    return figure


def threshold_figure(curve: list[float], threshold: float, fbeta: float, label: str) -> go.Figure:
    grid = [i / (len(curve) - 1) for i in range(len(curve))]
    figure = go.Figure(go.Scatter(x=grid, y=curve, mode="lines", name="F-beta"))
    figure.add_scatter(
        x=[threshold], y=[fbeta], mode="markers", marker={"size": 14, "symbol": "x"}, name="chosen"
    )
    figure.update_layout(title=f"{label}: F-beta against threshold", xaxis_title="threshold", height=320)
    return figure


def render(url: str) -> None:
    st.title("Run detail")
    runs = data.runs(url)
    run_id = choose_run(runs)
    run = data.run_record(url, run_id)
    beta = f"F{run['beta']:g}"
    row = runs[runs["id"] == run_id].iloc[0]
    cols = st.columns(4)
    cols[0].metric("Status", run["status"])
    cols[1].metric(f"OOF {beta}", "–" if pd.isna(row["fbeta_oof"]) else f"{row['fbeta_oof']:.4f}")
    cols[2].metric(f"Holdout {beta}", "–" if pd.isna(row["fbeta_holdout"]) else f"{row['fbeta_holdout']:.4f}")
    cols[3].metric("Samples", "–" if pd.isna(row["dataset_size"]) else int(row["dataset_size"]))
    if run["reason"]:
        st.caption(f"Reason: {run['reason']}")
    with st.expander("Config this run ran with"):
        st.json(run["config"])

    epochs = data.epochs(url, run_id)
    if not epochs.empty:
        st.plotly_chart(learning_curves(epochs), key="learning_curves")
    classes = data.class_results(url, run_id)
    if classes.empty:
        st.info(f"Run {run_id} has no per-class results ({run['status']}).")
        return

    st.subheader("Per class")
    figure = px.bar(
        classes, x="label", y="fbeta", hover_data=["support", "precision", "recall"], text="support"
    )
    figure.update_layout(
        yaxis_title=f"{beta} at the class threshold", height=340, title="F-beta per class (bar text: support)"
    )
    st.plotly_chart(figure, key="class_bars")
    st.dataframe(
        classes[["label", "threshold", "fallback", "fbeta", "precision", "recall", "support"]],
        hide_index=True,
        column_config={"fallback": st.column_config.CheckboxColumn("global threshold")},
        key="thresholds_table",
    )
    label = st.selectbox("Class", classes["label"].tolist(), key="class")
    chosen = classes[classes["label"] == label].iloc[0]
    curve = data.threshold_curve(url, run_id, label)
    if curve:
        st.plotly_chart(
            threshold_figure(curve, chosen["threshold"], chosen["fbeta"], label), key="threshold_curve"
        )
    st.caption(
        f"{label}: threshold {chosen['threshold']:.3f}, {beta} {chosen['fbeta']:.4f}, support {chosen['support']}"
    )

    if run["fold_set_id"] is not None:
        counts = data.fold_label_counts(url, run["fold_set_id"])
        if not counts.empty:
            counts["fold"] = counts["fold"].astype(str)
            figure = px.bar(counts, x="label", y="count", color="fold", barmode="group", height=340)
            figure.update_layout(title="Samples per label in each fold")
            st.plotly_chart(figure, key="fold_counts")

    st.subheader("Change against the previous successful run")
    if run["previous_id"] is None:
        st.caption("This is the first successful run.")
        return
    previous = data.class_results(url, run["previous_id"])
    merged = classes.merge(previous, on="label", how="outer", suffixes=("", "_previous"))
    merged["change"] = merged["fbeta"] - merged["fbeta_previous"]
    st.dataframe(
        merged[["label", "fbeta", "fbeta_previous", "change", "support", "support_previous"]],
        hide_index=True,
        key="deltas_table",
    )
    st.caption(f"against run {run['previous_id']}; a blank cell: the class is new or gone")
