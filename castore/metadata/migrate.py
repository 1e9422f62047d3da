"""Bring a metadata database to the schema this code expects, with Alembic.

Migration is an explicit step (``castore init``, ``castore migrate-schema``, and
``castore serve`` once before its workers start): :func:`upgrade_schema` takes a
lock that works across processes and machines for the database at hand (a file lock
beside a SQLite file, ``pg_advisory_xact_lock`` on PostgreSQL), then runs the
missing revisions. Opening a store only calls :func:`check_schema`, which reads the
one-row ``alembic_version`` table and raises :class:`~castore.errors.SchemaOutdated`
when the revision is not :data:`SCHEMA_REVISION`: opening never changes a database.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SchemaOutdated, StoreNotFound

if TYPE_CHECKING:  # SQLAlchemy is imported where it runs: SCHEMA_REVISION alone loads nothing
    from sqlalchemy import Connection, Engine

__all__ = [
    "SCHEMA_REVISION",
    "alembic_config",
    "alembic_dir",
    "check_schema",
    "current_revision",
    "migration_lock",
    "upgrade_schema",
]

SCHEMA_REVISION = "0011"
"""The Alembic head revision this code is written for."""

ADVISORY_LOCK_KEY = 0x6361_7374_6F72_65  # "castore": one bigint, the same in every process
"""The PostgreSQL advisory lock that serialises castore's migrations and store creation."""


def alembic_dir() -> Path:
    """The Alembic script folder: ``alembic/`` beside the package, or packed into the wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "alembic", package / "_alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError(f"castore's alembic folder is missing (looked beside {package})")


def alembic_config(url: str | None = None, connection: Connection | None = None):  # type: ignore[no-untyped-def]
    """An Alembic ``Config`` for castore's migrations on ``url`` or an open ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(alembic_dir()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, or None for an empty database."""
    from sqlalchemy import inspect, text

    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        revision = current_revision(connection)
        connection.rollback()
    return revision


def check_schema(engine: Engine, where: str) -> None:
    """Raise unless the database at ``where`` is at :data:`SCHEMA_REVISION` (one query)."""
    revision = _revision(engine)
    if revision == SCHEMA_REVISION:
        return
    if revision is None:
        raise StoreNotFound(f"no castore store in {where} (run: castore init)")
    raise SchemaOutdated(
        f"the castore metadata in {where} is at schema revision {revision}, this castore needs "
        f"{SCHEMA_REVISION} (run: castore migrate-schema)"
    )


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection]:
    """One transaction holding the database's migration lock from its start to its commit.

    PostgreSQL: ``pg_advisory_xact_lock``, released by the commit. SQLite: ``flock`` on
    ``<database>.lock``, taken before the transaction begins and released after it ends.
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            from sqlalchemy import text

            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
            yield connection
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database:
        raise NotImplementedError(f"castore cannot lock a {engine.dialect.name} database for migration")
    with open(f"{database}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with engine.begin() as connection:
                yield connection
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade_schema(engine: Engine) -> str | None:
    """Upgrade the database to :data:`SCHEMA_REVISION` under the migration lock.

    Returns the revision found before (None for an empty database). Concurrent callers
    wait for each other; the later ones find nothing left to do. After an upgrade, the
    pages a revision freed are given back (:func:`.space.reclaim`): left on SQLite's free
    list, they were taken again one by one by later writes, and a 10 M-path store whose
    dropped index (revision 0011) had left 200 k free pages answered a put in 0.64-1.1 ms
    instead of 0.43 (giving them back took 14 s).
    """
    with migration_lock(engine) as connection:
        before = current_revision(connection)
        upgraded = False
        if before is None and engine.dialect.name == "sqlite" and _is_empty(connection):
            _create_current_schema(connection)
        elif before != SCHEMA_REVISION:
            from alembic import command  # only when there is work: Alembic costs ~0.1 s of start-up

            command.upgrade(alembic_config(connection=connection), "head")
            upgraded = True
    if upgraded:
        from .space import reclaim

        reclaim(engine)
    return before


def _is_empty(connection: Connection) -> bool:
    from sqlalchemy import inspect

    return not inspect(connection).get_table_names()


def _create_current_schema(connection: Connection) -> None:
    """Make a new SQLite database at :data:`SCHEMA_REVISION` straight from the models, stamped
    as Alembic stamps it ("create_all, then stamp head", as Alembic's cookbook does).

    Same schema as running every revision (tests/metadata/test_migrations.py compares the two), in
    a fraction of the time: Alembic and the revisions are not even imported, which is most
    of what ``castore serve --init`` on a new folder costs before its first answer.
    """
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table
    from sqlalchemy.schema import CreateIndex, CreateTable

    from .models import metadata
    from .totals import install

    connection.exec_driver_sql("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table (metadata/space.py)
    for table in metadata.sorted_tables:  # create_all, but each table's indexes by name: a set's order varies
        connection.execute(CreateTable(table))
        for index in sorted(table.indexes, key=lambda index: str(index.name)):
            connection.execute(CreateIndex(index))
    install(connection)
    stamp = Table("alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
                  PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
    stamp.create(connection)
    connection.execute(stamp.insert().values(version_num=SCHEMA_REVISION))
