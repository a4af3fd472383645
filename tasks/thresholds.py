"""Per-class decision thresholds chosen on out-of-fold probabilities to maximise F-beta."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foldwise.config import ThresholdConfig

CURVE_POINTS = np.linspace(0.0, 1.0, 101)  # the F-beta-vs-threshold curve kept for the dashboard
GLOBAL_GRID = np.linspace(0.005, 0.995, 199)


@dataclass(frozen=True)
class ClassThreshold:
    label: str
    threshold: float
    fbeta: float  # F-beta of this class at the threshold, on OOF predictions
    positives: int
    fallback: bool  # too few positives: the global threshold is used
    curve: list[float]  # F-beta at CURVE_POINTS


@dataclass(frozen=True)
class Thresholds:
    global_threshold: float
    classes: list[ClassThreshold]

    def vector(self) -> np.ndarray:
        return np.array([c.threshold for c in self.classes])


def fbeta_from_counts(tp, fp, fn, beta: float):
    b2 = beta**2
    denominator = (1 + b2) * tp + b2 * fn + fp
    return np.where(denominator > 0, (1 + b2) * tp / np.maximum(denominator, 1e-12), 0.0)


def best_class_threshold(probabilities: np.ndarray, truth: np.ndarray, beta: float) -> tuple[float, float]:
    """Exact search: every observed probability is a candidate for 'positive when p >= t'."""
    order = np.argsort(-probabilities, kind="stable")
    sorted_p, sorted_y = probabilities[order], truth[order].astype(bool)
    tp = np.cumsum(sorted_y)
    fp = np.cumsum(~sorted_y)
    # Only the last position of a run of equal probabilities is a real cut.
    last_of_value = np.r_[sorted_p[1:] != sorted_p[:-1], True]
    scores = fbeta_from_counts(tp, fp, tp[-1] - tp, beta)[last_of_value]
    best = int(np.argmax(scores))
    return float(sorted_p[last_of_value][best]), float(scores[best])


def fbeta_curve(probabilities: np.ndarray, truth: np.ndarray, beta: float, points=CURVE_POINTS) -> np.ndarray:
    predicted = probabilities[None, :] >= points[:, None]
    positive = truth.astype(bool)[None, :]
    tp = (predicted & positive).sum(axis=1)
    fp = (predicted & ~positive).sum(axis=1)
    fn = (~predicted & positive).sum(axis=1)
    return fbeta_from_counts(tp, fp, fn, beta)


def samples_fbeta(predicted: np.ndarray, truth: np.ndarray, beta: float) -> float:
    """F-beta averaged over samples (the Planet metric); a sample with nothing true nor predicted scores 0,
    as scikit-learn's fbeta_score(average='samples', zero_division=0) does."""
    truth = truth.astype(bool)
    tp = (predicted & truth).sum(axis=1)
    fp = (predicted & ~truth).sum(axis=1)
    fn = (~predicted & truth).sum(axis=1)
    return float(fbeta_from_counts(tp, fp, fn, beta).mean())


def best_global_threshold(probabilities: np.ndarray, truth: np.ndarray, beta: float) -> float:
    scores = [samples_fbeta(probabilities >= t, truth, beta) for t in GLOBAL_GRID]
    return float(GLOBAL_GRID[int(np.argmax(scores))])


def choose_thresholds(
    probabilities: np.ndarray, truth: np.ndarray, labels: list[str], settings: ThresholdConfig
) -> Thresholds:
    global_threshold = best_global_threshold(probabilities, truth, settings.beta)
    classes = []
    for column, label in enumerate(labels):
        p, y = probabilities[:, column], truth[:, column]
        positives = int(y.sum())
        curve = fbeta_curve(p, y, settings.beta)
        if positives < settings.min_positives:
            predicted = p >= global_threshold
            score = fbeta_from_counts(
                (predicted & (y > 0)).sum(),
                (predicted & (y == 0)).sum(),
                (~predicted & (y > 0)).sum(),
                settings.beta,
            )
            classes.append(
                ClassThreshold(label, global_threshold, float(score), positives, True, curve.tolist())
            )
        else:
            threshold, score = best_class_threshold(p, y, settings.beta)
            classes.append(ClassThreshold(label, threshold, score, positives, False, curve.tolist()))
    return Thresholds(global_threshold, classes)
