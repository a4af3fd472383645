"""Decision thresholds that maximise the metric users are scored on (`thresholds.metric`), chosen on
out-of-fold probabilities, and an honest estimate of what they score.

1. One global threshold: the best of a fine grid for the metric itself.
2. Per-class thresholds: from the global one, coordinate ascent on the metric: each class in turn
   gets the best cut of its own probabilities given the others' (an exact search: every cut between
   two observed probabilities is scored at once from counts), until no class improves. Classes with
   fewer than `thresholds.min_positives` positives keep the global threshold.
3. Which one: both are cross-fitted (fitted on the other folds' out-of-fold predictions, applied to
   each fold) and the per-class thresholds are kept only if they score higher so. The cross-fitted
   score of the choice is the run's headline figure: no threshold is scored on the predictions it
   was fitted to. Per-class thresholds each maximise a class's own F-beta no more: what counts is
   the configured metric (a samples average, say), which a class's best cut need not help.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foldwise.config import ThresholdConfig
from foldwise.metrics import AVERAGES, class_scores, counts, fbeta_from_counts, score

CURVE_POINTS = np.linspace(0.0, 1.0, 101)  # the F-beta-vs-threshold curve kept for the dashboard
GLOBAL_GRID = np.linspace(0.005, 0.995, 199)
MAX_ROUNDS = 5
ABOVE_ALL = 1.0 + 1e-6  # a threshold no probability reaches: the class is never predicted


@dataclass(frozen=True)
class ClassThreshold:
    label: str
    threshold: float  # the one in use (per-class or global, per the choice)
    per_class: float  # this class's per-class candidate
    fbeta: float  # F-beta of this class at the threshold in use, on OOF predictions
    positives: int
    fallback: bool  # too few positives: its per-class candidate is the global threshold
    curve: list[float]  # F-beta at CURVE_POINTS


@dataclass(frozen=True)
class Thresholds:
    global_threshold: float
    strategy: str  # "per-class" or "global"
    reason: str
    crossfit: dict[str, float]  # cross-fitted score of each strategy
    score: float  # cross-fitted score of the strategy in use: the honest estimate
    in_sample: float  # its score on the OOF predictions it was fitted to (optimistic)
    classes: list[ClassThreshold]

    def vector(self) -> np.ndarray:
        return np.array([c.threshold for c in self.classes])


def best_global_threshold(probabilities: np.ndarray, truth: np.ndarray, settings: ThresholdConfig) -> float:
    scores = [score(probabilities >= t, truth, settings) for t in GLOBAL_GRID]
    return float(GLOBAL_GRID[int(np.argmax(scores))])


def best_cut(
    probabilities: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    column: int,
    settings: ThresholdConfig,
) -> tuple[float, float]:
    """The threshold of class `column` that maximises the metric with every other class's decisions
    fixed, and that score. Exact: every cut between two distinct probabilities is scored, from counts."""
    beta, average = settings.beta, AVERAGES[settings.metric]
    order = np.argsort(-probabilities[:, column], kind="stable")
    ranked = probabilities[order, column]
    positive = truth[order, column].astype(bool)
    n = len(ranked)
    others, others_truth = predicted.copy(), truth.astype(bool)
    others[:, column] = others_truth[:, column] = False  # this class's counts come from the cut
    if average == "samples":
        tp, fp, fn = (c[order] for c in counts(others, others_truth, 1))
        off = fbeta_from_counts(tp, fp, fn + positive, beta)
        on = fbeta_from_counts(tp + positive, fp + ~positive, fn, beta)
        scores = (off.sum() + np.concatenate([[0.0], np.cumsum(on - off)])) / n
    else:
        tp_k = np.concatenate([[0], np.cumsum(positive)])  # the class's counts with the top k predicted
        fp_k = np.arange(n + 1) - tp_k
        fn_k = positive.sum() - tp_k
        if average == "micro":
            tp, fp, fn = counts(others, others_truth, None)
            scores = fbeta_from_counts(tp + tp_k, fp + fp_k, fn + fn_k, beta)
        else:  # macro: the other classes' scores do not move
            rest = np.delete(class_scores(predicted, truth, beta), column).sum()
            scores = (rest + fbeta_from_counts(tp_k, fp_k, fn_k, beta)) / truth.shape[1]
    # Only a cut between two distinct probabilities (or above or below all) is a real one.
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = ranked[:-1] != ranked[1:]
    best = int(np.flatnonzero(valid)[np.argmax(scores[valid])])
    if best == 0:
        return ABOVE_ALL, float(scores[0])
    if best == n:
        return 0.0, float(scores[n])
    return float((ranked[best - 1] + ranked[best]) / 2), float(scores[best])


def fit(probabilities: np.ndarray, truth: np.ndarray, settings: ThresholdConfig) -> tuple[float, np.ndarray]:
    """The best global threshold, and per-class thresholds improved from it by coordinate ascent."""
    global_threshold = best_global_threshold(probabilities, truth, settings)
    thresholds = np.full(truth.shape[1], global_threshold)
    eligible = np.flatnonzero(truth.sum(axis=0) >= settings.min_positives)
    current = score(probabilities >= thresholds, truth, settings)
    for _ in range(MAX_ROUNDS):
        improved = False
        for column in eligible:
            cut, cut_score = best_cut(probabilities, truth, probabilities >= thresholds, column, settings)
            if cut_score > current + 1e-12:
                thresholds[column], current, improved = cut, cut_score, True
        if not improved:
            break
    return global_threshold, thresholds


def cross_fitted(
    probabilities: np.ndarray, truth: np.ndarray, folds: np.ndarray, settings: ThresholdConfig
) -> dict[str, float]:
    """Each strategy's score when every fold is decided by thresholds fitted on the other folds."""
    decided = {"global": np.zeros(truth.shape, dtype=bool), "per-class": np.zeros(truth.shape, dtype=bool)}
    for fold in np.unique(folds):
        held = folds == fold
        global_threshold, per_class = fit(probabilities[~held], truth[~held], settings)
        decided["global"][held] = probabilities[held] >= global_threshold
        decided["per-class"][held] = probabilities[held] >= per_class
    return {strategy: score(predicted, truth, settings) for strategy, predicted in decided.items()}


def fbeta_curve(probabilities: np.ndarray, truth: np.ndarray, beta: float, points=CURVE_POINTS) -> np.ndarray:
    predicted = probabilities[None, :] >= points[:, None]
    positive = truth.astype(bool)[None, :]
    return fbeta_from_counts(
        (predicted & positive).sum(axis=1),
        (predicted & ~positive).sum(axis=1),
        (~predicted & positive).sum(axis=1),
        beta,
    )


def choose_thresholds(
    probabilities: np.ndarray,
    truth: np.ndarray,
    folds: np.ndarray,
    labels: list[str],
    settings: ThresholdConfig,
) -> Thresholds:
    """Thresholds fitted on all out-of-fold predictions, per-class or global as cross-fitting says."""
    global_threshold, per_class = fit(probabilities, truth, settings)
    crossfit = cross_fitted(probabilities, truth, folds, settings)
    per_class_wins = crossfit["per-class"] > crossfit["global"]
    strategy = "per-class" if per_class_wins else "global"
    verdict = "kept" if per_class_wins else "not kept: one global threshold"
    reason = (
        f"per-class thresholds scored {crossfit['per-class']:.4f} cross-fitted, one global threshold "
        f"({global_threshold:.3f}) {crossfit['global']:.4f}: per-class {verdict}"
    )
    chosen = per_class if per_class_wins else np.full(len(labels), global_threshold)
    positives = truth.sum(axis=0).astype(int)
    fbetas = class_scores(probabilities >= chosen, truth, settings.beta)
    classes = [
        ClassThreshold(
            label,
            float(chosen[column]),
            float(per_class[column]),
            float(fbetas[column]),
            int(positives[column]),
            bool(positives[column] < settings.min_positives),
            fbeta_curve(probabilities[:, column], truth[:, column], settings.beta).tolist(),
        )
        for column, label in enumerate(labels)
    ]
    return Thresholds(
        global_threshold,
        strategy,
        reason,
        crossfit,
        crossfit[strategy],
        score(probabilities >= chosen, truth, settings),
        classes,
    )


def baselines(truth: np.ndarray, settings: ThresholdConfig) -> dict[str, float]:
    """What doing nothing scores on these samples: every label for every sample; the same labels for
    every sample, the most frequent ones (as many as maximise the metric)."""
    predict_all = score(np.ones_like(truth, dtype=bool), truth, settings)
    priors = np.broadcast_to(truth.mean(axis=0), truth.shape)
    by_prior = max(score(priors >= cut, truth, settings) for cut in np.unique(priors))
    return {"predict every label": predict_all, "predict by label priors": max(by_prior, 0.0)}
