"""The metric users are scored on, in one place (`thresholds.metric`, with `thresholds.beta`):

- `fbeta_samples`: F-beta of each sample's label set, averaged over samples (Planet's F2, the default);
- `fbeta_macro`: F-beta of each class, averaged over classes (with beta 1: the protein atlas
  competition's macro F1);
- `fbeta_micro`: F-beta of all (sample, class) decisions pooled.

Every value equals scikit-learn's `fbeta_score(truth, predicted, beta, average=..., zero_division=0)`
(tests check it). It is computed here from counts, because that form lets the thresholds search every
cut of a class at once (tasks/thresholds.py). Training logs use fastai's scikit-learn wrapper of the
same function; thresholds, evaluation, the gate and the report use this module.
"""

from __future__ import annotations

import numpy as np
from fastai.metrics import FBetaMulti

from foldwise.config import ThresholdConfig

AVERAGES = {"fbeta_samples": "samples", "fbeta_macro": "macro", "fbeta_micro": "micro"}


def fbeta_from_counts(tp, fp, fn, beta: float):
    """F-beta from true positives, false positives and false negatives (0 where all are 0)."""
    b2 = beta**2
    denominator = (1 + b2) * np.asarray(tp, dtype=float) + b2 * np.asarray(fn) + np.asarray(fp)
    return np.where(denominator > 0, (1 + b2) * np.asarray(tp) / np.maximum(denominator, 1e-12), 0.0)


def counts(predicted: np.ndarray, truth: np.ndarray, axis: int | None):
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    tp = (predicted & truth).sum(axis=axis)
    fp = (predicted & ~truth).sum(axis=axis)
    fn = (~predicted & truth).sum(axis=axis)
    return tp, fp, fn


def score(predicted: np.ndarray, truth: np.ndarray, settings: ThresholdConfig) -> float:
    """The configured metric of 0/1 predictions (samples x classes) against the truth."""
    if len(truth) == 0:
        return 0.0
    average = AVERAGES[settings.metric]
    if average == "micro":
        return float(fbeta_from_counts(*counts(predicted, truth, None), settings.beta))
    axis = 1 if average == "samples" else 0
    return float(fbeta_from_counts(*counts(predicted, truth, axis), settings.beta).mean())


def class_scores(predicted: np.ndarray, truth: np.ndarray, beta: float) -> np.ndarray:
    """F-beta of each class (scikit-learn's average=None)."""
    return fbeta_from_counts(*counts(predicted, truth, 0), beta)


def name(settings: ThresholdConfig) -> str:
    """How reports and logs call the metric: 'F2 (samples)', 'F1 (macro)'."""
    return f"F{settings.beta:g} ({AVERAGES[settings.metric]})"


def training_metric(settings: ThresholdConfig) -> FBetaMulti:
    """The metric in each epoch's log, at the 0.5 threshold (thresholds are chosen after training)."""
    return FBetaMulti(beta=settings.beta, average=AVERAGES[settings.metric], thresh=0.5)
