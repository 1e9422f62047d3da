"""SQLite's own driver beside SQLAlchemy: the fast path of a store on a SQLite file.

A profile of ``castore serve`` putting 64 KiB files showed Core's per-call layers
costing about three times the work SQLite itself does per statement; so on SQLite the
hot statements (:class:`~castore.metadata.statements.HotStatement`) run on the
driver's own connections: reads on a few autocommit connections (:class:`SqliteReads`),
writes inside the Core transaction (:class:`~castore.metadata.txn.WriteTxn`). The
writers of every process of one store take turns to write (:class:`WriteTurn`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from .engine import BUSY_TIMEOUT_MS, configure_sqlite
from .statements import HotStatement

__all__ = [
    "BULK_WRITE_CACHE_KIB",
    "MAX_IDLE_READS",
    "POINT_READ_CACHE_KIB",
    "TURN_SUFFIX",
    "SqliteReads",
    "WriteTurn",
    "busy_timeout_off",
    "driver_connection",
    "flock_within",
    "give_writers_room",
    "is_busy",
    "set_on_new_connections",
    "truncate_log",
    "turn_file",
]

TURN_SUFFIX = "-turn"
"""The file beside a SQLite database whose ``flock`` is the writers' turn among processes (:class:`WriteTurn`)."""


def turn_file(engine: Engine) -> str | None:
    """The turn file of the SQLite database ``engine`` opens (None: it names no file)."""
    database = engine.url.database
    return f"{os.path.abspath(database)}{TURN_SUFFIX}" if database else None


def driver_connection(engine: Engine, *, read_only: bool) -> sqlite3.Connection:
    """A connection of SQLite's own driver to an engine's database, set up as the engine's are."""
    dialect = engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.url)
    connection: sqlite3.Connection = dialect.loaded_dbapi.connect(*cargs, **{**cparams, "check_same_thread": False})
    configure_sqlite(connection, read_only=read_only)
    return connection


POINT_READ_CACHE_KIB = 16 * 1024
"""SQLite's page cache of each hot-read connection, in KiB (SQLite's default: 2 MiB).

A point read descends three B-trees (``paths``, the ``blobs`` key index, ``blobs``).
At 10 M paths their upper pages no longer fit in 2 MiB beside the leaves a few hundred
reads bring in, and stat and read took 1.6-2x their time at 100 k paths (each page again
a ``pread`` from the OS cache); with 16 MiB, 1.05-1.2x (issue #22, benchmarks/README.md).
The cache fills as pages are read: a connection holds at most this much."""

MAX_IDLE_READS = 4
"""Hot-read connections kept between reads; one given back beyond these is closed, so
a burst of concurrent reads does not leave a page cache per reader behind."""


BULK_WRITE_CACHE_KIB = 32 * 1024
"""SQLite's page cache of a writer connection after :func:`give_writers_room`, in KiB."""


def give_writers_room(writer: Engine) -> None:
    """From now on, ``writer``'s connections cache up to :data:`BULK_WRITE_CACHE_KIB` of pages.

    For large write transactions (:meth:`~castore.metadata.repo.MetadataRepo.prepare_for_bulk_writes`):
    a batch of 1,000 links dirties some 5,000 pages at 10 M paths (index leaves that lie
    anywhere); in SQLite's default 2 MiB they spilled into the log mid-transaction and were
    written again at the commit (issue #22: an import into a 10 M-path store ran at
    3,300-4,500 paths/s, with this and the checkpoints in a thread 5,600-5,800). The writers
    take turns, so a process has one or two such connections.
    """

    set_on_new_connections(writer, f"cache_size = -{BULK_WRITE_CACHE_KIB}")


def set_on_new_connections(engine: Engine, pragma: str) -> None:
    """Run ``PRAGMA <pragma>`` on each connection ``engine`` makes from now on; its idle
    connections are dropped, so that every connection it hands out has the setting."""

    @event.listens_for(engine, "connect")
    def _set(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA {pragma}")

    engine.pool.dispose()  # connections made before this get the setting when made again


class SqliteReads:
    """Autocommit connections of SQLite's own driver for the hot reads, reused LIFO.

    Each SELECT is its own read transaction, so it sees every commit made before it
    (as a Core connection per read does). A connection is taken for one statement and
    given back: as many exist as reads run at once, none is tied to a thread, and at
    most :data:`MAX_IDLE_READS` wait between reads (each with up to
    :data:`POINT_READ_CACHE_KIB` of cached pages).
    """

    def __init__(self, engine: Engine, *, read_only: bool) -> None:
        self._engine = engine
        self._read_only = read_only
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    def _new(self) -> sqlite3.Connection:
        connection = driver_connection(self._engine, read_only=self._read_only)
        connection.execute(f"PRAGMA cache_size = -{POINT_READ_CACHE_KIB}")
        return connection

    def _give_back(self, connection: sqlite3.Connection) -> None:
        """Keep ``connection`` for the next read, or close it when enough are kept already."""
        if len(self._idle) >= MAX_IDLE_READS:  # racy by a connection or two at most: a bound, not a count
            connection.close()
        else:
            self._idle.append(connection)

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
        self._give_back(connection)
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
    """The turn of a store's SQLite writers: the threads of one process, then the processes.

    Threads of one process wait on a lock of the process for at most the busy timeout.
    Without that bound, writers queued behind a thread that waits out the busy timeout
    (a process outside the turns holds the database) would fail one timeout after
    another: the k-th after k timeouts, holding a server thread all along. With it, each
    fails within one timeout of its own turn's wait, with SQLite's own "database is locked" error.

    The thread holding its process's turn then takes the turn among processes: an
    exclusive ``flock`` on ``shared`` (a file beside the database), waited for in the
    kernel, which wakes the next waiter as soon as the holder's transaction ends. Without
    it, a writer finding another process's ``BEGIN IMMEDIATE`` in progress slept in
    SQLite's busy handler in growing steps (1, 2, 5, 10 … 100 ms) while the database was
    often free again after a fraction of a millisecond, holding its own process's turn
    all along, so that every other writer of that process queued behind the sleep:
    measured with ``strace`` on ``castore serve``'s two workers under 4 Filetracker
    clients beside a CPU hog, 837 such sleeps in 800 puts (4.5 s asleep). Only writers
    that already hold their process's turn wait for the file, so one thread per process
    at most; each holds it for one transaction. A process that does not take the turn
    (an older castore, the ``sqlite3`` shell) is still waited for by SQLite's busy timeout,
    which alone decides who writes: the turn only orders writers, it guards nothing.
    ``shared`` None, or a file that cannot be opened (a read-only folder): threads only.
    """

    def __init__(self, shared: str | None = None) -> None:
        self._lock = threading.RLock()
        self._timeout = BUSY_TIMEOUT_MS / 1000
        self._shared = shared
        self._descriptor: int | None = None
        self._owner = 0  # the process that opened _descriptor (a forked child opens its own)
        self._depth = 0  # how many times the holding thread entered (changed only with _lock held)

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=self._timeout):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
        if self._depth == 0:
            try:
                taken = self._take_shared(wait=True)
            except BaseException:
                self._lock.release()
                raise
            if not taken:
                self._lock.release()
                raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
        self._depth += 1

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._give_shared()
        self._lock.release()

    def try_enter(self) -> bool:
        """Take the turn if it is free at once, in this process and among processes; False (nothing taken) otherwise."""
        if not self._lock.acquire(blocking=False):
            return False
        if self._depth == 0 and not self._take_shared(wait=False):
            self._lock.release()
            return False
        self._depth += 1
        return True

    def close(self) -> None:
        """Close the shared file (the turn among processes is given up with it)."""
        with self._lock:
            if self._descriptor is not None and self._owner == os.getpid():
                os.close(self._descriptor)
            self._descriptor, self._shared = None, None

    def _file(self) -> int | None:
        """This process's descriptor of the shared file, opened (and made) on first use; None: threads only."""
        if self._shared is None:
            return None
        if self._descriptor is None or self._owner != os.getpid():
            try:  # flock needs no write access: any user who may write the database may take turns
                self._descriptor = os.open(self._shared, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError:
                self._shared = None
                return None
            self._owner = os.getpid()
        return self._descriptor

    def _take_shared(self, *, wait: bool) -> bool:
        """Take the turn among processes: at once, or (``wait``) within the busy timeout; whether taken."""
        descriptor = self._file()
        if descriptor is None:
            return True
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return wait and flock_within(descriptor, self._timeout)
        return True

    def _give_shared(self) -> None:
        if self._descriptor is not None and self._owner == os.getpid():
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)


def flock_within(descriptor: int, timeout: float) -> bool:
    """Take an exclusive ``flock`` on ``descriptor``, waiting in the kernel at most ``timeout`` seconds.

    ``flock`` has no timeout of its own, and without one a process stopped while holding
    the turn (SIGSTOP, a hung disk) would keep every writer of the other processes
    waiting for ever, where SQLite's busy timeout made them fail after a minute. So a
    helper thread waits in ``flock`` and the caller waits for it at most ``timeout``; a
    lock the helper gets after the caller gave up is given back at once. The turn only
    orders writers (SQLite's own lock guards the database), so the rare overlap of such
    a late helper with the process's next writer costs order, never data.
    """
    taken = threading.Event()
    guard = threading.Lock()
    gave_up = False

    def wait_in_kernel() -> None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:
            return  # the descriptor was closed meanwhile (the store closed)
        with guard:
            if gave_up:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
            else:
                taken.set()

    threading.Thread(target=wait_in_kernel, name="castore-write-turn", daemon=True).start()
    if taken.wait(timeout):
        return True
    with guard:
        gave_up = not taken.is_set()
    return not gave_up


def truncate_log(engine: Engine) -> bool:
    """Copy SQLite's write-ahead log back into the database and truncate it, if nothing is in the way;
    whether the log file shrank.

    For a write that failed on a full disk (:meth:`~castore.metadata.repo.MetadataRepo.make_room`):
    checkpoints of a :class:`~castore.metadata.checkpoint.Checkpointer` never shrink the file, and
    while one falls behind the log grows towards the writers' 64 MiB backstop, most of it pages
    logged again and again; only the database's new pages take room back. Never waits: a reader or
    writer in the way (``busy_timeout`` 0), or a database that cannot grow, leaves the log as it is.
    """
    database = engine.url.database
    if not database:
        return False
    log = f"{os.path.abspath(database)}-wal"
    try:
        before = os.path.getsize(log)
    except OSError:
        return False
    try:
        connection = driver_connection(engine, read_only=False)
        try:
            with busy_timeout_off(connection):
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            connection.close()
    except sqlite3.Error:
        return False
    try:
        return os.path.getsize(log) < before
    except OSError:
        return True  # gone: the last connection closed and removed it


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
