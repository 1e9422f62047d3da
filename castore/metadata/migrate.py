"""Bring a metadata database to the schema this code expects, with Alembic.

``castore init`` and :meth:`castore.store.Store.open` call :func:`ensure_schema`;
it reads the one-row ``alembic_version`` table and runs the migrations only when
the revision differs from :data:`SCHEMA_REVISION`, so opening an up-to-date store
costs one query and never imports Alembic.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

from ..errors import ReadOnlyStore

__all__ = ["SCHEMA_REVISION", "alembic_config", "alembic_dir", "current_revision", "ensure_schema"]

SCHEMA_REVISION = "0002"
"""The Alembic head revision this code is written for."""


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
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def ensure_schema(engine: Engine, *, read_only: bool = False) -> None:
    """Upgrade the database to :data:`SCHEMA_REVISION` if it is not there yet.

    ``read_only``: never write; a database at another revision raises ReadOnlyStore.
    """
    with engine.connect() as connection:
        revision = current_revision(connection)
        connection.rollback()
    if revision == SCHEMA_REVISION:
        return
    if read_only:
        raise ReadOnlyStore(
            f"the store is read-only and its metadata is at schema revision {revision}, this castore needs {SCHEMA_REVISION}: "
            "open the store once read-write to upgrade it"
        )
    from alembic import command

    with engine.begin() as connection:
        command.upgrade(alembic_config(connection=connection), "head")
