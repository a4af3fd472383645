"""Metrics of an ensemble's predictions, from scikit-learn."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score, f1_score, fbeta_score, precision_recall_fscore_support


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
    truth = truth.astype(int)
    predicted = (probabilities >= thresholds[None, :]).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, predicted, average=None, zero_division=0
        )
        fbeta = fbeta_score(truth, predicted, beta=beta, average=None, zero_division=0)
        precisions = [
            float(average_precision_score(truth[:, c], probabilities[:, c])) if truth[:, c].any() else None
            for c in range(len(labels))
        ]
        overall = OverallMetrics(
            n_samples=len(truth),
            fbeta_samples=float(fbeta_score(truth, predicted, beta=beta, average="samples", zero_division=0)),
            f1_macro=float(f1_score(truth, predicted, average="macro", zero_division=0)),
            mean_average_precision=float(np.mean([p for p in precisions if p is not None]))
            if any(p is not None for p in precisions)
            else None,
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
