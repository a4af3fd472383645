import numpy as np
import pytest
from sqlalchemy import select

from foldwise.config import FoldsConfig, load_config
from foldwise.db.folds import StoredFoldSet, load_fold_set
from foldwise.db.models import FoldLabelCount, FoldSet, Label
from foldwise.db.session import session_scope
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.folds import GATE_SET, build_folds, plan_folds
from foldwise.tasks.ingest import ingest
from tests.conftest import CONFIGS, SETTLED


def random_labels(rng, n, n_labels=12):
    chance = 0.5 / np.arange(1, n_labels + 1) ** 1.2  # skewed: the last labels are rare
    matrix = rng.random((n, n_labels)) < chance
    return [frozenset(f"label{j}" for j in np.flatnonzero(row)) for row in matrix]


def assert_within_one_of_ideal(plan, n_folds):
    counts = plan.counts(n_folds)
    totals = plan.label_matrix[plan.folds != GATE_SET].sum(axis=0)
    for column, total in enumerate(totals):
        if total >= n_folds:
            assert np.abs(counts[:, column] - total / n_folds).max() <= 1 + 1e-9, plan.label_names[column]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rebuild_is_stratified_for_every_label(seed):
    labels = random_labels(np.random.default_rng(seed), 500)
    plan = plan_folds(
        list(range(500)), labels, [False] * 500, FoldsConfig(n_folds=5, seed=seed, strategy="rebuild"), None
    )
    assert set(plan.folds) == {0, 1, 2, 3, 4}
    assert_within_one_of_ideal(plan, 5)


def test_same_seed_same_folds_and_other_seed_other_folds():
    labels = random_labels(np.random.default_rng(0), 200)
    settings = FoldsConfig(n_folds=4, seed=7, strategy="rebuild")
    first = plan_folds(list(range(200)), labels, [False] * 200, settings, None)
    second = plan_folds(list(range(200)), labels, [False] * 200, settings, None)
    other = plan_folds(
        list(range(200)), labels, [False] * 200, FoldsConfig(n_folds=4, seed=8, strategy="rebuild"), None
    )
    assert (first.folds == second.folds).all()
    assert (first.folds != other.folds).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extend_keeps_old_folds_and_stays_stratified(seed):
    rng = np.random.default_rng(seed)
    old_labels = random_labels(rng, 400)
    settings = FoldsConfig(n_folds=5, seed=seed, strategy="extend")
    first = plan_folds(list(range(400)), old_labels, [False] * 400, settings, None)
    assert first.strategy == "rebuild"  # nothing to extend yet
    previous = StoredFoldSet(1, 5, seed, "v1", dict(zip(first.sample_ids, first.folds.tolist(), strict=True)))
    labels = old_labels + random_labels(rng, 150)
    second = plan_folds(list(range(550)), labels, [False] * 550, settings, previous)
    assert second.strategy == "extend" and second.parent_id == 1
    assert (second.folds[:400] == first.folds).all()
    assert_within_one_of_ideal(second, 5)
    assert np.ptp(np.bincount(second.folds)) <= 1


def test_rebuild_moves_most_old_samples():
    """Why `extend` exists: re-splitting grown data with the same seed reshuffles old samples."""
    rng = np.random.default_rng(0)
    old_labels = random_labels(rng, 400)
    settings = FoldsConfig(n_folds=5, seed=0, strategy="rebuild")
    first = plan_folds(list(range(400)), old_labels, [False] * 400, settings, None)
    second = plan_folds(list(range(500)), old_labels + random_labels(rng, 100), [False] * 500, settings, None)
    assert (second.folds[:400] != first.folds).mean() > 0.5


def test_extend_rebuilds_when_fold_count_changes():
    labels = random_labels(np.random.default_rng(0), 100)
    previous = StoredFoldSet(1, 3, 42, "v1", {i: i % 3 for i in range(100)})
    plan = plan_folds(list(range(100)), labels, [False] * 100, FoldsConfig(n_folds=5, seed=42), previous)
    assert plan.strategy == "rebuild"
    assert "n_folds/seed changed from 3/42 to 5/42" in plan.warnings[0]


def test_gate_set_is_never_in_a_fold_and_rare_labels_are_named():
    labels = [frozenset({"common"})] * 30 + [frozenset({"common", "rare"})] * 2
    in_gate_set = [i % 4 == 0 for i in range(32)]
    plan = plan_folds(list(range(32)), labels, in_gate_set, FoldsConfig(n_folds=3, strategy="rebuild"), None)
    assert (plan.folds[np.array(in_gate_set)] == GATE_SET).all()
    assert (plan.folds[~np.array(in_gate_set)] >= 0).all()
    assert any("rare (" in warning for warning in plan.warnings)
    assert not any("common (" in warning for warning in plan.warnings)


def test_fold_sets_are_recorded_and_extended_across_demo_drops(tmp_path, database_url):
    config = load_config(
        CONFIGS / "demo.toml",
        [
            f"source.path={tmp_path / 'source'}",
            f"data_home={tmp_path}",
            f"database_url={database_url}",
            "gate.fraction=0",  # every sample in a fold
            SETTLED,
        ],
    )
    deliver_drop(config.source.path, n_images=120)
    first_pull = ingest(config)
    first_id = build_folds(config, first_pull.dataset_version)
    deliver_drop(config.source.path, n_images=60)
    second_pull = ingest(config)
    second_id = build_folds(config, second_pull.dataset_version)
    with session_scope(database_url) as session:
        first = load_fold_set(session=session, fold_set_id=first_id)
        second = load_fold_set(session=session, fold_set_id=second_id)
        record = session.get_one(FoldSet, second_id)
        assert (record.strategy, record.parent_id, record.n_samples) == ("extend", first_id, 180)
        counts = session.execute(
            select(FoldLabelCount.fold, Label.name, FoldLabelCount.count)
            .join(Label, Label.id == FoldLabelCount.label_id)
            .where(FoldLabelCount.fold_set_id == second_id)
        ).all()
    assert all(second.folds[sample] == fold for sample, fold in first.folds.items())
    assert len(second.folds) == 180
    # The stored counts are the real counts of the assignment.
    assert sum(count for _, _, count in counts) == sum(
        len(labels) for labels in _labels(database_url).values()
    )


def _labels(url):
    from foldwise.db.samples import stored_samples

    with session_scope(url) as session:
        return {s.id: s.labels for s in stored_samples(session=session).values()}
