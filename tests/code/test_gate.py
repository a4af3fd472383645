"""The champion gate's judgement, on hand-made probabilities: overall, per class, vocabulary changes."""

import numpy as np
from sklearn.metrics import fbeta_score

from foldwise.config import GateConfig, ThresholdConfig
from foldwise.tasks.registry import Scored, judge

VOCAB = ["clear", "haze", "road"]
TRUTH = [{"clear"}, {"clear", "road"}, {"haze"}, {"haze", "road"}] * 5  # 20 gate samples
GATE = GateConfig(tolerance=0.0, max_class_drop=0.05, min_support=5)
F2 = ThresholdConfig(metric="fbeta_samples", beta=2.0)


def scored(run_id, probabilities, vocab=VOCAB, thresholds=None):
    thresholds = np.full(len(vocab), 0.5) if thresholds is None else np.array(thresholds)
    return Scored(run_id, vocab, thresholds, np.array(probabilities, dtype=np.float32))


def perfect(vocab=VOCAB, truth=TRUTH):
    return [[0.9 if label in labels else 0.1 for label in vocab] for labels in truth]


def test_a_better_candidate_is_promoted_with_the_numbers():
    champion = perfect()
    for row in champion[:4]:  # the champion misses road on a few samples
        row[2] = 0.1
    verdict = judge(scored(2, perfect()), scored(1, champion), TRUTH, F2, GATE)
    assert verdict.promoted and verdict.reason.startswith(
        "promoted: gate F2 (samples) 1.0000 vs champion run 1"
    )
    truth_road = np.array(["road" in t for t in TRUTH])
    expected_road = fbeta_score(truth_road, np.array(champion)[:, 2] >= 0.5, beta=2)
    assert verdict.details["classes"]["road"] == {"candidate": 1.0, "champion": expected_road, "support": 10}
    assert verdict.details["candidate_fbeta"] == 1.0 > verdict.details["champion_fbeta"]


def test_a_worse_candidate_is_rejected_unless_within_the_tolerance():
    candidate = perfect()
    candidate[0][0] = 0.1  # misses clear on one sample
    verdict = judge(scored(2, candidate), scored(1, perfect()), TRUTH, F2, GATE)
    assert not verdict.promoted and "worse by more than the tolerance 0" in verdict.reason
    lenient = GATE.model_copy(update={"tolerance": 0.1, "max_class_drop": 0.2})
    assert judge(scored(2, candidate), scored(1, perfect()), TRUTH, F2, lenient).promoted


def test_the_per_class_guard_rejects_a_better_average_that_costs_one_class():
    champion = perfect()
    for row in champion:  # the champion never says clear and says road everywhere: weak on average
        row[0], row[2] = 0.1, 0.9
    candidate = perfect()
    candidate[2][1] = candidate[3][1] = 0.1  # but it is perfect on haze, where the candidate misses 2 of 10
    verdict = judge(scored(2, candidate), scored(1, champion), TRUTH, F2, GATE)
    assert verdict.details["candidate_fbeta"] > verdict.details["champion_fbeta"]
    assert (
        verdict.details["classes"]["haze"]["champion"] - verdict.details["classes"]["haze"]["candidate"]
        > 0.05
    )
    assert (
        not verdict.promoted
        and "classes lose more than 0.05: haze 1.000 -> 0.833 (10 positives)" in verdict.reason
    )
    assert verdict.details["regressions"] == ["haze"]
    few = GATE.model_copy(update={"min_support": 11})  # haze has 10 gate positives: too few to guard
    assert judge(scored(2, candidate), scored(1, champion), TRUTH, F2, few).promoted


def test_a_changed_vocabulary_is_compared_on_shared_labels_and_reported():
    new_vocab = ["clear", "haze", "fog"]  # road dropped, fog new
    truth = [labels | ({"fog"} if i % 3 == 0 else set()) for i, labels in enumerate(TRUTH)]
    candidate = scored(2, perfect(new_vocab, truth), new_vocab)
    champion = scored(1, perfect(VOCAB, truth))
    verdict = judge(candidate, champion, truth, F2, GATE)
    assert verdict.promoted
    assert verdict.details["shared_labels"] == ["clear", "haze"]
    assert verdict.details["only_candidate"] == ["fog"] and verdict.details["only_champion"] == ["road"]
    assert "only in candidate: ['fog']; only in champion: ['road']" in verdict.reason
    assert set(verdict.details["classes"]) == {"clear", "haze"}
