import itertools

import numpy as np
import pytest
import torch
from fastai.metrics import accuracy_multi
from sklearn.metrics import average_precision_score, f1_score, fbeta_score, precision_recall_fscore_support

from foldwise import metrics
from foldwise.config import ThresholdConfig
from foldwise.tasks.evaluate import evaluate
from foldwise.tasks.thresholds import CURVE_POINTS, baselines, best_cut, choose_thresholds, fit

METRICS = ["fbeta_samples", "fbeta_macro", "fbeta_micro"]


def random_predictions(seed, n=300, n_classes=6):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, n_classes)) < np.linspace(0.5, 0.05, n_classes)).astype(int)
    probabilities = np.clip(0.35 * truth + rng.random((n, n_classes)) * 0.7, 0, 1).round(3)  # ties too
    return probabilities, truth


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_the_metric_is_scikit_learns(metric, beta):
    rng = np.random.default_rng(0)
    truth, predicted = rng.random((80, 5)) < 0.3, rng.random((80, 5)) < 0.4
    predicted[:5] = False  # samples with nothing predicted, and with nothing true
    truth[5:10] = False
    settings = ThresholdConfig(metric=metric, beta=beta)
    reference = fbeta_score(truth, predicted, beta=beta, average=metrics.AVERAGES[metric], zero_division=0)
    assert metrics.score(predicted, truth, settings) == pytest.approx(reference)


@pytest.mark.parametrize("metric", METRICS)
def test_each_class_cut_is_the_exact_optimum_given_the_others(metric):
    rng = np.random.default_rng(1)
    settings = ThresholdConfig(metric=metric, beta=2.0)
    for _ in range(40):
        truth = rng.random((14, 3)) < 0.4
        probabilities = rng.random((14, 3)).round(1)  # many ties
        others = probabilities >= rng.random(3)
        threshold, best = best_cut(probabilities, truth, others, 1, settings)
        candidates = [*np.unique(probabilities[:, 1]), 1.01]
        brute = max(
            metrics.score(
                np.column_stack([others[:, 0], probabilities[:, 1] >= cut, others[:, 2]]), truth, settings
            )
            for cut in candidates
        )
        decided = others.copy()
        decided[:, 1] = probabilities[:, 1] >= threshold
        assert best == pytest.approx(brute) and metrics.score(decided, truth, settings) == pytest.approx(best)


@pytest.mark.parametrize("metric", METRICS)
def test_coordinate_ascent_reaches_the_brute_force_optimum_on_small_problems(metric):
    """Every combination of per-class cuts, tried: the ascent finds the best one (or very nearly)."""
    rng = np.random.default_rng(2)
    settings = ThresholdConfig(metric=metric, beta=2.0, min_positives=1)
    gaps = []
    for _ in range(25):
        truth = rng.random((10, 3)) < 0.45
        probabilities = np.clip(0.3 * truth + rng.random((10, 3)) * 0.7, 0, 1).round(2)
        _, thresholds = fit(probabilities, truth, settings)
        found = metrics.score(probabilities >= thresholds, truth, settings)
        cuts = [[*np.unique(probabilities[:, column]), 1.01] for column in range(3)]
        optimum = max(
            metrics.score(probabilities >= np.array(combination), truth, settings)
            for combination in itertools.product(*cuts)
        )
        gaps.append(optimum - found)
    assert min(gaps) >= -1e-12 and np.mean(np.array(gaps) < 1e-9) >= 0.9 and max(gaps) < 0.05


def test_the_cross_fitted_estimate_is_not_above_the_in_sample_one_in_expectation():
    differences = []
    for seed in range(20):
        probabilities, truth = random_predictions(seed, n=150)
        folds = np.arange(len(truth)) % 3
        result = choose_thresholds(probabilities, truth, folds, list("abcdef"), ThresholdConfig())
        differences.append(result.in_sample - result.score)
        assert result.score == result.crossfit[result.strategy]
    assert np.mean(differences) > 0  # in-sample is optimistic; the headline figure is not


def test_per_class_thresholds_are_kept_only_when_they_win_cross_fitted():
    rng = np.random.default_rng(4)
    folds = np.arange(600) % 5
    # Classes whose scores live on different scales: one global threshold cannot suit them all.
    truth = rng.random((600, 4)) < 0.3
    scale = np.array([1.0, 0.5, 0.25, 0.1])
    probabilities = np.clip((0.6 * truth + 0.4 * rng.random((600, 4))) * scale, 0, 1)
    differing = choose_thresholds(probabilities, truth, folds, list("abcd"), ThresholdConfig())
    assert (
        differing.strategy == "per-class" and differing.crossfit["per-class"] > differing.crossfit["global"]
    )
    assert differing.vector() == pytest.approx([c.per_class for c in differing.classes])
    # Pure noise: per-class cuts only fit the noise, and one global threshold is kept.
    noise = choose_thresholds(rng.random((600, 4)), truth, folds, list("abcd"), ThresholdConfig())
    if noise.strategy == "global":
        assert np.all(noise.vector() == noise.global_threshold)
    assert noise.score == max(noise.crossfit.values()) and "cross-fitted" in noise.reason


def test_rare_classes_keep_the_global_threshold_and_curves_are_kept():
    probabilities, truth = random_predictions(0)
    truth[:, -1] = 0
    truth[:3, -1] = 1
    result = choose_thresholds(
        probabilities, truth, np.arange(300) % 3, list("abcdef"), ThresholdConfig(beta=2, min_positives=5)
    )
    assert result.classes[-1].fallback and result.classes[-1].per_class == result.global_threshold
    assert not any(c.fallback for c in result.classes[:-1])
    assert len(result.classes[0].curve) == len(CURVE_POINTS)
    at_half = fbeta_score(truth[:, 0], probabilities[:, 0] >= 0.5, beta=2, zero_division=0)
    assert result.classes[0].curve[50] == pytest.approx(at_half)


def test_baselines_are_what_doing_nothing_scores():
    truth = np.zeros((10, 5), dtype=int)
    truth[:, 0] = 1  # one label everywhere, two others once each
    truth[8, 1] = truth[9, 4] = 1
    found = baselines(truth, ThresholdConfig())
    assert found["predict every label"] == pytest.approx(
        fbeta_score(truth, np.ones_like(truth), beta=2, average="samples", zero_division=0)
    )
    only_the_first = np.zeros_like(truth)
    only_the_first[:, 0] = 1  # the best constant guess here: the label every sample has
    assert found["predict by label priors"] == pytest.approx(
        fbeta_score(truth, only_the_first, beta=2, average="samples", zero_division=0)
    )
    assert found["predict by label priors"] > found["predict every label"]


def test_evaluate_on_a_case_worked_by_hand():
    """Four samples, two classes, threshold 0.5; every value below is worked out by hand."""
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    probabilities = np.array([[0.9, 0.2], [0.8, 0.1], [0.3, 0.7], [0.6, 0.4]])
    result = evaluate(probabilities, truth, np.full(2, 0.5), ["a", "b"], beta=2.0)
    a, b = result.classes
    # a: predicted for samples 0, 1, 3 (tp 2, fp 1, fn 0); b: for sample 2 only (tp 1, fp 0, fn 1).
    assert (a.support, a.precision, a.recall, a.f1, a.fbeta) == pytest.approx((2, 2 / 3, 1, 4 / 5, 10 / 11))
    assert (b.support, b.precision, b.recall, b.f1, b.fbeta) == pytest.approx((2, 1, 1 / 2, 2 / 3, 5 / 9))
    # a ranks both positives first (AP 1); b ranks one first and the other last (1 x 1/2 + 1/2 x 1/2).
    assert (a.average_precision, b.average_precision) == pytest.approx((1.0, 0.75))
    overall = result.overall
    assert overall.fbeta_samples == pytest.approx((1 + 5 / 9 + 1 + 0) / 4)  # sample 3: one false positive
    assert overall.f1_macro == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert overall.mean_average_precision == pytest.approx(0.875)
    assert overall.accuracy_multi == pytest.approx(6 / 8)


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_scikit_learn_and_fastai(seed):
    probabilities, truth = random_predictions(seed)
    thresholds = np.linspace(0.3, 0.6, truth.shape[1])
    predicted = (probabilities >= thresholds).astype(int)
    result = evaluate(probabilities, truth, thresholds, list("abcdef"), beta=2.0)
    assert result.overall.fbeta_samples == pytest.approx(
        fbeta_score(truth, predicted, beta=2, average="samples", zero_division=0)
    )
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
    precision, recall, _, _ = precision_recall_fscore_support(truth, predicted, average=None, zero_division=0)
    for c, class_metrics in enumerate(result.classes):
        assert class_metrics.support == truth[:, c].sum()
        assert (class_metrics.precision, class_metrics.recall) == pytest.approx((precision[c], recall[c]))
        assert class_metrics.fbeta == pytest.approx(
            fbeta_score(truth[:, c], predicted[:, c], beta=2, zero_division=0)
        )


def test_one_name_for_the_metric_and_its_cross_fitted_figure():
    assert metrics.metric_name("fbeta_samples", 2.0) == "F2 (samples)" == metrics.name(ThresholdConfig())
    assert metrics.metric_name("fbeta_macro", 1.0) == "F1 (macro)"
    assert metrics.metric_name(None, None) == metrics.metric_name("fbeta_micro", float("nan")) == "score"
    assert metrics.oof_label("F2 (samples)") == "OOF F2 (samples), cross-fitted"
