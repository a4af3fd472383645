"""Metrics of an ensemble's predictions (foldwise.metrics computes each)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foldwise import metrics


@dataclass(frozen=True)
class ClassMetrics:
    label: str
    support: int
    precision: float
    recall: float
    f1: float
    fbeta: float
    average_precision: float | None  # undefined without positives


@dataclass(frozen=True)
class OverallMetrics:
    n_samples: int
    fbeta_samples: float  # the Planet metric
    f1_macro: float
    mean_average_precision: float | None
    accuracy_multi: float


@dataclass(frozen=True)
class Evaluation:
    overall: OverallMetrics
    classes: list[ClassMetrics]


def evaluate(
    probabilities: np.ndarray, truth: np.ndarray, thresholds: np.ndarray, labels: list[str], beta: float
) -> Evaluation:
    """Overall and per-class metrics of the probabilities, each class cut at its threshold."""
    truth = truth.astype(int)
    predicted = (probabilities >= thresholds[None, :]).astype(int)
    precision, recall = metrics.class_precision_recall(predicted, truth)
    f1, fbeta = metrics.class_scores(predicted, truth, 1.0), metrics.class_scores(predicted, truth, beta)
    support = truth.sum(axis=0)
    precisions = [metrics.average_precision(truth[:, c], probabilities[:, c]) for c in range(len(labels))]
    defined = [p for p in precisions if p is not None]
    overall = OverallMetrics(
        n_samples=len(truth),
        fbeta_samples=metrics.fbeta(predicted, truth, beta, "samples"),
        f1_macro=metrics.fbeta(predicted, truth, 1.0, "macro"),
        mean_average_precision=float(np.mean(defined)) if defined else None,
        accuracy_multi=float((predicted == truth).mean()),
    )
    classes = [
        ClassMetrics(
            label,
            int(support[c]),
            float(precision[c]),
            float(recall[c]),
            float(f1[c]),
            float(fbeta[c]),
            precisions[c],
        )
        for c, label in enumerate(labels)
    ]
    return Evaluation(overall, classes)
