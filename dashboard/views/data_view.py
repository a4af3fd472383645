"""What data arrived: pulls, label frequencies and co-occurrence, rejections, images."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from dashboard import data
from dashboard.views.common import gallery

GALLERY_SIZE = 24


def render(url: str) -> None:
    st.title("Data")
    pulls = data.data_pulls(url)
    if not pulls.empty:
        changes = ["added", "updated", "rejected", "quarantined", "retired", "restored"]
        long = pulls.melt(id_vars=["pull", "started_at"], value_vars=changes)
        figure = px.bar(long, x="pull", y="value", color="variable", barmode="group", height=320)
        figure.update_layout(title="Data pulls: what each one changed", yaxis_title="rows or samples")
        st.plotly_chart(figure, key="pulls")

    frequencies = data.label_frequencies(url)
    left, right = st.columns(2)
    with left:
        figure = px.bar(
            x=frequencies.index, y=frequencies.values, labels={"x": "label", "y": "samples"}, height=380
        )
        figure.update_layout(title="Samples per label")
        st.plotly_chart(figure, key="label_frequencies")
    with right:
        matrix = data.label_cooccurrence(url)
        figure = px.imshow(matrix, text_auto=True, color_continuous_scale="Blues", height=380)
        figure.update_layout(title="Label co-occurrence (samples with both)")
        st.plotly_chart(figure, key="cooccurrence")

    st.subheader("Rejected rows")
    st.caption("Each is recorded once, by the first pull that met it.")
    rejected = data.rejected_rows(url)
    if rejected.empty:
        st.caption("No row was rejected.")
    else:
        st.dataframe(rejected, hide_index=True, key="rejected")

    st.subheader("Quarantined and retired samples")
    inactive = data.inactive_samples(url)
    if inactive.empty:
        st.caption("Every sample is in the data set.")
    else:
        st.caption(
            "Out of the data set: a quarantined sample comes back when its image or row is fixed, "
            "a retired one when a label file names it again."
        )
        st.dataframe(inactive, hide_index=True, key="inactive")

    st.subheader("Images")
    label = st.selectbox("With label", ["(any)", *frequencies.index], key="gallery_label")
    samples = data.samples_with_label(url, None if label == "(any)" else label, GALLERY_SIZE)
    gallery(
        [{"image_path": s["image_path"], "caption": f"{s['key']}: {' '.join(s['labels'])}"} for s in samples]
    )
