import multiprocessing

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from foldwise.db.models import Base
from foldwise.db.session import (
    SchemaError,
    current_revision,
    downgrade,
    ensure_schema,
    get_engine,
    head_revision,
    upgrade,
)


def test_upgrade_from_empty_creates_the_whole_schema(database_url):
    assert current_revision(database_url) is None
    upgrade(database_url)
    assert current_revision(database_url) == head_revision()
    tables = set(inspect(get_engine(database_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_migrations_match_the_models(database_url):
    upgrade(database_url)
    with get_engine(database_url).connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_to_empty_and_back(database_url):
    upgrade(database_url)
    downgrade(database_url, "base")
    assert set(inspect(get_engine(database_url)).get_table_names()) <= {"alembic_version"}
    upgrade(database_url)
    assert set(Base.metadata.tables) <= set(inspect(get_engine(database_url)).get_table_names())


def test_upgrade_keeps_the_rows_of_an_older_schema(database_url):
    """0005 rebuilds tables on SQLite: rows pointing at them must survive (no cascade on the rebuild)."""
    upgrade(database_url, "0004")
    with get_engine(database_url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO data_pulls (id, started_at, source, n_rows, n_added, n_updated, n_unchanged,"
                " n_rejected, dataset_version, dataset_size) VALUES (1, '2026-01-01', 's', 2, 1, 0, 0, 2, 'v', 1)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO samples (id, key, image_path, content_hash, file_size, file_mtime_ns,"
                " is_fixed_holdout, first_seen, first_pull_id, updated_pull_id)"
                " VALUES (1, 'a', 'a.png', 'h', 1, 1, false, '2026-01-01', 1, 1)"
            )
        )
        for row_id in (1, 2):
            connection.execute(
                text(
                    "INSERT INTO rejected_rows (id, pull_id, file, line, reason)"
                    " VALUES (:id, 1, 'labels.csv', 3, 'no labels')"
                ),
                {"id": row_id},
            )
    upgrade(database_url)
    with get_engine(database_url).connect() as connection:
        assert connection.execute(text("SELECT key, status, version FROM samples")).all() == [
            ("a", "active", 1)
        ]
        fingerprints = connection.execute(text("SELECT fingerprint FROM rejected_rows ORDER BY id")).scalars()
        assert len(set(fingerprints)) == 2


GATE_SET_ROWS_AT_0010 = (
    "INSERT INTO data_pulls (id, started_at, source, n_rows, n_added, n_updated, n_unchanged, n_rejected,"
    " dataset_version, dataset_size) VALUES (1, '2026-01-01', 's', 1, 1, 0, 0, 0, 'v', 1)",
    "INSERT INTO samples (id, key, image_path, content_hash, file_size, file_mtime_ns, is_fixed_holdout,"
    " first_seen, first_pull_id, updated_pull_id) VALUES (1, 'a', 'a.png', 'h', 1, 1, true, '2026-01-01', 1, 1)",
    "INSERT INTO fold_sets (id, created_at, strategy, n_folds, seed, dataset_version, n_samples, n_holdout,"
    " warnings) VALUES (1, '2026-01-01', 'rebuild', 2, 0, 'v', 0, 1, '[]')",
    "INSERT INTO runs (id, started_at, status, config, seed, package_versions)"
    " VALUES (1, '2026-01-01', 'succeeded', '{}', 0, '{}')",
    "INSERT INTO predictions (run_id, sample_id, split, fold, probabilities) VALUES (1, 1, 'holdout', -1, '[0.5]')",
    "INSERT INTO class_metrics (run_id, split, label, support, precision, recall, f1, fbeta)"
    " VALUES (1, 'holdout', 'cat', 1, 1, 1, 1, 1), (1, 'oof', 'cat', 1, 1, 1, 1, 1)",
    "INSERT INTO run_metrics (run_id, split, n_samples, fbeta_samples, fbeta_samples_global, f1_macro,"
    " accuracy_multi) VALUES (1, 'holdout', 1, 1, 1, 1, 1)",
)
GATE_SET_ROWS_READ_BACK = (
    "SELECT (SELECT {pinned} FROM samples), (SELECT {count} FROM fold_sets),"
    " (SELECT split FROM predictions), (SELECT split FROM run_metrics),"
    " (SELECT COUNT(*) FROM class_metrics WHERE split = '{split}')"
)


def test_the_gate_set_keeps_its_rows_under_its_new_names_and_back(database_url):
    """0011 renames "holdout" to "gate set": rows written before read back under the new names."""
    upgrade(database_url, "0010")
    with get_engine(database_url).begin() as connection:
        for statement in GATE_SET_ROWS_AT_0010:
            connection.execute(text(statement))
    upgrade(database_url, "0011")
    renamed = GATE_SET_ROWS_READ_BACK.format(
        pinned="pinned_to_gate_set", count="n_gate_set", split="gate_set"
    )
    with get_engine(database_url).connect() as connection:
        assert tuple(connection.execute(text(renamed)).one()) == (True, 1, "gate_set", "gate_set", 1)
    downgrade(database_url, "0010")
    restored = GATE_SET_ROWS_READ_BACK.format(pinned="is_fixed_holdout", count="n_holdout", split="holdout")
    with get_engine(database_url).connect() as connection:
        assert tuple(connection.execute(text(restored)).one()) == (True, 1, "holdout", "holdout", 1)


def test_ensure_schema_creates_a_new_database_and_refuses_an_old_one(database_url):
    ensure_schema(database_url)
    assert current_revision(database_url) is not None
    with get_engine(database_url).begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(SchemaError, match="foldwise db upgrade"):
        ensure_schema(database_url)


def _first_use(url: str, start) -> None:
    start.wait()
    ensure_schema(url)


@pytest.mark.parametrize("attempt", range(3))
def test_simultaneous_first_uses_of_a_new_database_all_succeed(database_url, attempt):
    """Three processes meet a brand-new database at once: one creates the schema, none crashes."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    processes = [context.Process(target=_first_use, args=(database_url, start)) for _ in range(3)]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert current_revision(database_url) == head_revision()
