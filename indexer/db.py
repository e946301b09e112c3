"""Engines, sessions and migrations of the catalog (SQLite embedded, PostgreSQL shared).

``open_catalog(settings)`` is what commands use: it migrates an embedded SQLite catalog by itself and
refuses a PostgreSQL catalog that is not at the newest revision (``tvr db upgrade`` migrates it).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .errors import CatalogError

if TYPE_CHECKING:
    from alembic.config import Config
from .settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 60_000


def make_engine(url: str, *, writer: bool = False) -> Engine:
    """An engine for ``url``. On SQLite: foreign keys on, WAL journal, a busy timeout, and with
    ``writer=True`` every transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue up
    instead of failing when a read transaction turns into a write."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (pysqlite defers it otherwise)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


# --- migrations ----------------------------------------------------------------------------------------


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` for the packaged migrations (works from an installed package, no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the packaged migrations have no head"
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on ``engine``'s database."""
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def open_catalog(settings: Settings, *, writer: bool = False, auto_upgrade: bool | None = None) -> Engine:
    """The catalog engine, checked to be at the newest schema revision.

    ``auto_upgrade`` defaults to True for the embedded SQLite catalog and False for a server database.
    """
    url = settings.catalog_url
    engine = make_engine(url, writer=writer)
    if auto_upgrade is None:
        auto_upgrade = settings.uses_embedded_catalog
    with _sqlite_migration_lock(url):
        _check_or_upgrade(engine, url, auto_upgrade)
    return engine


@contextmanager
def _sqlite_migration_lock(url: str) -> Iterator[None]:
    """Serialise schema checks and upgrades of one SQLite file between processes (a lock file beside it):
    SQLite answers 'database is locked' at once, without waiting, to a second writer that read first."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        yield
        return
    lock_path = Path(parsed.database).expanduser().with_name(Path(parsed.database).name + ".migrate.lock")
    with FileLock(lock_path):
        yield


def _check_or_upgrade(engine: Engine, url: str, auto_upgrade: bool) -> None:
    try:
        current = current_revision(engine)
        head = head_revision()
        if current != head:
            if not auto_upgrade:
                raise CatalogError(
                    f"the catalog at {redacted(url)} is at schema revision {current or 'none (empty)'}, "
                    f"expected {head}: run `tvr db upgrade`"
                )
            log.info("migrating the catalog at %s from %s to %s", redacted(url), current or "empty", head)
            _upgrade_once_more_if_raced(engine)
    except OperationalError as exc:
        engine.dispose()
        raise CatalogError(f"cannot use the catalog at {redacted(url)}: {exc.orig}") from exc


def _upgrade_once_more_if_raced(engine: Engine) -> None:
    # Two processes migrating an empty SQLite file at once: the loser sees "table already exists".
    try:
        upgrade(engine)
    except SQLAlchemyError:
        if current_revision(engine) != head_revision():
            raise


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def read_snapshot(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose reads all see one snapshot of the database (REPEATABLE READ on PostgreSQL; one
    transaction on SQLite). Use a non-writer engine so SQLite writers are not blocked meanwhile."""
    with factory() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        try:
            yield session
        finally:
            session.rollback()
