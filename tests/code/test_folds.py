import csv
import shutil

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from foldwise.cli import app
from foldwise.config import FoldsConfig, load_config
from foldwise.db.folds import StoredFoldSet, latest_fold_set, load_fold_set
from foldwise.db.models import FoldLabelCount, FoldSet, Label, Sample
from foldwise.db.samples import stored_samples
from foldwise.db.session import session_scope
from foldwise.tasks.demo import IMAGE_DIR, LABEL_FILE, deliver_drop
from foldwise.tasks.folds import GATE_SET, build_folds, plan_folds
from foldwise.tasks.ingest import ingest
from tests.conftest import CONFIGS, SETTLED, seed_config, seed_source


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
    with session_scope(url) as session:
        return {s.id: s.labels for s in stored_samples(session=session).values()}


def straddling_groups(folds, groups):
    """Groups whose members are not all in one fold (the gate set counts as one)."""
    folds_of = {}
    for fold, group in zip(folds, groups, strict=True):
        folds_of.setdefault(group, set()).add(int(fold))
    return [group for group, found in folds_of.items() if len(found) > 1]


def with_copies(labels, originals):
    """The labels plus one copy of each original at the end, and the groups (first member's index)."""
    groups = list(range(len(labels))) + list(originals)
    return labels + [labels[i] for i in originals], groups


@pytest.mark.parametrize("seed", [0, 1])
def test_rebuild_keeps_duplicate_groups_in_one_fold_or_the_gate_set(seed):
    rng = np.random.default_rng(seed)
    labels, groups = with_copies(random_labels(rng, 300), rng.choice(300, 60, replace=False).tolist())
    n = len(labels)
    # Only the originals are drawn for the gate set: their copies must follow.
    in_gate_set = [i < 300 and i % 5 == 0 for i in range(n)]
    plan = plan_folds(
        list(range(n)),
        labels,
        in_gate_set,
        FoldsConfig(n_folds=5, seed=seed, strategy="rebuild"),
        None,
        groups,
    )
    assert straddling_groups(plan.folds, groups) == []
    copies_of_gate_images = [i for i in range(300, n) if in_gate_set[groups[i]]]
    assert copies_of_gate_images and (plan.folds[copies_of_gate_images] == GATE_SET).all()
    assert np.ptp(np.bincount(plan.folds[plan.folds != GATE_SET])) <= 15  # groups, not samples, stratified


def test_extend_puts_new_copies_with_their_originals():
    rng = np.random.default_rng(3)
    old_labels = random_labels(rng, 300)
    in_gate_set = [i % 6 == 0 for i in range(300)]
    settings = FoldsConfig(n_folds=5, seed=3, strategy="extend")
    first = plan_folds(list(range(300)), old_labels, in_gate_set, settings, None)
    previous = StoredFoldSet(1, 5, 3, "v1", dict(zip(first.sample_ids, first.folds.tolist(), strict=True)))
    labels, groups = with_copies(old_labels + random_labels(rng, 50), list(range(0, 300, 7)))
    n = len(labels)
    second = plan_folds(list(range(n)), labels, in_gate_set + [False] * (n - 300), settings, previous, groups)
    assert (second.folds[:300] == first.folds).all()
    assert straddling_groups(second.folds, groups) == []
    assert (second.folds[350:][[in_gate_set[g] for g in groups[350:]]] == GATE_SET).all()


def test_extend_mends_groups_that_straddled_folds_before():
    labels = random_labels(np.random.default_rng(0), 60)
    groups = list(range(60))
    groups[59] = 0  # sample 59 is a copy of sample 0, but an old fold set split them
    folds = {i: i % 3 for i in range(60)}
    folds[59] = 1
    plan = plan_folds(
        list(range(60)),
        labels,
        [False] * 60,
        FoldsConfig(n_folds=3, seed=1),
        StoredFoldSet(1, 3, 1, "v", folds),
        groups,
    )
    assert plan.folds[0] == plan.folds[59]
    assert "1 duplicate groups straddled folds in fold set 1" in plan.warnings[0]


def copy_images(source, copies):
    """Add exact byte copies of demo images under new ids, in a label file of their own."""
    lines = ["image_name,tags"]
    for new_key, (original, tags) in copies.items():
        shutil.copyfile(source / IMAGE_DIR / f"{original}.png", source / IMAGE_DIR / f"{new_key}.png")
        lines.append(f"{new_key},{tags}")
    (source / "labels_copies.csv").write_text("\n".join(lines) + "\n")


def demo_labels(source):
    with (source / LABEL_FILE.format(1)).open() as handle:
        return {row["image_name"]: row["tags"] for row in csv.DictReader(handle)}


@pytest.mark.parametrize("strategy", ["extend", "rebuild"])
def test_exact_copies_across_drops_never_straddle_folds_or_the_gate_set(tmp_path, database_url, strategy):
    settings = [
        f"source.path={tmp_path / 'source'}",
        f"data_home={tmp_path}",
        f"database_url={database_url}",
        "gate.fraction=0.25",
        "data.near_duplicates=false",  # exact copies only: the counts below are theirs
        f"folds.strategy={strategy}",
        SETTLED,
    ]
    config = load_config(CONFIGS / "demo.toml", settings)
    source = config.source.path
    deliver_drop(source, n_images=80)
    build_folds(config, ingest(config).dataset_version)
    with session_scope(database_url) as session:
        keys = {s.key: s.id for s in stored_samples(session=session).values()}
        first = latest_fold_set(session=session)
    tags = demo_labels(source)
    originals = sorted(tags)[:30]
    # Copies of gate set images and of fold images; the last one with other labels (label noise).
    copies = {f"copy_{key}": (key, tags[key]) for key in originals}
    other_tags = next(t for t in tags.values() if t != tags[originals[-1]])
    copies["copy_" + originals[-1]] = (originals[-1], other_tags)
    copy_images(source, copies)
    deliver_drop(source, n_images=40)
    build_folds(config, ingest(config).dataset_version)
    with session_scope(database_url) as session:
        samples = list(stored_samples(session=session, active_only=True).values())
        second = latest_fold_set(session=session)
        record = session.get_one(FoldSet, second.id)
        gate_members = {s.id for s in session.scalars(select(Sample).where(Sample.in_gate_set.is_(True)))}
    assert {first.folds[keys[key]] for key in originals} > {GATE_SET}  # both gate set and folds copied
    by_hash = {}
    for sample in samples:
        by_hash.setdefault(sample.content_hash, []).append(sample.id)
    assert sum(len(ids) == 2 for ids in by_hash.values()) == len(originals)
    for ids in by_hash.values():
        assert len({second.folds[i] for i in ids}) == 1
        assert len({i in gate_members for i in ids}) == 1
    if strategy == "extend":
        assert all(second.folds[keys[key]] == first.folds[keys[key]] for key in originals)
    assert any(
        "1 duplicate groups have conflicting labels" in w and f"({' '.join(sorted(other_tags.split()))})" in w
        for w in record.warnings
    )
    # `foldwise samples` shows the groups, and names the one with conflicting labels.
    arguments = ["--config", str(CONFIGS / "demo.toml")] + [
        arg for value in settings for arg in ("--set", value)
    ]
    listed = CliRunner().invoke(app, ["samples", *arguments])
    assert listed.exit_code == 0, listed.output
    assert "data set: 30 duplicate groups (60 samples), 1 with conflicting labels" in listed.output
    assert f"duplicates  conflicting labels: {originals[-1]} (" in listed.output
    every_group = CliRunner().invoke(app, ["samples", "--status", "duplicates", *arguments])
    assert every_group.output.count("\nduplicates  ") == 30


def test_the_pull_summary_counts_duplicate_groups_and_conflicting_ones(tmp_path, database_url):
    source = seed_source(tmp_path, "planet")
    # The seed's images are plain colours, one perceptual hash: exact copies only here.
    config = seed_config(
        "planet", tmp_path, database_url, "data.label_files=*.csv", "data.near_duplicates=false"
    )
    first = ingest(config)
    assert (first.n_duplicate_groups, first.n_duplicate_samples, first.n_conflicting_groups) == (0, 0, 0)
    assert "duplicate" not in str(first)
    images = source / "train-jpg"
    shutil.copy(images / "train_0.jpg", images / "copy_a.jpg")  # same labels: a group, no conflict
    shutil.copy(images / "train_0.jpg", images / "copy_b.jpg")
    shutil.copy(images / "train_2.jpg", images / "copy_c.jpg")  # other labels: label noise
    (source / "copies.csv").write_text(
        "image_name,tags\ncopy_a,haze primary\ncopy_b,haze primary\ncopy_c,cloudy\n"
    )
    second = ingest(config)
    assert (second.n_duplicate_groups, second.n_duplicate_samples, second.n_conflicting_groups) == (2, 5, 1)
    assert "2 duplicate groups (5 samples, 1 with conflicting labels)" in str(second)
