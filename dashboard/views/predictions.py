"""Out-of-fold predictions of a run, worst errors first, for one class."""

from __future__ import annotations

import streamlit as st

from dashboard import data
from dashboard.views.common import choose_run, gallery

GALLERY_SIZE = 18


def errors_for_class(
    predictions: list[dict], vocabulary: list[str], thresholds: dict[str, float], label: str
):
    """False positives (most confident first) and false negatives (least confident first) for one class."""
    column = vocabulary.index(label)
    false_positives, false_negatives = [], []
    for item in predictions:
        probability = item["probabilities"][column]
        predicted = [
            name for name, p in zip(vocabulary, item["probabilities"], strict=True) if p >= thresholds[name]
        ]
        caption = f"{item['key']}: true {' '.join(item['labels']) or '–'} | predicted {' '.join(predicted) or '–'} | p({label})={probability:.2f}"
        entry = {"image_path": item["image_path"], "caption": caption, "probability": probability}
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
    run_id = choose_run(runs, succeeded_only=True)
    run = data.run_record(url, run_id)
    classes = data.class_results(url, run_id)
    thresholds = dict(zip(classes["label"], classes["threshold"], strict=True))
    label = st.selectbox("Class", run["vocabulary"], key="prediction_class")
    false_positives, false_negatives = errors_for_class(
        data.run_predictions(url, run_id), run["vocabulary"], thresholds, label
    )
    st.caption(f"Out-of-fold predictions of run {run_id}; threshold of {label}: {thresholds[label]:.3f}")
    st.subheader(f"False positives: {len(false_positives)}")
    gallery(false_positives[:GALLERY_SIZE])
    st.subheader(f"False negatives: {len(false_negatives)}")
    gallery(false_negatives[:GALLERY_SIZE])
