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
        assert connection.execute(text("SELECT key, status, version FROM samples")).all() == [("a", "active", 1)]
        fingerprints = connection.execute(text("SELECT fingerprint FROM rejected_rows ORDER BY id")).scalars()
        assert len(set(fingerprints)) == 2


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
