"""The prequential score in real runs: the champion predicts a drop's new labeled images before any model
trains on them; the score is recorded (checked against scikit-learn on the champion's own predictions)
and a drop far below the champion's out-of-fold score alerts (a webhook receiver on loopback)."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness
from sklearn.metrics import fbeta_score, precision_recall_fscore_support
from sqlalchemy import func, select

from foldwise.db import prequential as prequential_store
from foldwise.db import registry
from foldwise.db import samples as sample_store
from foldwise.db.models import FoldResult, PrequentialScore, Run, RunMetric
from foldwise.db.session import ensure_schema, session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks.demo import IMAGE_DIR, deliver_drop
from foldwise.tasks.ensemble import load_model
from foldwise.tasks.ingest import ingest
from foldwise.tasks.predict import predict_images
from foldwise.tasks.prequential import label_shift, score_new_samples
from tests.code.webhook import receiving
from tests.conftest import finished_run, tiny_demo_config

pytestmark = pytest.mark.slow
HOOK_ENV = "FOLDWISE_TEST_PREQUENTIAL_HOOK"
UNKNOWN = "smudge"  # a label the champion never saw
N_RELABELED = 12  # of the second drop's 16 images: they carry UNKNOWN alone, so the champion misses them


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def drop_labels(label_file) -> dict[str, frozenset[str]]:
    """The labels of every row of a drop's label file, by image id."""
    with label_file.open() as handle:
        return {row["image_name"]: frozenset(row["tags"].split()) for row in csv.DictReader(handle)}


def relabel(label_file, n_rows: int) -> dict[str, frozenset[str]]:
    """Give the first `n_rows` rows the label UNKNOWN alone; the labels of every row, by image id."""
    with label_file.open() as handle:
        header, *rows = list(csv.reader(handle))
    rows = [[key, UNKNOWN if index < n_rows else tags] for index, (key, tags) in enumerate(rows)]
    with label_file.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return drop_labels(label_file)


def test_the_champion_scores_a_drop_before_training_on_it_and_a_drop_far_below_alerts(
    prefect_server, tmp_path, database_url, monkeypatch
):
    with receiving() as receiver:
        monkeypatch.setenv(HOOK_ENV, f"json://127.0.0.1:{receiver.port}/hook")
        config = tiny_demo_config(
            tmp_path,
            database_url,
            "gate.fraction=0",
            f'alerts.apprise_urls=["${{env:{HOOK_ENV}}}"]',
            'alerts.on=["prequential-drop"]',
        )
        first_labels = drop_labels(deliver_drop(config.source.path, n_images=40).label_file)
        first = retrain(config)
        with session_scope(database_url) as session:  # no champion before it: nothing to score
            assert session.scalar(select(func.count()).select_from(PrequentialScore)) == 0
        drop = deliver_drop(config.source.path, n_images=16)
        truth_by_key = relabel(drop.label_file, N_RELABELED)
        second = retrain(config)
        assert retrain(config).status == "skipped"  # nothing new: nothing more to score

        with session_scope(database_url) as session:
            [row] = session.scalars(select(PrequentialScore)).all()
            pull_id = session.get_one(Run, second.run_id).pull_id
            first_fold_started = session.scalar(
                select(func.min(FoldResult.started_at)).where(FoldResult.run_id == second.run_id)
            )
            champion_oof = session.get_one(RunMetric, (first.run_id, "oof")).score
            scored = (row.pull_id, row.run_id, row.champion_run_id, row.n_samples, row.metric, row.beta)
            classes = {c["label"]: c for c in row.classes}
            shift, score, created_at = row.label_shift, row.score, row.created_at
        assert second.status == "succeeded"
        assert scored == (pull_id, second.run_id, first.run_id, 16, "fbeta_samples", 2.0)
        if first_fold_started is not None:  # folds record when they trained (revision 0008)
            assert created_at <= first_fold_started

        # The same score from the champion's predictions of the image files, by scikit-learn.
        champion = load_model(config, first.run_id)
        keys = sorted(truth_by_key)
        predictions = predict_images(
            config, [config.source.path / IMAGE_DIR / f"{key}.png" for key in keys], champion
        )
        labels = [*champion.vocab, UNKNOWN]
        truth = np.array([[label in truth_by_key[key] for label in labels] for key in keys], dtype=int)
        predicted = np.zeros_like(truth)
        predicted[:, : len(champion.vocab)] = predictions.probabilities >= champion.thresholds
        assert score == pytest.approx(
            fbeta_score(truth, predicted, beta=2, average="samples", zero_division=0), abs=1e-6
        )
        precision, recall, _, support = precision_recall_fscore_support(
            truth, predicted, average=None, zero_division=0
        )
        assert [classes[label]["support"] for label in labels] == support.tolist()
        assert [classes[label]["precision"] for label in labels] == pytest.approx(precision.tolist())
        assert [classes[label]["recall"] for label in labels] == pytest.approx(recall.tolist())
        assert classes[UNKNOWN]["known"] is False and classes[UNKNOWN]["recall"] == 0
        assert all(classes[label]["known"] for label in champion.vocab)

        # The label shift: shares of the 16 new samples against the 40 of the first drop.
        assert shift[UNKNOWN] == {"new": N_RELABELED / 16, "before": 0.0}
        assert sum(share["new"] for share in shift.values()) * 16 == pytest.approx(truth.sum())
        assert sum(share["before"] for share in shift.values()) * 40 == pytest.approx(
            sum(len(labels) for labels in first_labels.values())
        )

        # 12 of 16 samples carry a label the champion cannot predict: far below its OOF score.
        assert champion_oof - score > config.alerts.prequential_drop
        [alert] = receiver.bodies("/hook")
        assert alert["type"] == "warning" and f"on pull {pull_id}'s new images" in alert["title"]
        assert f"champion run {first.run_id} scored {score:.4f} on the 16 labeled images" in alert["message"]


def test_without_a_model_the_score_is_a_warning_and_nothing_is_recorded(tmp_path, database_url, caplog):
    config = tiny_demo_config(tmp_path, database_url)
    ensure_schema(database_url)
    deliver_drop(config.source.path, n_images=6)
    pull = ingest(config)
    with caplog.at_level(logging.INFO):
        assert score_new_samples(config, 1, pull) == []
    assert f"no prequential score for pull {pull.pull_id}: no champion yet" in caplog.text
    with session_scope(database_url) as session:  # a champion whose files retention removed
        run_id = finished_run(session, "succeeded", pull_id=pull.pull_id)
        registry.add_decision(
            session=session,
            kind=registry.GATE,
            candidate_run_id=run_id,
            champion_before=None,
            champion_after=run_id,
            promoted=True,
            reason="promoted: the first model",
        )
    with caplog.at_level(logging.INFO):  # it trained on its own pull's samples: nothing to score
        assert score_new_samples(config, run_id, pull) == []
    assert f"no pull since champion run {run_id} added a labeled sample that is not scored" in caplog.text
    deliver_drop(config.source.path, n_images=4)
    later = ingest(config)
    with caplog.at_level(logging.WARNING):
        assert score_new_samples(config, run_id, later) == []
    assert f"prequential score of pull {later.pull_id} not recorded: run {run_id} has no model" in caplog.text
    with session_scope(database_url) as session:
        assert session.scalar(select(func.count()).select_from(PrequentialScore)) == 0


def test_samples_pulled_by_ingest_before_a_run_are_scored_by_it_once_and_its_reason_counts_them(
    prefect_server, tmp_path, database_url
):
    config = tiny_demo_config(tmp_path, database_url, "gate.fraction=0")
    deliver_drop(config.source.path, n_images=40)
    first = retrain(config)
    deliver_drop(config.source.path, n_images=10)
    by_ingest = ingest(config)  # `foldwise ingest` between runs: no run, no score yet
    deliver_drop(config.source.path, n_images=6)  # the run's own pull brings these
    second = retrain(config)
    with session_scope(database_url) as session:  # the second run, if its gate promoted it
        champion_before_third = registry.current_champion(session=session)
    deliver_drop(config.source.path, n_images=5)
    by_ingest_later = ingest(config)
    third = retrain(config)

    with session_scope(database_url) as session:
        runs = {run.id: run for run in session.scalars(select(Run))}
        rows = session.scalars(select(PrequentialScore).order_by(PrequentialScore.pull_id)).all()
        scored = [(row.pull_id, row.run_id, row.champion_run_id, row.n_samples) for row in rows]
        # Which champion scored each sample: its pull's row names it. Every sample the first champion
        # did not train on is scored, once.
        scored_samples = [
            sample_id
            for row in rows
            for sample_id in prequential_store.added_sample_ids(session=session, pull_id=row.pull_id)
        ]
        first_pull = prequential_store.added_sample_ids(session=session, pull_id=runs[first.run_id].pull_id)
        every_sample = [sample.id for sample in sample_store.stored_samples(session=session).values()]
    assert (first.status, second.status, third.status) == ("succeeded",) * 3
    run_pull = runs[second.run_id].pull_id
    assert scored == [
        (by_ingest.pull_id, second.run_id, first.run_id, 10),
        (run_pull, second.run_id, first.run_id, 6),
        (
            by_ingest_later.pull_id,
            third.run_id,
            champion_before_third,
            5,
        ),
    ]
    assert sorted(scored_samples) == sorted(set(every_sample) - set(first_pull))
    assert len(scored_samples) == 21
    assert second.reason == f"data changed since run {first.run_id}: 16 added (in 2 pulls)"
    assert third.reason == f"data changed since run {second.run_id}: 5 added (in 2 pulls)"


def test_label_shift_compares_shares_of_the_new_samples_with_the_rest():
    new = [frozenset({"a"}), frozenset({"a", "b"})]
    rest = [frozenset({"b"}), frozenset(), frozenset({"c"}), frozenset({"b", "c"})]
    assert label_shift(new, rest) == {
        "a": {"new": 1.0, "before": 0.0},
        "b": {"new": 0.5, "before": 0.5},
        "c": {"new": 0.0, "before": 0.5},
    }
    assert label_shift([], []) == {}
