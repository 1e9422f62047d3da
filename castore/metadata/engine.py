"""SQLAlchemy engines for the metadata database, tuned per dialect.

Two engines share one URL: the *writer* starts every transaction with
``BEGIN IMMEDIATE`` on SQLite, so a write transaction holds the database's single
write lock from its first statement (no read-then-upgrade deadlocks between
processes); the *reader* uses plain ``BEGIN`` and, in WAL mode, never waits for
writers. On other databases both are ordinary engines and writes lock rows with
``SELECT … FOR UPDATE`` (see ``docs/design.md``, "Concurrency").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event

__all__ = ["BUSY_TIMEOUT_MS", "make_engines"]

BUSY_TIMEOUT_MS = 60_000
"""How long a SQLite connection waits for another process's write lock."""


def _sqlite_setup(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not pysqlite, decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


def make_engines(url: str) -> tuple[Engine, Engine]:
    """Return ``(reader, writer)`` engines for a metadata database URL."""
    if url.startswith("sqlite"):
        options: dict[str, Any] = {"pool_size": 8, "max_overflow": 24}
        if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
            raise ValueError("castore needs a file-backed SQLite database, not :memory:")
        reader = create_engine(url, **options)
        writer = create_engine(url, **options)
        _sqlite_setup(reader, "BEGIN")
        _sqlite_setup(writer, "BEGIN IMMEDIATE")
        return reader, writer
    engine = create_engine(url, pool_pre_ping=True)
    return engine, engine
