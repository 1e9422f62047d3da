"""Reads and writes of the metadata tables, as small SQLAlchemy Core statements.

This module knows tables and rows, not Filetracker rules: the store composes the
primitives of :class:`WriteTxn` inside one transaction and decides what they mean
(which version wins, when a blob must be published). Statements are built once at
import; SQLAlchemy caches their compiled form, which keeps a put at a handful of
cheap executions (see ``benchmarks/core.py``).

On SQLite the statements of a put and of a read (:class:`_Hot`) skip Core's per-call
layers: SQLAlchemy compiles them once, and they run on the driver's own connection
(inside the Core transaction for writes; on a few autocommit connections for reads,
:class:`_SqliteReads`). A profile of ``castore serve`` putting 64 KiB files showed those
layers costing about three times the work SQLite itself does per statement.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

from sqlalchemy import Connection, Engine, and_, bindparam, case, delete, func, null, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError, OperationalError

from ..codec import Codec
from ..errors import WouldWait
from ..keys import BlobKey
from .checkpoint import Checkpointer
from .engine import BUSY_TIMEOUT_MS, configure_sqlite, make_engines
from .migrate import check_schema
from .models import blobs, deletions, paths, settings, tokens, versions
from .report import DedupReport, dedup_report

__all__ = [
    "Acquired",
    "BlobRow",
    "BlobState",
    "Child",
    "Counts",
    "Current",
    "DedupCandidate",
    "Entry",
    "MetadataRepo",
    "Reservation",
    "TokenRow",
    "Usage",
    "WouldWait",
    "WriteConflict",
    "WriteTxn",
]


CONFLICT_SQLSTATES = frozenset({"23505", "40001", "40P01"})
"""unique_violation (two writers created one new path), serialization_failure, deadlock_detected."""


class WriteConflict(Exception):
    """A write transaction lost a race with another writer and was rolled back; try it again."""


@dataclass(frozen=True)
class BlobRow:
    """What the metadata knows of one blob."""

    key: BlobKey
    size: int
    stored_size: int
    codec: Codec
    data: bytes | None
    """Inline stored bytes, or None when the blob backend holds them."""
    digests: bytes | None = None
    """Chunk digests of the content; None when not known yet (a blob from before 0002)."""


@dataclass(frozen=True)
class DedupCandidate:
    """A blob row as a put sees it when deciding whether to share it."""

    blob: BlobRow
    refcount: int
    created: int


@dataclass(frozen=True)
class Entry:
    """One version of one path and the blob it names."""

    path: str
    version: int
    blob: BlobRow


@dataclass(frozen=True)
class Child:
    """One entry of a folder: a file (with its current version) or a subfolder."""

    name: str
    """The segment below the folder; a subfolder's name ends with ``/``."""
    entry: Entry | None
    """The file's current version (without inline data); None for a subfolder."""


@dataclass(frozen=True)
class Current:
    """The current state of a path, as a write transaction sees it."""

    version: int
    blob_key: BlobKey
    nversions: int


@dataclass(frozen=True)
class Acquired:
    """The blob row after a reference was taken on it."""

    refcount: int
    size: int
    inline: bool
    digests: bytes | None
    created: int


class Reservation(Enum):
    """What :meth:`WriteTxn.reserve_blob` found (see ``docs/design.md``, "Publishing")."""

    LIVE = "live"
    """Referenced: its bytes are stored; nothing to upload."""
    OWN = "own"
    """Leased to this put, which must upload its bytes before recording the reference."""
    BUSY = "busy"
    """Another put holds a lease with another representation; try again shortly."""


@dataclass(frozen=True)
class BlobState:
    """A blob row as the maintenance scans see it."""

    row: BlobRow
    """The row as reads see it; its ``data`` is None unless asked for (``with_data``)."""
    refcount: int
    inline_length: int | None
    """Length of the inline bytes; None when the blob backend holds them."""

    @property
    def key(self) -> BlobKey:
        return self.row.key


@dataclass(frozen=True)
class Counts:
    """Row counts of a store (see :meth:`MetadataRepo.counts`)."""

    paths: int
    versions: int
    blobs: int
    live_blobs: int
    live_bytes: int
    """Logical bytes of the referenced blobs."""
    live_stored_bytes: int


@dataclass(frozen=True)
class TokenRow:
    """One access token as stored: its name, role and SHA-256 digest (never the token)."""

    name: str
    role: str
    digest: str
    created: int


@dataclass(frozen=True)
class Usage:
    """Space accounting of a store (see :meth:`castore.store.Store.usage`)."""

    files: int
    logical_bytes: int
    versions: int
    retained_bytes: int
    blobs: int
    blob_bytes: int
    stored_bytes: int
    inline_blobs: int
    unreferenced_blobs: int

    @property
    def dedup_ratio(self) -> float:
        """Retained logical bytes per stored byte (1.0 for an empty store)."""
        return self.retained_bytes / self.stored_bytes if self.stored_bytes else 1.0


_INLINE_LENGTH = func.coalesce(func.length(blobs.c.data), -1).label("inline_length")
"""-1 for a blob kept by the backend, else the length of its inline bytes."""

_BLOB_COLUMNS = (blobs.c.key, blobs.c.size, blobs.c.stored_size, blobs.c.codec, blobs.c.data, blobs.c.digests)


def _blob_row(row: Any) -> BlobRow:
    return BlobRow(BlobKey(row.key), row.size, row.stored_size, Codec(row.codec), row.data, row.digests)


def _blob_tuple(row: tuple[Any, ...]) -> BlobRow:
    """A BlobRow from the values of :data:`_BLOB_COLUMNS`, in that order."""
    key, size, stored_size, codec, data, digests = row
    return BlobRow(BlobKey(key), size, stored_size, Codec(codec), data, digests)


# -- prebuilt statements (bind parameters by name) ---------------------------------

_SELECT_CURRENT = (
    select(paths.c.version, paths.c.blob_key, paths.c.nversions)
    .where(paths.c.path == bindparam("p"))
    .with_for_update()
)
_SELECT_CURRENT_ENTRY = (
    select(paths.c.path, paths.c.version, *_BLOB_COLUMNS)
    .join(blobs, blobs.c.key == paths.c.blob_key)
    .where(paths.c.path == bindparam("p"))
)
_SELECT_VERSION_ENTRY = (
    select(versions.c.path, versions.c.version, *_BLOB_COLUMNS)
    .join(blobs, blobs.c.key == versions.c.blob_key)
    .where(versions.c.path == bindparam("p"), versions.c.version == bindparam("v"))
)
_SELECT_CURRENT_VERSION = select(paths.c.version).where(paths.c.path == bindparam("p"))
_SELECT_BLOB_STATE = select(*_BLOB_COLUMNS, blobs.c.refcount, blobs.c.created).where(blobs.c.key == bindparam("k"))
_SET_DIGESTS = (
    update(blobs)
    .where(blobs.c.key == bindparam("k"), blobs.c.size == bindparam("s_size"), blobs.c.digests.is_(None))
    .values(digests=bindparam("d"))
)
_INSERT_PATH = paths.insert().values(
    path=bindparam("p"), version=bindparam("v"), blob_key=bindparam("k"), nversions=1
)
_UPDATE_PATH = (
    update(paths)
    .where(paths.c.path == bindparam("p"))
    .values(version=bindparam("v"), blob_key=bindparam("k"), nversions=bindparam("nv"))
)
_INSERT_VERSION = versions.insert().values(
    path=bindparam("p"), version=bindparam("v"), blob_key=bindparam("k")
)
_UPDATE_VERSION = (
    update(versions)
    .where(versions.c.path == bindparam("p"), versions.c.version == bindparam("v"))
    .values(blob_key=bindparam("k"))
)
_OLDEST_VERSIONS = (
    select(versions.c.version, versions.c.blob_key)
    .where(versions.c.path == bindparam("p"))
    .order_by(versions.c.version)
    .limit(bindparam("n"))
)
_DELETE_VERSIONS_UP_TO = delete(versions).where(
    versions.c.path == bindparam("p"), versions.c.version <= bindparam("v")
)
_VERSION_KEYS = select(versions.c.blob_key).where(versions.c.path == bindparam("p"))
_DELETE_ALL_VERSIONS = delete(versions).where(versions.c.path == bindparam("p"))
_DELETE_PATH = delete(paths).where(paths.c.path == bindparam("p"))
_RELEASE_BLOB = (
    update(blobs)
    .where(blobs.c.key == bindparam("k"))
    .values(refcount=blobs.c.refcount - bindparam("n"))
)
_UNREFERENCED = (
    select(blobs.c.key, _INLINE_LENGTH, blobs.c.stored_size)
    .where(
        blobs.c.refcount == 0,
        (blobs.c.pending_until.is_(None)) | (blobs.c.pending_until < bindparam("now")),
    )
    .limit(bindparam("limit"))
    .with_for_update()
)
_SELECT_DELETION = select(deletions.c.version).where(deletions.c.path == bindparam("p"))
_SELECT_FOR_RESERVE = (
    select(blobs.c.refcount, blobs.c.size, blobs.c.codec, blobs.c.stored_size, blobs.c.digests,
           blobs.c.pending_until)
    .where(blobs.c.key == bindparam("k"))
    .with_for_update()
)
_INSERT_RESERVED = blobs.insert().values(
    key=bindparam("k"),
    size=bindparam("b_size"),
    stored_size=bindparam("b_stored_size"),
    codec=bindparam("b_codec"),
    data=None,
    refcount=0,
    created=bindparam("b_created"),
    digests=bindparam("b_digests"),
    pending_until=bindparam("until"),
)
_TAKE_OVER = (
    update(blobs)
    .where(blobs.c.key == bindparam("k"), blobs.c.refcount == 0)
    .values(size=bindparam("b_size"), stored_size=bindparam("b_stored_size"), codec=bindparam("b_codec"),
            data=None, digests=bindparam("b_digests"), pending_until=bindparam("until"))
)
_END_LEASE = (
    update(blobs)
    .where(blobs.c.key == bindparam("k"), blobs.c.pending_until == bindparam("until"))
    .values(pending_until=None)
)
_DELETE_UNREFERENCED = delete(blobs).where(blobs.c.key == bindparam("k"), blobs.c.refcount == 0)


_SQLITE_NAMED = sqlite.dialect(paramstyle="named")


class _Hot:
    """A prebuilt statement of the put and read paths, also compiled once for SQLite's own driver.

    Rows come back as plain tuples (columns in the statement's order) on either path.
    """

    __slots__ = ("core", "defaults", "sql")

    def __init__(self, core: Any) -> None:
        self.core = core
        compiled = core.compile(dialect=_SQLITE_NAMED)
        self.sql = str(compiled)
        self.defaults = dict(compiled.params)  # literal values (refcount=1...) are parameters too

    def params(self, given: dict[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **given}


_H_CURRENT = _Hot(_SELECT_CURRENT)
_H_CURRENT_ENTRY = _Hot(_SELECT_CURRENT_ENTRY)
_H_VERSION_ENTRY = _Hot(_SELECT_VERSION_ENTRY)
_H_CURRENT_VERSION = _Hot(_SELECT_CURRENT_VERSION)
_H_BLOB_STATE = _Hot(_SELECT_BLOB_STATE)
_H_INSERT_PATH = _Hot(_INSERT_PATH)
_H_UPDATE_PATH = _Hot(_UPDATE_PATH)
_H_INSERT_VERSION = _Hot(_INSERT_VERSION)
_H_UPDATE_VERSION = _Hot(_UPDATE_VERSION)
_H_RELEASE_BLOB = _Hot(_RELEASE_BLOB)
_H_OLDEST_VERSIONS = _Hot(_OLDEST_VERSIONS)
_H_DELETE_VERSIONS_UP_TO = _Hot(_DELETE_VERSIONS_UP_TO)


def _driver_connection(engine: Engine, *, read_only: bool) -> sqlite3.Connection:
    """A connection of SQLite's own driver to an engine's database, set up as the engine's are."""
    dialect = engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.url)
    connection: sqlite3.Connection = dialect.loaded_dbapi.connect(*cargs, **{**cparams, "check_same_thread": False})
    configure_sqlite(connection, read_only=read_only)
    return connection


class _SqliteReads:
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
        return _driver_connection(self._engine, read_only=self._read_only)

    def first(self, hot: _Hot, given: dict[str, Any]) -> tuple[Any, ...] | None:
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


def _acquire_statement(dialect: str) -> Any:
    """Insert a blob row with refcount 1, or add one reference to the existing row."""
    insert: Any
    if dialect == "sqlite":
        insert = sqlite.insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # here: a SQLite store never loads it (start-up)

        insert = postgresql.insert
    else:
        raise NotImplementedError(f"castore metadata does not support the {dialect} dialect yet")
    statement: Any = insert(blobs).values(
        key=bindparam("k"),
        size=bindparam("b_size"),
        stored_size=bindparam("b_stored_size"),
        codec=bindparam("b_codec"),
        data=bindparam("b_data"),
        refcount=1,
        created=bindparam("b_created"),
        digests=bindparam("b_digests"),
    )
    # A row at refcount 0 may be half collected (its bytes already deleted), or hold
    # another content with the same key: reviving it takes the new content whole, and
    # the store then publishes the new bytes.
    dead = blobs.c.refcount == 0
    revive = {
        column: case((dead, getattr(statement.excluded, column)), else_=blobs.c[column])
        for column in ("codec", "stored_size", "data", "size", "created")
    }
    # A live row from before revision 0002 learns its digests from a put that compared
    # its bytes (the store only shares a blob it compared).
    revive["digests"] = case(
        (dead, statement.excluded.digests), else_=func.coalesce(blobs.c.digests, statement.excluded.digests)
    )
    return statement.on_conflict_do_update(
        index_elements=[blobs.c.key], set_={"refcount": blobs.c.refcount + 1, **revive}
    ).returning(
        # Not "data IS [NOT] NULL": SQLite 3.40 gets both wrong inside this RETURNING.
        blobs.c.refcount, blobs.c.size, _INLINE_LENGTH, blobs.c.digests, blobs.c.created
    )


def _file_blobs(engine_or_connection: Any, keys: list[BlobKey]) -> set[BlobKey]:
    query = select(blobs.c.key).where(blobs.c.key.in_(keys), blobs.c.data.is_(None))
    if isinstance(engine_or_connection, Connection):
        found: list[str] = list(engine_or_connection.execute(query).scalars())
    else:
        with engine_or_connection.connect() as c:
            found = list(c.execute(query).scalars())
    return {BlobKey(k) for k in found}


class WriteTxn:
    """Primitive row operations inside one write transaction (see :meth:`MetadataRepo.write`)."""

    def __init__(self, connection: Connection, acquire_statement: _Hot) -> None:
        self._c = connection
        self._acquire = acquire_statement
        self._raw: sqlite3.Connection | None = (
            connection.connection.driver_connection if connection.dialect.name == "sqlite" else None
        )

    def _run(self, hot: _Hot, given: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute a hot statement in this transaction; its rows as tuples."""
        if self._raw is not None:
            return self._raw.execute(hot.sql, hot.params(given)).fetchall()
        result = self._c.execute(hot.core, given)
        return [tuple(row) for row in result] if result.returns_rows else []

    def current(self, path: str) -> Current | None:
        """The current version of ``path``, locked for this transaction."""
        rows = self._run(_H_CURRENT, {"p": path})
        if not rows:
            return None
        version, blob_key, nversions = rows[0]
        return Current(version, BlobKey(blob_key), nversions)

    def acquire_blob(
        self,
        key: BlobKey,
        *,
        size: int,
        stored_size: int,
        codec: Codec,
        data: bytes | None,
        digests: bytes | None,
        now: int,
    ) -> Acquired:
        """Take one reference on ``key``, creating (or reviving) its row with this content if needed."""
        params = {
            "k": key,
            "b_size": size,
            "b_stored_size": stored_size,
            "b_codec": codec.value,
            "b_data": data,
            "b_created": now,
            "b_digests": digests,
        }
        (refcount, size_, inline_length, digests_, created), = self._run(self._acquire, params)
        return Acquired(refcount, size_, inline_length >= 0, digests_, created)

    def reserve_blob(
        self, key: BlobKey, *, size: int, stored_size: int, codec: Codec, digests: bytes | None, now: int, until: int
    ) -> Reservation:
        """Lease ``key`` until ``until`` for a put about to upload its bytes.

        A missing row is created at refcount 0; a row at refcount 0 whose lease has ended
        (or that holds the same representation and chunk digests: another put of the same
        content, sharing the lease) takes this put's content and lease (a dead
        row may hold another content with the same key: the store settled ``key`` as free);
        a live row is LIVE; garbage collection leaves a leased row alone.
        """
        row = self._c.execute(_SELECT_FOR_RESERVE, {"k": key}).first()
        params = {"k": key, "b_size": size, "b_stored_size": stored_size, "b_codec": codec.value,
                  "b_created": now, "b_digests": digests, "until": until}
        if row is None:
            self._c.execute(_INSERT_RESERVED, params)
            return Reservation.OWN
        if row.refcount > 0:
            return Reservation.LIVE
        leased = row.pending_until is not None and row.pending_until >= now
        if leased and (row.codec, row.stored_size, row.size, row.digests) != (codec.value, stored_size, size, digests):
            return Reservation.BUSY  # another content, or another representation of it, is being uploaded
        params["until"] = max(until, row.pending_until or 0)
        self._c.execute(_TAKE_OVER, params)
        return Reservation.OWN

    def end_lease(self, key: BlobKey, until: int) -> None:
        """Drop the lease a put took with ``until`` (if still its own): the row may be collected."""
        self._c.execute(_END_LEASE, {"k": key, "until": until})

    def release_blob(self, key: BlobKey, count: int = 1) -> None:
        """Drop ``count`` references on ``key``; rows reaching 0 wait for garbage collection."""
        self._run(_H_RELEASE_BLOB, {"k": key, "n": count})

    def add_path(self, path: str, version: int, key: BlobKey) -> None:
        """Record a new path with its first version."""
        self._run(_H_INSERT_PATH, {"p": path, "v": version, "k": key})
        self._run(_H_INSERT_VERSION, {"p": path, "v": version, "k": key})

    def add_version(self, path: str, version: int, key: BlobKey, nversions: int) -> None:
        """Make ``version`` the current version of an existing path."""
        self._run(_H_UPDATE_PATH, {"p": path, "v": version, "k": key, "nv": nversions})
        self._run(_H_INSERT_VERSION, {"p": path, "v": version, "k": key})

    def replace_current(self, path: str, current: Current, key: BlobKey) -> None:
        """Point the current version of ``path`` at another blob."""
        params = {"p": path, "v": current.version, "k": key, "nv": current.nversions}
        self._run(_H_UPDATE_PATH, params)
        self._run(_H_UPDATE_VERSION, params)

    def drop_oldest(self, path: str, count: int) -> list[BlobKey]:
        """Delete the ``count`` oldest versions of ``path``; return their blob keys."""
        rows = self._run(_H_OLDEST_VERSIONS, {"p": path, "n": count})
        if rows:
            self._run(_H_DELETE_VERSIONS_UP_TO, {"p": path, "v": rows[-1][0]})
        return [BlobKey(blob_key) for _version, blob_key in rows]

    def drop_path(self, path: str) -> list[BlobKey]:
        """Delete ``path`` with all its versions; return their blob keys."""
        rows: Any = self._c.execute(_VERSION_KEYS, {"p": path}).scalars().all()
        keys = [BlobKey(str(k)) for k in rows]
        self._c.execute(_DELETE_ALL_VERSIONS, {"p": path})
        self._c.execute(_DELETE_PATH, {"p": path})
        return keys

    def unreferenced_blobs(self, limit: int, now: int) -> list[tuple[BlobKey, bool, int]]:
        """Up to ``limit`` blobs with no reference and no lease at ``now``: ``(key, inline, stored_size)``."""
        rows = self._c.execute(_UNREFERENCED, {"limit": limit, "now": now}).all()
        return [(BlobKey(row.key), row.inline_length >= 0, row.stored_size) for row in rows]

    def forget_blob(self, key: BlobKey) -> bool:
        """Delete the row of an unreferenced blob; False if it was referenced again."""
        return self._c.execute(_DELETE_UNREFERENCED, {"k": key}).rowcount == 1

    def file_blobs(self, keys: list[BlobKey]) -> set[BlobKey]:
        """Like :meth:`MetadataRepo.file_blobs`, inside this transaction (for deciding to delete)."""
        return _file_blobs(self._c, keys)

    def recount_blobs(self, keys: list[BlobKey]) -> dict[BlobKey, tuple[int, int]]:
        """Set the refcount of each of ``keys`` (that has a row) to the versions naming it.

        Returns ``key -> (old, new)`` for the rows changed. Counted inside this write
        transaction, so no put or delete can slip in between counting and writing.
        """
        counted: dict[str, int] = {
            row[0]: int(row[1])
            for row in self._c.execute(
                select(versions.c.blob_key, func.count()).where(versions.c.blob_key.in_(keys))
                .group_by(versions.c.blob_key)
            )
        }
        stored: dict[str, int] = {
            row[0]: int(row[1])
            for row in self._c.execute(select(blobs.c.key, blobs.c.refcount).where(blobs.c.key.in_(keys)))
        }
        changed: dict[BlobKey, tuple[int, int]] = {}
        for key, old in stored.items():
            new = int(counted.get(key, 0))
            if old != new:
                self._c.execute(update(blobs).where(blobs.c.key == key).values(refcount=new))
                changed[BlobKey(key)] = (int(old), new)
        return changed

    def recount_path(self, path: str) -> tuple[int, int] | None:
        """Set ``nversions`` of ``path`` to its number of versions rows; ``(old, new)`` if changed."""
        old = self._c.execute(select(paths.c.nversions).where(paths.c.path == path)).scalar()
        new = self._c.execute(select(func.count()).where(versions.c.path == path)).scalar_one()
        if old is None or old == new:
            return None
        self._c.execute(update(paths).where(paths.c.path == path).values(nversions=new))
        return int(old), int(new)

    def bulk_add_paths(self, rows: list[tuple[str, int]], key: BlobKey) -> None:
        """Add many new paths (``(path, version)``) naming one existing blob, in one go.

        For bulk imports and the metadata-scale benchmark.
        """
        self._c.execute(paths.insert(), [{"path": p, "version": v, "blob_key": key, "nversions": 1} for p, v in rows])
        self._c.execute(versions.insert(), [{"path": p, "version": v, "blob_key": key} for p, v in rows])
        self._c.execute(
            update(blobs).where(blobs.c.key == key).values(refcount=blobs.c.refcount + len(rows))
        )


class _WriteTurn:
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


def _is_busy(error: OperationalError) -> bool:
    """Whether SQLite refused a statement because another connection holds the write lock."""
    code = getattr(error.orig, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in str(error.orig)


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
        self._fast_reads = _SqliteReads(self._reader, read_only=read_only) if sqlite_file else None
        self._checkpointer: Checkpointer | None = None
        self._write_turn: AbstractContextManager[Any] = _WriteTurn() if sqlite_file else nullcontext()
        self._shares_commits = sqlite_file
        self._batch = threading.local()  # .connection: this thread's open shared transaction (see batch)
        self._waiting = threading.local()  # .off: this thread's writes must not wait (not_waiting)
        try:
            check_schema(self._writer, self.where)
        except BaseException:
            self.close()
            raise
        self._acquire = _Hot(_acquire_statement(self._writer.dialect.name))

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
            self._checkpointer = Checkpointer(writer, lambda: _driver_connection(writer, read_only=False))

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        if self._fast_reads is not None:
            self._fast_reads.close()
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
        SQLite's busy timeout (:class:`_WriteTurn`).
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
        if getattr(self._waiting, "off", False) and isinstance(self._write_turn, _WriteTurn):
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
        """Within the block, this thread's writes raise :class:`WouldWait` rather than wait.

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
        assert isinstance(turn, _WriteTurn)
        if not turn.try_enter():
            raise WouldWait("another write of this process is in progress")
        try:
            connection = self._writer.connect()
            try:
                raw = connection.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA busy_timeout = 0")
                try:
                    try:
                        transaction = connection.begin()  # BEGIN IMMEDIATE: the write lock, or SQLITE_BUSY
                    except OperationalError as e:
                        if _is_busy(e):
                            raise WouldWait("another process is writing") from None
                        raise
                    with transaction:
                        yield WriteTxn(connection, self._acquire)
                finally:
                    with suppress(sqlite3.Error):  # a broken connection is not reused anyway
                        raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
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
        with self._writer.begin() as c:
            present = {row.name for row in c.execute(select(settings.c.name))}
            missing = [{"name": k, "value": v} for k, v in values.items() if k not in present]
            if missing:
                c.execute(settings.insert(), missing)
        return self.settings()

    # -- access tokens ------------------------------------------------------------

    def add_token(self, row: TokenRow) -> bool:
        """Store a new token; False (nothing stored) when its name is taken."""
        with self._writer.begin() as c:
            if c.execute(select(tokens.c.name).where(tokens.c.name == row.name)).first() is not None:
                return False
            c.execute(tokens.insert().values(name=row.name, role=row.role, digest=row.digest, created=row.created))
        return True

    def tokens(self) -> builtins.list[TokenRow]:
        """Every token, by name."""
        with self._reader.connect() as c:
            rows = c.execute(select(tokens).order_by(tokens.c.name)).all()
        return [TokenRow(row.name, row.role, row.digest, int(row.created)) for row in rows]

    def token_roles(self) -> dict[str, str]:
        """``digest -> role`` of every token: what the server checks requests against."""
        with self._reader.connect() as c:
            return {row.digest: row.role for row in c.execute(select(tokens.c.digest, tokens.c.role))}

    def delete_token(self, name: str) -> bool:
        """Remove the token called ``name``; False when there is none."""
        with self._writer.begin() as c:
            return c.execute(delete(tokens).where(tokens.c.name == name)).rowcount == 1

    # -- reads ------------------------------------------------------------------

    def _read_first(self, hot: _Hot, given: dict[str, Any]) -> tuple[Any, ...] | None:
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
            row = self._read_first(_H_CURRENT_ENTRY, {"p": path})
        else:
            row = self._read_first(_H_VERSION_ENTRY, {"p": path, "v": version})
        return None if row is None else Entry(row[0], row[1], _blob_tuple(row[2:8]))

    def current_version(self, path: str) -> int | None:
        row = self._read_first(_H_CURRENT_VERSION, {"p": path})
        return None if row is None else int(row[0])

    def dedup_candidate(self, key: BlobKey) -> DedupCandidate | None:
        """The row of ``key`` (with inline bytes, refcount and creation time), or None."""
        row = self._read_first(_H_BLOB_STATE, {"k": key})
        return None if row is None else DedupCandidate(_blob_tuple(row[:6]), row[6], row[7])

    def set_digests(self, key: BlobKey, size: int, digests: bytes) -> bool:
        """Record the chunk digests of a blob that has none yet; False if it had some (or changed)."""
        with self._writer.begin() as c:
            return c.execute(_SET_DIGESTS, {"k": key, "s_size": size, "d": digests}).rowcount == 1

    def blobs_without_digests(self, after: str, limit: int) -> list[BlobRow]:
        """Up to ``limit`` live blobs with no digests and a key after ``after``, in key order."""
        query = (
            select(*_BLOB_COLUMNS)
            .where(blobs.c.digests.is_(None), blobs.c.refcount > 0, blobs.c.key > after)
            .order_by(blobs.c.key)
            .limit(limit)
        )
        with self._reader.connect() as c:
            return [_blob_row(row) for row in c.execute(query)]

    def history(self, path: str) -> list[Entry]:
        """Every retained version of ``path``, newest first."""
        query = (
            select(versions.c.path, versions.c.version, *_BLOB_COLUMNS)
            .join(blobs, blobs.c.key == versions.c.blob_key)
            .where(versions.c.path == path)
            .order_by(versions.c.version.desc())
        )
        with self._reader.connect() as c:
            return [Entry(row.path, row.version, _blob_row(row)) for row in c.execute(query)]

    def list(self, low: str, high: str, max_version: int | None = None) -> Iterator[Entry]:
        """Current entries with ``low <= path < high``, in path order, page by page."""
        after = None
        while True:
            conditions = [paths.c.path < high]
            conditions.append(paths.c.path > after if after is not None else paths.c.path >= low)
            if max_version is not None:
                conditions.append(paths.c.version <= max_version)
            query = (
                select(paths.c.path, paths.c.version, blobs.c.key, blobs.c.size, blobs.c.stored_size,
                       blobs.c.codec)
                .join(blobs, blobs.c.key == paths.c.blob_key)
                .where(and_(*conditions))
                .order_by(paths.c.path)
                .limit(self.LIST_PAGE)
            )
            with self._reader.connect() as c:
                rows = c.execute(query).all()
            for row in rows:
                blob = BlobRow(BlobKey(row.key), row.size, row.stored_size, Codec(row.codec), None)
                yield Entry(row.path, row.version, blob)
            if len(rows) < self.LIST_PAGE:
                return
            after = rows[-1].path

    def children(self, low: str, high: str, *, after: str | None = None, limit: int = 1000) -> builtins.list[Child]:
        """Up to ``limit`` files and subfolders directly below the folder ``low``, by name.

        ``[low, high)`` is the folder's range; ``after`` resumes after that child name.
        A skip scan: a page of rows is read from the primary key, files are taken from
        it, and a subfolder costs one more page started past its whole range, so a
        folder above a million files lists in a few dozen index lookups.
        """
        found: builtins.list[Child] = []
        lower, inclusive = low, True
        if after is not None:
            # past the file ``after``, or past the whole subfolder ``after/``
            lower, inclusive = (low + after[:-1] + "0", True) if after.endswith("/") else (low + after, False)
        page = 64
        with self._reader.connect() as c:
            while len(found) < limit:
                start = paths.c.path >= lower if inclusive else paths.c.path > lower
                query = (
                    select(paths.c.path, paths.c.version, *_BLOB_COLUMNS[:4])
                    .join(blobs, blobs.c.key == paths.c.blob_key)
                    .where(start, paths.c.path < high)
                    .order_by(paths.c.path)
                    .limit(page)
                )
                rows = c.execute(query).all()
                for row in rows:
                    rest = row.path[len(low):]
                    folder, slash, _ = rest.partition("/")
                    if slash:
                        found.append(Child(folder + "/", None))
                        lower, inclusive = low + folder + "0", True  # past every path below it
                        break
                    blob = BlobRow(BlobKey(row.key), row.size, row.stored_size, Codec(row.codec), None)
                    found.append(Child(rest, Entry(row.path, row.version, blob)))
                    lower, inclusive = row.path, False
                    if len(found) == limit:
                        break
                else:
                    if len(rows) < page:
                        break
        return found

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
        with self._reader.connect() as c:
            files, logical = c.execute(
                select(func.count(), func.coalesce(func.sum(blobs.c.size), 0)).select_from(
                    paths.join(blobs, blobs.c.key == paths.c.blob_key)
                )
            ).one()
            nversions, retained = c.execute(
                select(func.count(), func.coalesce(func.sum(blobs.c.size), 0)).select_from(
                    versions.join(blobs, blobs.c.key == versions.c.blob_key)
                )
            ).one()
            live = blobs.c.refcount > 0
            nblobs, blob_bytes, stored, inline = c.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(blobs.c.size), 0),
                    func.coalesce(func.sum(blobs.c.stored_size), 0),
                    func.coalesce(func.sum(case((_INLINE_LENGTH >= 0, 1), else_=0)), 0),
                ).where(live)
            ).one()
            unreferenced = c.execute(select(func.count()).where(blobs.c.refcount == 0)).scalar_one()
        counts = (files, logical, nversions, retained, nblobs, blob_bytes, stored, inline, unreferenced)
        return Usage(*(int(n) for n in counts))  # type: ignore[call-overload]

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

    def counts(self) -> Counts:
        """How many paths, versions and blobs (live, inline) the store has."""
        live = blobs.c.refcount > 0
        with self._reader.connect() as c:
            npaths = c.execute(select(func.count()).select_from(paths)).scalar_one()
            nversions = c.execute(select(func.count()).select_from(versions)).scalar_one()
            nblobs, nlive, size, stored = c.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(case((live, 1), else_=0)), 0),
                    func.coalesce(func.sum(case((live, blobs.c.size), else_=0)), 0),
                    func.coalesce(func.sum(case((live, blobs.c.stored_size), else_=0)), 0),
                )
            ).one()
        numbers: list[Any] = [npaths, nversions, nblobs, nlive, size, stored]
        return Counts(*(int(n) for n in numbers))

    def blob_page(self, after: BlobKey | None, *, with_data: bool, limit: int | None = None) -> builtins.list[BlobState]:
        """Up to ``limit`` (default :attr:`SCAN_PAGE`) referenced blobs with keys after ``after``, in key order.

        ``with_data`` also fetches inline bytes; such pages hold at most
        :attr:`SCAN_DATA_PAGE` rows, so a page never holds more than a few MiB.
        """
        if limit is None:
            limit = min(self.SCAN_PAGE, self.SCAN_DATA_PAGE) if with_data else self.SCAN_PAGE
        row_columns = [c if with_data or c is not blobs.c.data else null().label("data") for c in _BLOB_COLUMNS]
        query = (
            select(*row_columns, blobs.c.refcount, _INLINE_LENGTH)
            .where(blobs.c.refcount > 0)
            .order_by(blobs.c.key)
            .limit(limit)
        )
        if after is not None:
            query = query.where(blobs.c.key > after)
        with self._reader.connect() as c:
            rows = c.execute(query).all()
        return [
            BlobState(_blob_row(row), int(row.refcount), None if row.inline_length < 0 else int(row.inline_length))
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
        and ``nversions`` (the number of ``versions`` rows of the path).
        """
        counted = select(versions.c.path, func.count().label("n")).group_by(versions.c.path).subquery()
        current = versions.alias("current")
        query = (
            select(paths.c.path, paths.c.version, paths.c.blob_key, paths.c.nversions,
                   func.coalesce(counted.c.n, 0).label("n"), current.c.blob_key.label("version_key"))
            .outerjoin(counted, counted.c.path == paths.c.path)
            .outerjoin(current, and_(current.c.path == paths.c.path, current.c.version == paths.c.version))
            .where(
                (paths.c.nversions != func.coalesce(counted.c.n, 0))
                | current.c.blob_key.is_(None)
                | (current.c.blob_key != paths.c.blob_key)
            )
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

        ``versions`` has no index on ``blob_key``: this scans the table, in pages.
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

    def file_blobs(self, keys: builtins.list[BlobKey]) -> set[BlobKey]:
        """Those of ``keys`` whose row says the blob backend holds their bytes (not inline)."""
        return _file_blobs(self._reader, keys)

    # -- deletions remembered while moving in from Filetracker ------------------------

    def remember_deletion(self, path: str, version: int) -> None:
        """Record that ``path`` was deleted at ``version`` (the highest such version is kept)."""
        with self._writer.begin() as c:
            known = c.execute(_SELECT_DELETION, {"p": path}).scalar()
            if known is None:
                c.execute(deletions.insert().values(path=path, version=version))
            elif known < version:
                c.execute(update(deletions).where(deletions.c.path == path).values(version=version))

    def restore_deletion(self, path: str, version: int | None, written: int) -> None:
        """Put back what :meth:`deletion` said (``version``; None: no row) before a failed
        delete that remembered ``written``, unless another delete has remembered a later
        version since: that deletion stands (its own request answered for it)."""
        with self._writer.begin() as c:
            if c.execute(_SELECT_DELETION, {"p": path}).scalar() != written:
                return
            c.execute(delete(deletions).where(deletions.c.path == path))
            if version is not None:
                c.execute(deletions.insert().values(path=path, version=version))

    def deletion(self, path: str) -> int | None:
        """The version ``path`` was deleted at while moving in, or None."""
        with self._reader.connect() as c:
            return c.execute(_SELECT_DELETION, {"p": path}).scalar()

    def deletions(self, low: str, high: str) -> dict[str, int]:
        """Remembered deletions with ``low <= path < high``."""
        query = select(deletions.c.path, deletions.c.version).where(
            deletions.c.path >= low, deletions.c.path < high
        )
        with self._reader.connect() as c:
            return {row.path: int(row.version) for row in c.execute(query)}
