import numpy as np
import pytest
import torch
from fastai.metrics import accuracy_multi
from sklearn.metrics import average_precision_score, f1_score, fbeta_score

from foldwise.config import ThresholdConfig
from tasks.evaluate import evaluate
from tasks.thresholds import CURVE_POINTS, best_class_threshold, choose_thresholds, samples_fbeta


def random_predictions(seed, n=300, n_classes=6):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, n_classes)) < np.linspace(0.5, 0.05, n_classes)).astype(int)
    probabilities = np.clip(0.35 * truth + rng.random((n, n_classes)) * 0.7, 0, 1).round(3)  # ties too
    return probabilities, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_class_threshold_is_the_exact_optimum(seed, beta):
    probabilities, truth = random_predictions(seed)
    for c in range(truth.shape[1]):
        threshold, score = best_class_threshold(probabilities[:, c], truth[:, c], beta)
        reference = fbeta_score(truth[:, c], probabilities[:, c] >= threshold, beta=beta, zero_division=0)
        assert score == pytest.approx(reference)
        brute = max(
            fbeta_score(truth[:, c], probabilities[:, c] >= t, beta=beta, zero_division=0)
            for t in np.unique(probabilities[:, c])
        )
        assert score == pytest.approx(brute)


def test_rare_classes_fall_back_to_the_global_threshold():
    probabilities, truth = random_predictions(0)
    truth[:, -1] = 0
    truth[:3, -1] = 1
    result = choose_thresholds(probabilities, truth, list("abcdef"), ThresholdConfig(beta=2, min_positives=5))
    assert result.classes[-1].fallback and result.classes[-1].threshold == result.global_threshold
    assert not any(c.fallback for c in result.classes[:-1])
    assert len(result.classes[0].curve) == len(CURVE_POINTS)
    # The curve is F-beta of the class at each grid threshold.
    at_half = fbeta_score(truth[:, 0], probabilities[:, 0] >= 0.5, beta=2, zero_division=0)
    assert result.classes[0].curve[50] == pytest.approx(at_half)


def test_per_class_thresholds_beat_or_match_the_global_one_on_oof():
    probabilities, truth = random_predictions(3)
    result = choose_thresholds(probabilities, truth, list("abcdef"), ThresholdConfig())
    per_class = evaluate(probabilities, truth, result.vector(), list("abcdef"), 2.0)
    for c in result.classes:
        single = fbeta_score(
            truth[:, "abcdef".index(c.label)],
            probabilities[:, "abcdef".index(c.label)] >= result.global_threshold,
            beta=2,
        )
        assert c.fbeta >= single - 1e-12
    assert per_class.overall.fbeta_samples > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_scikit_learn_and_fastai(seed):
    probabilities, truth = random_predictions(seed)
    thresholds = np.linspace(0.3, 0.6, truth.shape[1])
    predicted = (probabilities >= thresholds).astype(int)
    result = evaluate(probabilities, truth, thresholds, list("abcdef"), beta=2.0)
    assert result.overall.fbeta_samples == pytest.approx(
        fbeta_score(truth, predicted, beta=2, average="samples", zero_division=0)
    )
    assert result.overall.fbeta_samples == pytest.approx(samples_fbeta(predicted.astype(bool), truth, 2.0))
    assert result.overall.f1_macro == pytest.approx(
        f1_score(truth, predicted, average="macro", zero_division=0)
    )
    assert result.overall.mean_average_precision == pytest.approx(
        np.mean([average_precision_score(truth[:, c], probabilities[:, c]) for c in range(truth.shape[1])])
    )
    # fastai's accuracy_multi at one threshold agrees with ours at the same threshold everywhere.
    same = evaluate(probabilities, truth, np.full(truth.shape[1], 0.5), list("abcdef"), beta=2.0)
    fastai_value = accuracy_multi(torch.tensor(probabilities), torch.tensor(truth), thresh=0.5, sigmoid=False)
    assert same.overall.accuracy_multi == pytest.approx(float(fastai_value))
    for c, metrics in enumerate(result.classes):
        assert metrics.support == truth[:, c].sum()
        assert metrics.fbeta == pytest.approx(
            fbeta_score(truth[:, c], predicted[:, c], beta=2, zero_division=0)
        )
