"""Engine and session factory, and schema upgrades through Alembic.

Transactions are real on both backends. On SQLite, Python's driver would start a transaction only
at the first write and commit at every SAVEPOINT release, so a row could be seen half-made; we emit
BEGIN ourselves instead. A write scope takes SQLite's write lock at once (BEGIN IMMEDIATE), so two
writers queue (busy_timeout) rather than fail when one of them read first; a read scope does not
block writers (WAL).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from foldwise.errors import FoldwiseError

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 60_000
# Any fixed number: every Foldwise process that migrates a PostgreSQL database takes this lock first.
MIGRATION_LOCK_KEY = 5_873_201_944
T = TypeVar("T")


class SchemaError(FoldwiseError, RuntimeError):
    """The database schema is not the one this code expects."""


def _sqlite_connect(foreign_keys: bool):
    def on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN/COMMIT by the driver: see above
        cursor = dbapi_connection.cursor()
        # WAL lets the dashboard read while a run writes; SQLite leaves foreign keys off unless asked.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    return on_connect


def _sqlite_begin(connection: Connection) -> None:
    mode = "DEFERRED" if connection.get_execution_options().get("foldwise_read_only") else "IMMEDIATE"
    connection.exec_driver_sql(f"BEGIN {mode}")


def _new_engine(url: str, **options) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **options)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Migrations run with foreign keys off: SQLite rebuilds a table to alter it, and with foreign
    # keys on, dropping the old copy would cascade-delete the rows that point at it.
    migrating = options.get("poolclass") is pool.NullPool
    engine = create_engine(url, **options)
    event.listen(engine, "connect", _sqlite_connect(foreign_keys=not migrating))
    event.listen(engine, "begin", _sqlite_begin)
    return engine


@cache
def get_engine(url: str) -> Engine:
    return _new_engine(url)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back whole when it raises."""
    with Session(get_engine(url), expire_on_commit=False) as session, session.begin():
        yield session


def write_with_retries(
    url: str, write: Callable[[Session], T], attempts: int = 3, delay_seconds: float = 2.0
) -> T:
    """Run `write` in one transaction, again after a passing failure (a lost connection, a lock held
    too long): for records whose loss would throw away hours of training."""
    for attempt in range(1, attempts + 1):
        try:
            with session_scope(url) as session:
                return write(session)
        except OperationalError:
            if attempt == attempts:
                raise
            time.sleep(delay_seconds * 2 ** (attempt - 1))


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A read-only transaction (the dashboard's): it never takes SQLite's write lock."""
    engine = get_engine(url).execution_options(foldwise_read_only=True)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def alembic_config(url: str, connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    # '%' is interpolation syntax in alembic's ini handling: escape it for URLs with encoded passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def _revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def current_revision(url: str) -> str | None:
    with get_engine(url).execution_options(foldwise_read_only=True).connect() as connection:
        return _revision(connection)


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


@contextmanager
def _migration_connection(url: str) -> Iterator[Connection]:
    """A connection in a transaction that only one process at a time can hold for this database."""
    engine = _new_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection, connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            yield connection  # SQLite: BEGIN IMMEDIATE already holds the write lock
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Create or upgrade the schema; concurrent callers wait for each other and the last finds it done."""
    with _migration_connection(url) as connection:
        command.upgrade(alembic_config(url, connection), revision)


def downgrade(url: str, revision: str) -> None:
    with _migration_connection(url) as connection:
        command.downgrade(alembic_config(url, connection), revision)


def ensure_schema(url: str) -> None:
    """Create the schema of a new database; refuse to run on an outdated one (upgrades are explicit).

    Safe when several processes use a new database for the first time at once: the check and the
    creation happen under one lock."""
    head = head_revision()
    revision = current_revision(url)
    if revision == head:
        return
    if revision is None:
        with _migration_connection(url) as connection:
            if _revision(connection) is None:  # nobody created it while we waited for the lock
                command.upgrade(alembic_config(url, connection), "head")
            return
    raise SchemaError(
        f"database {make_url(url).render_as_string(hide_password=True)} is at schema revision {revision}, "
        f"this Foldwise expects {head}: run `foldwise db upgrade --config ...` first"
    )
