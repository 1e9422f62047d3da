"""SQLAlchemy engines for the metadata database, tuned per dialect.

Two engines share one URL: the *writer* starts every transaction with
``BEGIN IMMEDIATE`` on SQLite, so a write transaction holds the database's single
write lock from its first statement (no read-then-upgrade deadlocks between
processes); the *reader* uses plain ``BEGIN`` and, in WAL mode, never waits for
writers. On other databases both are ordinary engines and writes lock rows with
``SELECT … FOR UPDATE`` (see ``docs/design.md``, "Concurrency").
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

__all__ = ["BUSY_TIMEOUT_MS", "configure_sqlite", "make_engines"]

BUSY_TIMEOUT_MS = 60_000
"""How long a SQLite connection waits for another process's write lock."""


def configure_sqlite(dbapi_connection: Any, *, read_only: bool = False) -> None:
    """Settings every SQLite connection of a store gets (the engines' and :mod:`.sqlite`'s own)."""
    # Let SQLAlchemy's "begin" event, not pysqlite, decide how a transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not read_only:
        cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_setup(engine: Engine, begin: str, *, read_only: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        configure_sqlite(dbapi_connection, read_only=read_only)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


def _read_only_sqlite_url(url: str) -> str:
    """The URL opening a SQLite file read-only.

    ``mode=ro`` sees other processes' commits; it needs the write-ahead log's
    shared-memory file, which SQLite cannot create on a read-only filesystem. There,
    with no ``-shm`` file (no writer has the database open), ``immutable=1`` reads the
    file as it is.
    """
    database = make_url(url).database
    if not database:
        raise ValueError(f"not a SQLite file URL: {url!r}")
    path = os.path.abspath(database)
    folder = os.path.dirname(path)
    read_only_media = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    mode = "immutable=1" if read_only_media and not os.path.exists(path + "-shm") else "mode=ro"
    return f"sqlite:///file:{path}?{mode}&uri=true"


def make_engines(url: str, *, read_only: bool = False) -> tuple[Engine, Engine]:
    """Return ``(reader, writer)`` engines for a metadata database URL.

    ``read_only``: open SQLite read-only (any write fails); other databases as usual.
    """
    if url.startswith("sqlite"):
        options: dict[str, Any] = {"pool_size": 8, "max_overflow": 24}
        if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
            raise ValueError("castore needs a file-backed SQLite database, not :memory:")
        if read_only:
            engine = create_engine(_read_only_sqlite_url(url), **options)
            _sqlite_setup(engine, "BEGIN", read_only=True)
            return engine, engine
        reader = create_engine(url, **options)
        writer = create_engine(url, **options)
        _sqlite_setup(reader, "BEGIN")
        _sqlite_setup(writer, "BEGIN IMMEDIATE")
        return reader, writer
    # READ COMMITTED (PostgreSQL's default): every statement sees the latest commits, and
    # the write path locks the rows it decides on (SELECT … FOR UPDATE, upserts).
    engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=24)
    return engine, engine
