"""Out-of-fold predictions of a run (the champion first), worst errors first, for one class."""

from __future__ import annotations

import streamlit as st

from foldwise.dashboard import data
from foldwise.dashboard.views.common import choose_run, gallery

GALLERY_SIZE = 18


def errors_for_class(
    predictions: list[dict], vocabulary: list[str], thresholds: dict[str, float], label: str
) -> tuple[list[dict], list[dict]]:
    """False positives (most confident first) and false negatives (least confident first) for one class,
    each with its true and its predicted labels on lines of their own."""
    column = vocabulary.index(label)
    false_positives, false_negatives = [], []
    for item in predictions:
        probability = item["probabilities"][column]
        predicted = [
            name for name, p in zip(vocabulary, item["probabilities"], strict=True) if p >= thresholds[name]
        ]
        entry = {
            "image_path": item["image_path"],
            "title": f"{item['key']}: p({label}) = {probability:.2f}",
            "lines": [f"true: {' '.join(item['labels']) or '–'}", f"predicted: {' '.join(predicted) or '–'}"],
            "probability": probability,
        }
        if probability >= thresholds[label] and label not in item["labels"]:
            false_positives.append(entry)
        elif probability < thresholds[label] and label in item["labels"]:
            false_negatives.append(entry)
    false_positives.sort(key=lambda e: -e["probability"])
    false_negatives.sort(key=lambda e: e["probability"])
    return false_positives, false_negatives


def render(url: str) -> None:
    st.title("Predictions")
    runs = data.runs(url)
    if not (runs["status"] == "succeeded").any():
        st.info("No run has succeeded yet: no predictions to show.")
        return
    run_id = choose_run(runs, key="prediction_run", succeeded_only=True, default=data.champion(url))
    run = data.run_record(url, run_id)
    classes = data.class_results(url, run_id)
    if classes.empty:
        st.info(f"Run {run_id} recorded no thresholds: no predictions to show.")
        return
    thresholds = dict(zip(classes["label"], classes["threshold"], strict=True))
    label = st.selectbox("Class", run["vocabulary"], key="prediction_class")
    false_positives, false_negatives = errors_for_class(
        data.run_predictions(url, run_id), run["vocabulary"], thresholds, label
    )
    st.caption(f"Out-of-fold predictions of run {run_id}; threshold of {label}: {thresholds[label]:.3f}")
    st.subheader(f"False positives: {len(false_positives)}")
    st.caption("Predicted, but not a true label: most confident first.")
    gallery(false_positives[:GALLERY_SIZE])
    st.subheader(f"False negatives: {len(false_negatives)}")
    st.caption("A true label, missed: least confident first.")
    gallery(false_negatives[:GALLERY_SIZE])
