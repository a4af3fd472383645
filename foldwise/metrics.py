"""The metric users are scored on, and every other score Foldwise shows, in one place
(`thresholds.metric`, with `thresholds.beta`):

- `fbeta_samples`: F-beta of each sample's label set, averaged over samples (Planet's F2, the default);
- `fbeta_macro`: F-beta of each class, averaged over classes (with beta 1: the protein atlas
  competition's macro F1);
- `fbeta_micro`: F-beta of all (sample, class) decisions pooled.

Every F-beta, precision and recall here equals scikit-learn's (`fbeta_score`,
`precision_recall_fscore_support` with `zero_division=0`; tests check it). They are computed from
counts, because that form lets the thresholds search every cut of a class at once
(tasks/thresholds.py), and an undefined score is 0 without a warning. Thresholds, evaluation, the
gate, the report, the CLI and the dashboard use this module; training logs use fastai's wrapper of
scikit-learn's function (tasks/train.py).
"""

from __future__ import annotations

import math

import numpy as np

from foldwise.config import ThresholdConfig

AVERAGES = {"fbeta_samples": "samples", "fbeta_macro": "macro", "fbeta_micro": "micro"}


def ratio(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1e-12), 0.0)


def fbeta_from_counts(tp, fp, fn, beta: float):
    """F-beta from true positives, false positives and false negatives (0 where all are 0)."""
    b2 = beta**2
    tp = np.asarray(tp, dtype=float)
    return ratio((1 + b2) * tp, (1 + b2) * tp + b2 * np.asarray(fn) + np.asarray(fp))


def counts(predicted: np.ndarray, truth: np.ndarray, axis: int | None):
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    tp = (predicted & truth).sum(axis=axis)
    fp = (predicted & ~truth).sum(axis=axis)
    fn = (~predicted & truth).sum(axis=axis)
    return tp, fp, fn


def fbeta(predicted: np.ndarray, truth: np.ndarray, beta: float, average: str) -> float:
    """F-beta of 0/1 predictions (samples x classes), averaged over 'samples', 'macro' or 'micro'."""
    if len(truth) == 0:
        return 0.0
    if average == "micro":
        return float(fbeta_from_counts(*counts(predicted, truth, None), beta))
    axis = 1 if average == "samples" else 0
    return float(fbeta_from_counts(*counts(predicted, truth, axis), beta).mean())


def score(predicted: np.ndarray, truth: np.ndarray, settings: ThresholdConfig) -> float:
    """The configured metric of 0/1 predictions (samples x classes) against the truth."""
    return fbeta(predicted, truth, settings.beta, AVERAGES[settings.metric])


def class_scores(predicted: np.ndarray, truth: np.ndarray, beta: float) -> np.ndarray:
    """F-beta of each class (scikit-learn's average=None)."""
    return fbeta_from_counts(*counts(predicted, truth, 0), beta)


def class_precision_recall(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of each class."""
    tp, fp, fn = counts(predicted, truth, 0)
    return ratio(tp, tp + fp), ratio(tp, tp + fn)


def average_precision(truth: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Average precision of one class's probabilities; None without positives (undefined)."""
    from sklearn.metrics import average_precision_score  # here: naming a metric needs no scikit-learn

    return float(average_precision_score(truth, probabilities)) if truth.any() else None


def precision_recall_curve(truth: np.ndarray, probabilities: np.ndarray):
    """One class's precision, recall and thresholds along its curve (scikit-learn's)."""
    from sklearn.metrics import precision_recall_curve as curve

    return curve(truth, probabilities)


def metric_name(metric: str | None, beta: float | None) -> str:
    """How the CLI, reports, logs and the dashboard call a metric: 'F2 (samples)', 'F1 (macro)'; 'score'
    for a run that recorded none."""
    if not isinstance(metric, str) or beta is None or math.isnan(beta):
        return "score"
    return f"F{beta:g} ({AVERAGES[metric]})"


def name(settings: ThresholdConfig) -> str:
    """The configured metric's name."""
    return metric_name(settings.metric, settings.beta)


def oof_label(metric_label: str) -> str:
    """How an out-of-fold score is labelled wherever it is shown: the configured metric, cross-fitted."""
    return f"OOF {metric_label}, cross-fitted"
