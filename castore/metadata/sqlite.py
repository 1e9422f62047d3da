"""SQLite's own driver beside SQLAlchemy: the fast path of a store on a SQLite file.

A profile of ``castore serve`` putting 64 KiB files showed Core's per-call layers
costing about three times the work SQLite itself does per statement; so on SQLite the
hot statements (:class:`~castore.metadata.statements.HotStatement`) run on the
driver's own connections: reads on a few autocommit connections (:class:`SqliteReads`),
writes inside the Core transaction (:class:`~castore.metadata.txn.WriteTxn`). The
threads of one process take turns to write (:class:`WriteTurn`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from .engine import BUSY_TIMEOUT_MS, configure_sqlite
from .statements import HotStatement

__all__ = ["SqliteReads", "WriteTurn", "busy_timeout_off", "driver_connection", "is_busy"]


def driver_connection(engine: Engine, *, read_only: bool) -> sqlite3.Connection:
    """A connection of SQLite's own driver to an engine's database, set up as the engine's are."""
    dialect = engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.url)
    connection: sqlite3.Connection = dialect.loaded_dbapi.connect(*cargs, **{**cparams, "check_same_thread": False})
    configure_sqlite(connection, read_only=read_only)
    return connection


class SqliteReads:
    """Autocommit connections of SQLite's own driver for the hot reads, reused LIFO.

    Each SELECT is its own read transaction, so it sees every commit made before it
    (as a Core connection per read does). A connection is taken for one statement and
    given back: as many exist as reads ever ran at once (a few), none is tied to a thread.
    """

    def __init__(self, engine: Engine, *, read_only: bool) -> None:
        self._engine = engine
        self._read_only = read_only
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    def _new(self) -> sqlite3.Connection:
        return driver_connection(self._engine, read_only=self._read_only)

    def first(self, hot: HotStatement, given: dict[str, Any]) -> tuple[Any, ...] | None:
        try:
            connection = self._idle.pop()  # list.pop and append are atomic: no lock needed
        except IndexError:
            connection = self._new()
        try:
            row: tuple[Any, ...] | None = connection.execute(hot.sql, hot.params(given)).fetchone()
        except BaseException:
            connection.close()  # in an unknown state: not reused
            raise
        self._idle.append(connection)
        if self._closed:
            self.close()  # closed meanwhile: the connection just given back must not outlive it
        return row

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:  # another thread emptied it first
                return
            connection.close()


class WriteTurn:
    """The process-local turn of SQLite writers, waited for at most the busy timeout.

    Without the bound, writers queued behind a thread that waits out the busy timeout
    (another process holds the database) would fail one timeout after another: the k-th
    after k timeouts, holding a server thread all along. With it, each fails within one
    timeout of its own turn's wait, with SQLite's own "database is locked" error.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._timeout = BUSY_TIMEOUT_MS / 1000

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=self._timeout):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def try_enter(self) -> bool:
        """Take the turn if it is free at once; False (nothing taken) otherwise."""
        return self._lock.acquire(blocking=False)


def is_busy(error: OperationalError) -> bool:
    """Whether SQLite refused a statement because another connection holds the write lock."""
    code = getattr(error.orig, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in str(error.orig)


@contextmanager
def busy_timeout_off(connection: sqlite3.Connection) -> Iterator[None]:
    """No busy timeout on ``connection`` inside the block (a lock held elsewhere is SQLITE_BUSY at once).

    The usual :data:`~castore.metadata.engine.BUSY_TIMEOUT_MS` is set again when the block ends.
    """
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        yield
    finally:
        with suppress(sqlite3.Error):  # a broken connection is not reused anyway
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
