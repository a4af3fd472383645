from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from db.models import Base
from db.session import alembic_config, current_revision, ensure_schema, get_engine, upgrade


def test_upgrade_from_empty_creates_the_whole_schema(database_url):
    assert current_revision(database_url) is None
    upgrade(database_url)
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert current_revision(database_url) == head
    tables = set(inspect(get_engine(database_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_migrations_match_the_models(database_url):
    upgrade(database_url)
    with get_engine(database_url).connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_to_empty_and_back(database_url):
    from alembic import command

    upgrade(database_url)
    command.downgrade(alembic_config(database_url), "base")
    assert set(inspect(get_engine(database_url)).get_table_names()) <= {"alembic_version"}
    upgrade(database_url)
    assert set(Base.metadata.tables) <= set(inspect(get_engine(database_url)).get_table_names())


def test_ensure_schema_creates_a_new_database_and_refuses_an_old_one(database_url):
    import pytest

    from db.session import SchemaError

    ensure_schema(database_url)
    assert current_revision(database_url) is not None
    with get_engine(database_url).begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(SchemaError, match="foldwise db upgrade"):
        ensure_schema(database_url)
