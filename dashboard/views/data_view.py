"""What data arrived: pulls, label frequencies and co-occurrence, rejections, images. Works from the
first `foldwise ingest`, before any run."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from foldwise.dashboard import charts, data, present
from foldwise.dashboard.views.common import gallery
from foldwise.units import byte_size

GALLERY_SIZE = 24
MAX_GROUPS_SHOWN = 200  # duplicate groups in the table; the counts cover them all
CHANGES = ["added", "updated", "rejected", "quarantined", "retired", "restored"]


def pulls_figure(pulls: pd.DataFrame) -> go.Figure:
    names = [f"pull {p}" for p in pulls["pull"]]
    figure = go.Figure()
    for index, change in enumerate(CHANGES):
        figure.add_bar(
            x=names,
            y=pulls[change],
            name=change,
            marker_color=charts.PALETTE[index],
            hovertemplate=f"%{{x}}: %{{y}} {change}<extra></extra>",
        )
    figure.update_layout(barmode="group")
    return charts.styled(figure, "What each pull changed", "", "rows or samples", height=320)


def pulls_table(pulls: pd.DataFrame) -> pd.DataFrame:
    table = pulls.iloc[::-1].copy()
    table["started_at"] = [present.moment(t) for t in table["started_at"]]
    table["new_labels"] = [", ".join(labels) for labels in table["new_labels"]]
    return table[["pull", "started_at", "dataset_size", *CHANGES, "unchanged", "new_labels", "source"]]


def label_figures(frequencies: pd.Series, matrix: pd.DataFrame) -> tuple[go.Figure, go.Figure]:
    counts = go.Figure(
        go.Bar(x=frequencies.index, y=frequencies.values, hovertemplate="%{x}: %{y} samples<extra></extra>")
    )
    heatmap = go.Figure(
        go.Heatmap(
            z=matrix.values,
            x=matrix.columns,
            y=matrix.index,
            colorscale="Blues",
            text=matrix.values,
            texttemplate="%{text}",
            hovertemplate="%{y} and %{x}: %{z} samples<extra></extra>",
            showscale=False,
        )
    )
    heatmap.update_yaxes(autorange="reversed")
    return (
        charts.styled(counts, "Samples per label", "label", "samples", height=380),
        charts.styled(heatmap, "Label co-occurrence (samples with both)", "", "", height=380),
    )


def storage_figure(history: pd.DataFrame) -> go.Figure:
    kinds = [kind for kind in history.columns if kind != "run"]
    figure = go.Figure(
        [
            go.Bar(x=history["run"], y=history[kind] / 2**20, name=kind, marker_color=charts.PALETTE[index])
            for index, kind in enumerate(kinds)
        ]
    )
    figure.update_layout(barmode="stack")
    figure.update_xaxes(type="category")
    return charts.styled(figure, "The data home after each run that trained", "", "MiB", height=320)


def storage_section(runs: pd.DataFrame) -> None:
    """What the data home holds by kind, as recorded by each run that trained (`foldwise storage`
    reads the disk now; `foldwise gc` frees it)."""
    st.subheader("Storage")
    recorded = runs[runs["storage_bytes"].notna()] if "storage_bytes" in runs else runs.iloc[:0]
    if recorded.empty:
        st.caption(
            "No storage use recorded yet: each run that trains records the data home's use at its end."
        )
        return
    history = pd.DataFrame(list(recorded["storage_bytes"])).fillna(0)
    history.insert(0, "run", [f"run {run_id}" for run_id in recorded["id"]])
    latest = recorded.iloc[-1]
    st.caption(
        f"After run {latest['id']}: {byte_size(sum(latest['storage_bytes'].values()))} in all; "
        "`foldwise gc` removes what retention does not keep."
    )
    st.plotly_chart(storage_figure(history), key="storage", config=charts.CONFIG)


def duplicates_section(url: str) -> None:
    """The data set's duplicate groups: each shares one fold and is wholly in or out of the gate set;
    conflicting labels within one are label noise."""
    st.subheader("Duplicate images")
    found = data.duplicate_groups(url)
    if not found["groups"]:
        st.caption("No two samples share an image (exactly, or nearly by perceptual hash).")
        return
    cols = st.columns(3)
    cols[0].metric("Duplicate groups", found["groups"])
    cols[1].metric("Samples in them", found["samples"])
    cols[2].metric("With conflicting labels", found["conflicting"])
    st.caption(
        "Samples with the same image, or nearly the same (a perceptual hash within "
        "`data.near_duplicate_distance`): each group shares one fold and is wholly in or out of the gate "
        "set. Conflicting labels within a group are label noise, listed first."
    )
    if found["groups"] > MAX_GROUPS_SHOWN:
        st.caption(
            f"The first {MAX_GROUPS_SHOWN} of {found['groups']} groups; "
            "`foldwise samples --status duplicates` lists them all."
        )
    st.dataframe(found["table"].head(MAX_GROUPS_SHOWN), hide_index=True, key="duplicates")


def render(url: str) -> None:
    st.title("Data")
    pulls = data.data_pulls(url)
    if pulls.empty:
        st.info("Nothing pulled yet: `foldwise ingest --config F` (or a run) pulls the source.")
        return
    last = pulls.iloc[-1]
    frequencies = data.label_frequencies(url)
    cols = st.columns(4)
    cols[0].metric("Samples in the data set", int(last["dataset_size"]))
    cols[1].metric("Labels in use", len(frequencies))
    cols[2].metric("Pulls", len(pulls))
    cols[3].metric("Last pull", f"{last['started_at']:%b %d %H:%M}", help=present.moment(last["started_at"]))

    st.plotly_chart(pulls_figure(pulls), key="pulls", config=charts.CONFIG)
    st.dataframe(
        pulls_table(pulls),
        hide_index=True,
        column_config={
            "started_at": "pulled (UTC)",
            "dataset_size": "data set size",
            "new_labels": "labels first seen",
        },
        key="pulls_table",
    )

    if frequencies.empty:
        st.caption("No active sample: no label to count.")
    else:
        counts, heatmap = label_figures(frequencies, data.label_cooccurrence(url))
        left, right = st.columns(2)
        left.plotly_chart(counts, key="label_frequencies", config=charts.CONFIG)
        right.plotly_chart(heatmap, key="cooccurrence", config=charts.CONFIG)

    st.subheader("Rejected rows")
    st.caption("Each is recorded once, by the first pull that met it.")
    rejected = data.rejected_rows(url)
    if rejected.empty:
        st.caption("No row was rejected.")
    else:
        st.dataframe(rejected, hide_index=True, key="rejected", placeholder=present.MISSING)

    st.subheader("Quarantined and retired samples")
    inactive = data.inactive_samples(url)
    if inactive.empty:
        st.caption("Every sample is in the data set.")
    else:
        st.caption(
            "Out of the data set: a quarantined sample comes back when its image or row is fixed, "
            "a retired one when a label file names it again."
        )
        st.dataframe(inactive, hide_index=True, key="inactive", placeholder=present.MISSING)

    duplicates_section(url)
    storage_section(data.runs(url))

    st.subheader("Images")
    label = st.selectbox("With label", ["(any)", *frequencies.index], key="gallery_label")
    samples = data.samples_with_label(url, None if label == "(any)" else label, GALLERY_SIZE)
    gallery(
        [
            {"image_path": s["image_path"], "title": s["key"], "lines": [" ".join(s["labels"])]}
            for s in samples
        ]
    )
