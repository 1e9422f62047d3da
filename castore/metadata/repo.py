"""The metadata database of one store: :class:`MetadataRepo`, its reads and its transactions.

This module knows tables and rows, not Filetracker rules: the store composes the
primitives of :class:`~castore.metadata.txn.WriteTxn` inside one transaction
(:meth:`MetadataRepo.write`) and decides what they mean (which version wins, when a
blob must be published). Besides the hot reads of a put and a read, it holds the
settings, the access tokens, listings, the scans of ``castore check`` and the deletions
remembered while moving in from Filetracker.

The pieces it is made of: the rows it hands out (:mod:`castore.metadata.rows`), the
prebuilt statements (:mod:`castore.metadata.statements`), SQLite's own driver for the
hot statements (:mod:`castore.metadata.sqlite`) and the write transaction
(:mod:`castore.metadata.txn`).
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, cast

from sqlalchemy import Connection, Row, Select, and_, delete, func, null, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from ..codec import Codec
from ..errors import WouldWait
from ..keys import BlobKey
from ..layout import ACCESS_CLOSED, ACCESS_OPEN, ACCESS_SETTING, access_closed
from . import compaction
from .checkpoint import Checkpointer
from .compaction import Backlog
from .engine import make_engines
from .folders import children
from .migrate import check_schema
from .models import blobs, deletions, paths, settings, tokens, versions
from .report import DedupReport, dedup_report
from .rows import BlobRow, BlobState, Child, DedupCandidate, Entry, TokenRow, Usage
from .space import MetadataSpace, make_incremental, reclaim, space
from .sqlite import (
    SqliteReads,
    WriteTurn,
    busy_timeout_off,
    driver_connection,
    give_writers_room,
    is_busy,
    truncate_log,
    turn_file,
)
from .statements import (
    A_DELTA_OF,
    BLOB_COLUMNS,
    INLINE_LENGTH,
    SELECT_BLOB_STATE,
    SELECT_CURRENT_ENTRY,
    SELECT_CURRENT_VERSION,
    SELECT_DELETION,
    SELECT_VERSION_ENTRY,
    SET_DIGESTS,
    HotStatement,
    acquire_statement,
    blob_row,
    blob_tuple,
    in_the_way_statement,
    remember_deletion_statement,
    set_setting_statement,
    upsert_insert,
)
from .totals import read_totals, recount
from .txn import CONFLICT_SQLSTATES, WriteConflict, WriteTxn, file_blobs

__all__ = ["MetadataRepo"]


class MetadataRepo:
    """The metadata database of one store."""

    LIST_PAGE = 1000
    SCAN_PAGE = 1000
    """Rows per query of the maintenance scans (:meth:`blob_page` and friends); tests make it small."""
    SCAN_DATA_PAGE = 64
    """Rows per page when inline bytes come along (64 × 128 KiB = 8 MiB at most)."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        """Connect to the database at ``url``; raise unless it holds castore's current schema.

        Never changes the database: creating and upgrading are :mod:`castore.opening`'s.
        ``read_only``: never write (see :func:`castore.metadata.engine.make_engines`).
        """
        self.url = url
        self.read_only = read_only
        self._reader, self._writer = make_engines(url, read_only=read_only)
        sqlite_file = self._reader.dialect.name == "sqlite"
        self._fast_reads = SqliteReads(self._reader, read_only=read_only) if sqlite_file else None
        self._checkpointer: Checkpointer | None = None
        self._bulk_writes = False
        """Whether :meth:`prepare_for_bulk_writes` ran."""
        self._write_turn: AbstractContextManager[Any] = (
            WriteTurn(None if read_only else turn_file(self._writer)) if sqlite_file else nullcontext())
        self._shares_commits = sqlite_file
        self._batch = threading.local()  # .connection: this thread's open shared transaction (see batch)
        self._waiting = threading.local()  # .off: this thread's writes must not wait (not_waiting)
        try:
            check_schema(self._writer, self.where)
        except BaseException:
            self.close()
            raise
        self._acquire = acquire_statement(self._writer.dialect.name)

    @property
    def local_reads(self) -> bool:
        """True when a primary-key read is a local file read (SQLite), not a network round trip."""
        return self._fast_reads is not None

    @property
    def where(self) -> str:
        """The database's URL without its password, for messages."""
        return self._writer.url.render_as_string(hide_password=True)

    def checkpoint_in_background(self) -> None:
        """Checkpoint SQLite's write-ahead log in a thread of this process, not inside puts.

        For a server worker (:mod:`castore.metadata.checkpoint`); nothing on other
        databases or read-only stores. Stopped by :meth:`close`.
        """
        if self._checkpointer is None and self._fast_reads is not None and not self.read_only:
            writer = self._writer
            self._checkpointer = Checkpointer(writer, lambda: driver_connection(writer, read_only=False))

    def prepare_for_bulk_writes(self) -> None:
        """Set this process up for large write transactions (an import's batches of links).

        On a SQLite file: writer connections with room for a batch's pages
        (:func:`.sqlite.give_writers_room`) and the log checkpointed in a thread
        (:meth:`checkpoint_in_background`). Once; nothing on other databases or read-only stores.
        """
        if self._fast_reads is None or self.read_only or self._bulk_writes:
            return
        self._bulk_writes = True
        give_writers_room(self._writer)
        self.checkpoint_in_background()

    def make_room(self) -> bool:
        """After a write failed on a full disk: give back the room SQLite's write-ahead log holds
        (:func:`.sqlite.truncate_log`, in this process's write turn); whether the log shrank, so
        that the write may be tried once more. False on other databases and read-only stores."""
        if self._fast_reads is None or self.read_only:
            return False
        turn = self._write_turn
        if getattr(self._waiting, "off", False) and isinstance(turn, WriteTurn):  # never wait (not_waiting)
            if not turn.try_enter():
                return False
            try:
                return truncate_log(self._writer)
            finally:
                turn.__exit__(None, None, None)
        with turn:
            return truncate_log(self._writer)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        if self._fast_reads is not None:
            self._fast_reads.close()
        if isinstance(self._write_turn, WriteTurn):
            self._write_turn.close()
        self._reader.dispose()
        self._writer.dispose()

    @contextmanager
    def write(self) -> Iterator[WriteTxn]:
        """One write transaction: commits when the block ends, rolls back on any error.

        Raises WriteConflict when the database rolled it back because of a concurrent
        writer (PostgreSQL only: SQLite's ``BEGIN IMMEDIATE`` runs writers one at a time).

        On SQLite the threads of one process also take turns on a lock first: a thread
        that finds the database locked by another process's writer sleeps in SQLite's busy
        handler (steps of 1 to 100 ms), while one waiting for a thread of its own process
        wakes as soon as that transaction ends. The turn is waited for no longer than
        SQLite's busy timeout (:class:`~castore.metadata.sqlite.WriteTurn`).
        """
        shared: Connection | None = getattr(self._batch, "connection", None)
        if shared is not None:  # a savepoint of this thread's batch (see batch), on SQLite's own driver
            raw = cast(sqlite3.Connection, shared.connection.driver_connection)
            raw.execute("SAVEPOINT castore_write")
            try:
                yield WriteTxn(shared, self._acquire)
            except BaseException:
                raw.execute("ROLLBACK TO castore_write")
                raw.execute("RELEASE castore_write")
                raise
            raw.execute("RELEASE castore_write")
            return
        if getattr(self._waiting, "off", False) and isinstance(self._write_turn, WriteTurn):
            with self._write_at_once() as txn:
                yield txn
            return
        with self._transaction() as connection:
            yield WriteTxn(connection, self._acquire)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A transaction on the writer, in this process's write turn; a conflict is WriteConflict.

        Commits when the block ends (and tells the checkpointer), rolls back on any error.
        """
        try:
            with self._write_turn, self._writer.begin() as connection:
                yield connection
            if self._checkpointer is not None:
                self._checkpointer.noted()
        except DBAPIError as e:
            if getattr(e.orig, "sqlstate", None) in CONFLICT_SQLSTATES:
                raise WriteConflict(str(e.orig).splitlines()[0]) from e
            raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Share one commit among the write transactions this thread runs inside the block.

        For a batch of small puts (:mod:`castore.batch`): each :meth:`write` inside
        becomes a savepoint of one transaction (an error rolls back that write alone, as
        it would roll back its own transaction), and this thread's reads see the batch's
        uncommitted rows, so a later put of the batch deduplicates against an earlier
        one. Everything is committed when the block ends, or nothing when it raises.
        The database is locked for writing meanwhile: keep the block short.

        SQLite only (writers take turns there anyway); on other databases each write
        commits on its own. A batch inside a batch (same thread) joins it.
        """
        if not self._shares_commits or getattr(self._batch, "connection", None) is not None:
            yield
            return
        with self._transaction() as connection:
            self._batch.connection = connection
            try:
                yield
            finally:
                self._batch.connection = None

    @contextmanager
    def not_waiting(self) -> Iterator[None]:
        """Within the block, this thread's writes raise :class:`~castore.errors.WouldWait` rather than wait.

        For the server's event loop, which must never sleep on a lock: a SQLite write
        goes ahead only when this process's turn is free and SQLite's write lock is
        taken at once (``busy_timeout`` 0 for its ``BEGIN IMMEDIATE``); the transaction
        itself then holds the lock and runs as any other. Other databases write over the
        network: their writes are not made here (the server never asks).
        """
        previous = getattr(self._waiting, "off", False)
        self._waiting.off = True
        try:
            yield
        finally:
            self._waiting.off = previous

    @contextmanager
    def _write_at_once(self) -> Iterator[WriteTxn]:
        """:meth:`write` on SQLite without waiting: WouldWait when the turn or the lock is taken."""
        turn = self._write_turn
        assert isinstance(turn, WriteTurn)
        if not turn.try_enter():
            raise WouldWait("another writer holds the turn (of this process or among processes)")
        try:
            connection = self._writer.connect()
            try:
                raw = connection.connection.driver_connection
                assert raw is not None
                with busy_timeout_off(raw):
                    try:
                        transaction = connection.begin()  # BEGIN IMMEDIATE: the write lock, or SQLITE_BUSY
                    except OperationalError as e:
                        if is_busy(e):
                            raise WouldWait("another process is writing") from None
                        raise
                    with transaction:
                        yield WriteTxn(connection, self._acquire)
            finally:
                connection.close()
        finally:
            turn.__exit__(None, None, None)
        if self._checkpointer is not None:
            self._checkpointer.noted()

    # -- settings ---------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        with self._reader.connect() as c:
            return {row.name: row.value for row in c.execute(select(settings))}

    def init_settings(self, values: dict[str, str]) -> dict[str, str]:
        """Store the settings that are not set yet; return all settings."""
        if values:
            with self._writer.begin() as c:
                insert = upsert_insert(c.dialect.name)(settings)
                c.execute(insert.on_conflict_do_nothing(index_elements=[settings.c.name]),
                          [{"name": k, "value": v} for k, v in values.items()])
        return self.settings()

    def set_setting(self, name: str, value: str | None) -> None:
        """Set one setting, or remove it (None)."""
        with self._writer.begin() as c:
            _set_setting(c, name, value)

    # -- access tokens ------------------------------------------------------------

    def add_token(self, row: TokenRow) -> bool:
        """Store a new token and close the store to requests without one; False (nothing done) when its name is taken."""
        with self._writer.begin() as c:
            new = upsert_insert(c.dialect.name)(tokens).values(
                name=row.name, role=row.role, digest=row.digest, created=row.created)
            # RETURNING, not rowcount: SQLAlchemy gives -1 for this insert on psycopg
            if c.execute(new.on_conflict_do_nothing(index_elements=[tokens.c.name]).returning(tokens.c.name)
                         ).first() is None:
                return False
            _set_setting(c, ACCESS_SETTING, ACCESS_CLOSED)
        return True

    def tokens(self) -> builtins.list[TokenRow]:
        """Every token, by name."""
        with self._reader.connect() as c:
            rows = c.execute(select(tokens).order_by(tokens.c.name)).all()
        return [TokenRow(row.name, row.role, row.digest, int(row.created)) for row in rows]

    def token_access(self) -> tuple[bool, dict[str, str]]:
        """Whether requests need a token (:func:`~castore.layout.access_closed`), and ``digest -> role``
        of every token: what the server checks requests against.

        The tokens are read before the setting: a token made or revoked in between can
        only make the answer stricter (closed with the tokens seen before), never open.
        """
        with self._reader.connect() as c:
            roles = {row.digest: row.role for row in c.execute(select(tokens.c.digest, tokens.c.role))}
            access = c.execute(select(settings.c.value).where(settings.c.name == ACCESS_SETTING)).scalar()
        return access_closed(access, bool(roles)), roles

    def access_closed(self) -> bool:
        """Whether the server wants a token from every request (but ``/health``)."""
        return self.token_access()[0]

    def open_access(self) -> builtins.list[str]:
        """Let requests without a token in; unless tokens exist: then their names, and nothing is changed."""
        with self._writer.begin() as c:
            names: builtins.list[str] = list(c.execute(select(tokens.c.name).order_by(tokens.c.name)).scalars())
            if not names:
                _set_setting(c, ACCESS_SETTING, ACCESS_OPEN)
        return names

    def delete_token(self, name: str) -> bool:
        """Remove the token called ``name`` (the store stays closed); False when there is none."""
        with self._writer.begin() as c:
            return c.execute(delete(tokens).where(tokens.c.name == name)).rowcount == 1

    # -- reads ------------------------------------------------------------------

    def _read_first(self, hot: HotStatement, given: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a hot read, as a tuple (SQLite: on the driver's own connection)."""
        shared: Connection | None = getattr(self._batch, "connection", None)
        if shared is not None:  # inside this thread's batch: see its uncommitted rows
            raw = cast(sqlite3.Connection, shared.connection.driver_connection)
            found: tuple[Any, ...] | None = raw.execute(hot.sql, hot.params(given)).fetchone()
            return found
        if self._fast_reads is not None:
            return self._fast_reads.first(hot, given)
        with self._reader.connect() as c:
            row = c.execute(hot.core, given).first()
        return None if row is None else tuple(row)

    def entry(self, path: str, version: int | None = None) -> Entry | None:
        """The current (or the given) version of ``path`` with its blob, or None."""
        if version is None:
            row = self._read_first(SELECT_CURRENT_ENTRY, {"p": path})
        else:
            row = self._read_first(SELECT_VERSION_ENTRY, {"p": path, "v": version})
        return None if row is None else Entry(row[0], row[1], blob_tuple(row[2:10]))

    def version_blobs(self, names: builtins.list[tuple[str, int]]) -> dict[tuple[str, int], tuple[BlobKey, int]]:
        """``(path, version) -> (blob key, size)`` of those of ``names`` retained: one query for them all
        (an import's batch of links: a :meth:`entry` each was a round trip each on PostgreSQL)."""
        if not names:
            return {}
        # by path only: PostgreSQL plans a list of (path, version) pairs as one index search each
        query = (select(versions.c.path, versions.c.version, blobs.c.key, blobs.c.size)
                 .join(blobs, blobs.c.key == versions.c.blob_key)
                 .where(versions.c.path.in_(sorted({path for path, _ in names}))))
        wanted = set(names)
        with self._reader.connect() as c:
            found = {(row.path, int(row.version)): (BlobKey(row.key), int(row.size)) for row in c.execute(query)}
        return {name: blob for name, blob in found.items() if name in wanted}

    def current_version(self, path: str) -> int | None:
        row = self._read_first(SELECT_CURRENT_VERSION, {"p": path})
        return None if row is None else int(row[0])

    def needed_by_delta(self, key: BlobKey) -> bool:
        """Whether a delta frame decodes against ``key``'s content (gc keeps it, a put shares it)."""
        return self._read_first(A_DELTA_OF, {"k": key}) is not None

    def dedup_candidate(self, key: BlobKey) -> DedupCandidate | None:
        """The row of ``key`` (with inline bytes, refcount and creation time), or None."""
        row = self._read_first(SELECT_BLOB_STATE, {"k": key})
        return None if row is None else DedupCandidate(blob_tuple(row[:8]), row[8], row[9])

    def set_digests(self, key: BlobKey, size: int, digests: bytes) -> bool:
        """Record the chunk digests of a blob that has none yet; False if it had some (or changed)."""
        with self._writer.begin() as c:
            return c.execute(SET_DIGESTS, {"k": key, "s_size": size, "d": digests}).rowcount == 1

    def compact_candidates(
        self, after: tuple[int, str] | None, *, created_before: int, limit: int
    ) -> builtins.list[tuple[BlobRow, int]]:
        """The next blobs for ``castore compact`` (:func:`.compaction.candidates`)."""
        with self._reader.connect() as c:
            return compaction.candidates(c, after, created_before=created_before, limit=limit)

    def delta_reference(self, row: BlobRow, created: int, *, max_size: int) -> BlobRow | None:
        """The content ``castore compact`` may store ``row`` as a delta against (:func:`.compaction.reference`)."""
        with self._reader.connect() as c:
            return compaction.reference(c, row, created, max_size=max_size)

    def kept_references(self) -> int:
        """Unreferenced contents gc keeps because a delta frame decodes against them (counted over the deltas)."""
        reference = blobs.alias("reference")
        query = (select(func.count(func.distinct(blobs.c.base)))
                 .join(reference, reference.c.key == blobs.c.base).where(reference.c.refcount == 0))
        with self._reader.connect() as c:
            return int(c.execute(query).scalar_one())

    def compact_backlog(self, after: tuple[int, str] | None, *, created_before: int) -> Backlog:
        """What ``castore compact`` has still to look at (:func:`.compaction.backlog`)."""
        with self._reader.connect() as c:
            return compaction.backlog(c, after, created_before=created_before)

    def space(self) -> MetadataSpace:
        """What the database takes on disk beyond its contents (:mod:`.space`)."""
        with self._reader.connect() as c:
            return space(c)

    def reclaim_free_pages(self) -> int:
        """Give an incremental SQLite file's free pages back (:func:`.space.reclaim`); the bytes given back."""
        return 0 if self.read_only else reclaim(self._writer)

    def make_incremental(self) -> bool:
        """Make an older SQLite file give free pages back from now on: one VACUUM (:func:`.space.make_incremental`)."""
        return make_incremental(self._writer)

    def blobs_without_digests(self, after: str, limit: int) -> list[BlobRow]:
        """Up to ``limit`` live blobs with no digests and a key after ``after``, in key order."""
        query = (
            select(*BLOB_COLUMNS)
            .where(blobs.c.digests.is_(None), blobs.c.refcount > 0, blobs.c.key > after)
            .order_by(blobs.c.key)
            .limit(limit)
        )
        with self._reader.connect() as c:
            return [blob_row(row) for row in c.execute(query)]

    def history(self, path: str) -> list[Entry]:
        """Every retained version of ``path``, newest first."""
        query = (
            select(versions.c.path, versions.c.version, *BLOB_COLUMNS)
            .join(blobs, blobs.c.key == versions.c.blob_key)
            .where(versions.c.path == path)
            .order_by(versions.c.version.desc())
        )
        with self._reader.connect() as c:
            return [Entry(row.path, row.version, blob_row(row)) for row in c.execute(query)]

    def list(self, low: str, high: str, max_version: int | None = None) -> Iterator[Entry]:
        """Current entries with ``low <= path < high``, in path order, page by page."""
        columns = (paths.c.path, paths.c.version, blobs.c.key, blobs.c.size, blobs.c.stored_size, blobs.c.codec)
        query = select(*columns).join(blobs, blobs.c.key == paths.c.blob_key)
        for row in self._path_pages(query, low, high, max_version):
            yield Entry(row.path, row.version, BlobRow(BlobKey(row.key), row.size, row.stored_size, Codec(row.codec), None))

    def paths(self, low: str, high: str, max_version: int | None = None) -> Iterator[str]:
        """Current paths with ``low <= path < high``, in path order, page by page: :meth:`list`
        without the ``blobs`` rows a join would read per file, which lie anywhere in a large store."""
        return (row.path for row in self._path_pages(select(paths.c.path), low, high, max_version))

    def _path_pages(self, query: Select[Any], low: str, high: str, max_version: int | None) -> Iterator[Row[Any]]:
        """The rows of ``query`` (over ``paths``) with ``low <= path < high``, in path order, a page a query."""
        after = None
        while True:
            conditions = [paths.c.path > after if after is not None else paths.c.path >= low, paths.c.path < high]
            if max_version is not None:
                conditions.append(paths.c.version <= max_version)
            with self._reader.connect() as c:
                rows = c.execute(query.where(*conditions).order_by(paths.c.path).limit(self.LIST_PAGE)).all()
            yield from rows
            if len(rows) < self.LIST_PAGE:
                return
            after = rows[-1].path

    def any_path(self, low: str, high: str) -> bool:
        """True when some current path lies in ``[low, high)``: a put's "a file below it"
        probe (:func:`.in_the_way_statement` with no parent folders), as a hot read."""
        return self._read_first(in_the_way_statement(0), {"lo": low, "hi": high}) is not None

    def children(self, low: str, high: str, *, after: str | None = None, limit: int = 1000) -> builtins.list[Child]:
        """Up to ``limit`` files and subfolders directly below the folder ``low``, by name
        (:func:`.folders.children`: a skip scan, a few dozen lookups above a million files)."""
        with self._reader.connect() as c:
            return children(c, low, high, after=after, limit=limit)

    def paths_naming(self, key: BlobKey, *, limit: int) -> builtins.list[tuple[str, int]]:
        """Up to ``limit`` retained versions ``(path, version)`` naming blob ``key``, in path order."""
        query = (
            select(versions.c.path, versions.c.version)
            .where(versions.c.blob_key == key)
            .order_by(versions.c.path, versions.c.version)
            .limit(limit)
        )
        with self._reader.connect() as c:
            return [(row.path, int(row.version)) for row in c.execute(query)]

    def usage(self) -> Usage:
        """The store's totals as the write transactions keep them (:mod:`castore.metadata.totals`): O(1)."""
        with self._reader.connect() as c:
            return read_totals(c)

    def recount_usage(self) -> Usage:
        """The store's totals counted from every row (what ``castore check`` compares :meth:`usage` with)."""
        with self._reader.connect() as c, c.begin():
            return recount(c)

    def dedup_report(self, low: str, high: str, *, depth: int, top: int) -> DedupReport:
        """Per-group sharing of the paths in ``[low, high)`` (see :mod:`castore.metadata.report`)."""
        with self._reader.connect() as c, c.begin():
            return dedup_report(c, low, high, depth=depth, top=top)

    def refcount(self, key: BlobKey) -> int | None:
        """The stored reference count of ``key`` (None: no row). For checks and tests."""
        with self._reader.connect() as c:
            return c.execute(select(blobs.c.refcount).where(blobs.c.key == key)).scalar()

    def recount(self) -> dict[BlobKey, tuple[int, int]]:
        """``key -> (stored refcount, versions rows naming it)`` for every mismatch (for tests)."""
        return {key: (stored or 0, counted) for key, stored, counted in self.refcount_mismatches()}

    # -- scans for castore check (page by page: memory does not grow with the store) --

    def blob_page(self, after: BlobKey | None, *, with_data: bool, limit: int | None = None) -> builtins.list[BlobState]:
        """Up to ``limit`` (default :attr:`SCAN_PAGE`) referenced blobs with keys after ``after``, in key order.

        ``with_data`` also fetches inline bytes; such pages hold at most
        :attr:`SCAN_DATA_PAGE` rows, so a page never holds more than a few MiB.
        """
        if limit is None:
            limit = min(self.SCAN_PAGE, self.SCAN_DATA_PAGE) if with_data else self.SCAN_PAGE
        row_columns = [c if with_data or c is not blobs.c.data else null().label("data") for c in BLOB_COLUMNS]
        query = (
            select(*row_columns, blobs.c.refcount, INLINE_LENGTH)
            .where(blobs.c.refcount > 0)
            .order_by(blobs.c.key)
            .limit(limit)
        )
        if after is not None:
            query = query.where(blobs.c.key > after)
        with self._reader.connect() as c:
            rows = c.execute(query).all()
        return [
            BlobState(blob_row(row), int(row.refcount), None if row.inline_length < 0 else int(row.inline_length))
            for row in rows
        ]

    def refcount_mismatches(self) -> Iterator[tuple[BlobKey, int | None, int]]:
        """``(key, stored refcount, versions rows naming it)`` wherever the two differ.

        The stored refcount is None when versions name a key that has no blob row at
        all. SQLite groups the ``versions`` table itself (in its temporary storage);
        only mismatches reach Python.
        """
        counted = (
            select(versions.c.blob_key, func.count().label("n")).group_by(versions.c.blob_key).subquery()
        )
        with_row = (
            select(blobs.c.key, blobs.c.refcount, func.coalesce(counted.c.n, 0))
            .outerjoin(counted, counted.c.blob_key == blobs.c.key)
            .where(blobs.c.refcount != func.coalesce(counted.c.n, 0))
        )
        without_row = (
            select(counted.c.blob_key, counted.c.n)
            .outerjoin(blobs, blobs.c.key == counted.c.blob_key)
            .where(blobs.c.key.is_(None))
        )
        with self._reader.connect() as c:
            for row in c.execute(with_row):
                yield BlobKey(str(row[0])), int(row[1]), int(row[2])
            for row in c.execute(without_row):
                yield BlobKey(str(row[0])), None, int(row[1])

    def path_mismatches(self) -> Iterator[tuple[str, str]]:
        """``(path, problem)`` for paths whose row disagrees with their ``versions`` rows.

        Invariant 1 (the current version has a ``versions`` row naming the same blob)
        and ``nversions`` (the number of ``versions`` rows of the path). One pass: both
        tables read in path order (their primary keys) side by side, each path's versions
        counted as they go by; joining a grouped ``versions`` and ``versions`` again by hash
        spilled to disk on PostgreSQL (3.4 s at 1.3 M paths, now 2.2 s; SQLite 6-9 s, now 2.5 s).
        """
        n = func.count(versions.c.path)
        version_key = func.min(versions.c.blob_key).filter(versions.c.version == paths.c.version)
        query = (
            select(paths.c.path, paths.c.version, paths.c.blob_key, paths.c.nversions, n.label("n"),
                   version_key.label("version_key"))
            .outerjoin(versions, versions.c.path == paths.c.path)
            .group_by(paths.c.path)  # its primary key: the other columns of paths follow from it
            .having((paths.c.nversions != n) | version_key.is_(None) | (version_key != paths.c.blob_key))
        )
        with self._reader.connect() as c:
            for row in c.execute(query):
                if row.version_key is None:
                    yield row.path, f"its current version {row.version} has no versions row"
                elif row.version_key != row.blob_key:
                    yield row.path, f"its current version {row.version} names two different blobs"
                if row.nversions != row.n:
                    yield row.path, f"nversions is {row.nversions}, but it has {row.n} versions rows"

    def versions_naming(self, keys: builtins.list[BlobKey]) -> Iterator[tuple[str, int, BlobKey]]:
        """``(path, version, key)`` of every retained version naming one of ``keys``, in path order.

        Found through ``versions``' index on ``blob_key`` (revision 0008), in pages.
        """
        after: tuple[str, int] | None = None
        while True:
            query = (
                select(versions.c.path, versions.c.version, versions.c.blob_key)
                .where(versions.c.blob_key.in_(keys))
                .order_by(versions.c.path, versions.c.version)
                .limit(self.SCAN_PAGE)
            )
            if after is not None:
                query = query.where(
                    (versions.c.path > after[0]) | and_(versions.c.path == after[0], versions.c.version > after[1])
                )
            with self._reader.connect() as c:
                rows = c.execute(query).all()
            for row in rows:
                yield row.path, int(row.version), BlobKey(row.blob_key)
            if len(rows) < self.SCAN_PAGE:
                return
            after = (rows[-1].path, int(rows[-1].version))

    def file_blobs(self, names: builtins.list[BlobKey]) -> set[BlobKey]:
        """Those of the blob backend's ``names`` that a row needs (:func:`.txn.file_blobs`)."""
        with self._reader.connect() as c:
            return file_blobs(c, names)

    # -- deletions remembered while moving in from Filetracker ------------------------

    def remember_deletion(self, path: str, version: int) -> None:
        """Record that ``path`` was deleted at ``version`` (the highest such version is kept)."""
        with self._writer.begin() as c:
            c.execute(remember_deletion_statement(c.dialect.name), {"p": path, "v": version})

    def restore_deletion(self, path: str, version: int | None, written: int) -> None:
        """Put back what :meth:`deletion` said (``version``; None: no row) before a failed
        delete that remembered ``written``, unless another delete has remembered a later
        version since: that deletion stands (its own request answered for it)."""
        with self._writer.begin() as c:
            same = and_(deletions.c.path == path, deletions.c.version == written)  # else: a later delete stands
            c.execute(delete(deletions).where(same) if version is None
                      else update(deletions).where(same).values(version=version))

    def deletion(self, path: str) -> int | None:
        """The version ``path`` was deleted at while moving in, or None."""
        with self._reader.connect() as c:
            return c.execute(SELECT_DELETION, {"p": path}).scalar()

    def forget_deletions(self) -> int:
        """Drop every remembered deletion (``castore migrate finish``: the move is over); how many there were."""
        with self._writer.begin() as c:
            return int(c.execute(delete(deletions)).rowcount)

    def deletions(self, low: str, high: str) -> dict[str, int]:
        """Remembered deletions with ``low <= path < high``."""
        query = select(deletions.c.path, deletions.c.version).where(
            deletions.c.path >= low, deletions.c.path < high
        )
        with self._reader.connect() as c:
            return {row.path: int(row.version) for row in c.execute(query)}


def _set_setting(c: Connection, name: str, value: str | None) -> None:
    """Replace the setting ``name`` by ``value`` (None: remove it) inside the transaction ``c``.

    One upsert: a delete then an insert let two PostgreSQL transactions both delete the old
    row and both insert (two compactors saving their cursor: a unique violation).
    """
    if value is None:
        c.execute(delete(settings).where(settings.c.name == name))
    else:
        c.execute(set_setting_statement(c.dialect.name), {"n": name, "v": value})

