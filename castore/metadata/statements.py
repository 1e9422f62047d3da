"""The metadata's SQLAlchemy Core statements, built once at import.

SQLAlchemy caches their compiled form, which keeps a put at a handful of cheap
executions (see ``benchmarks/core.py``). Parameters are bound by name.

The statements of a put and of a read are :class:`HotStatement`: also compiled once for
SQLite's own driver, on which :mod:`castore.metadata.txn` and
:mod:`castore.metadata.repo` run them on SQLite (see :mod:`castore.metadata.sqlite`).
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, exists, func, literal_column, or_, select, update
from sqlalchemy.dialects import sqlite

from ..codec import Codec
from ..keys import BlobKey
from .models import blobs, deletions, paths, settings, versions
from .rows import BlobRow

__all__ = [
    "A_DELTA_OF",
    "BLOB_COLUMNS",
    "DELETE_ALL_VERSIONS",
    "DELETE_PATH",
    "DELETE_UNREFERENCED",
    "DELETE_VERSIONS_UP_TO",
    "END_LEASE",
    "INLINE_LENGTH",
    "INSERT_PATH",
    "INSERT_RESERVED",
    "INSERT_VERSION",
    "NO_DELTA_NEEDS_IT",
    "OLDEST_VERSIONS",
    "PATH_LOCK_CLASS",
    "RELEASE_BLOB",
    "SELECT_BLOB_STATE",
    "SELECT_CURRENT",
    "SELECT_CURRENT_ENTRY",
    "SELECT_CURRENT_VERSION",
    "SELECT_DELETION",
    "SELECT_FOR_RESERVE",
    "SELECT_VERSION_ENTRY",
    "SET_DIGESTS",
    "TAKE_OVER",
    "UNREFERENCED",
    "UPDATE_PATH",
    "UPDATE_VERSION",
    "VERSION_KEYS",
    "HotStatement",
    "acquire_statement",
    "blob_row",
    "blob_tuple",
    "in_the_way_statement",
    "path_locks_statement",
    "remember_deletion_statement",
    "set_setting_statement",
    "upsert_insert",
]


INLINE_LENGTH = func.coalesce(func.length(blobs.c.data), -1).label("inline_length")
"""-1 for a blob kept by the backend, else the length of its inline bytes."""

BLOB_COLUMNS = (
    blobs.c.key, blobs.c.size, blobs.c.stored_size, blobs.c.codec, blobs.c.data, blobs.c.digests, blobs.c.frame,
    blobs.c.base,
)


def blob_row(row: Any) -> BlobRow:
    """A BlobRow from a Core row with the columns of :data:`BLOB_COLUMNS` (by name)."""
    return BlobRow(BlobKey(row.key), row.size, row.stored_size, Codec(row.codec), row.data, row.digests, row.frame,
                   None if row.base is None else BlobKey(row.base))


def blob_tuple(row: tuple[Any, ...]) -> BlobRow:
    """A BlobRow from the values of :data:`BLOB_COLUMNS`, in that order."""
    key, size, stored_size, codec, data, digests, frame, base = row
    return BlobRow(BlobKey(key), size, stored_size, Codec(codec), data, digests, frame,
                   None if base is None else BlobKey(base))


_SQLITE_NAMED = sqlite.dialect(paramstyle="named")


class HotStatement:
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


# -- the put and read paths: hot statements ---------------------------------------

SELECT_CURRENT = HotStatement(
    select(paths.c.version, paths.c.blob_key, paths.c.nversions)
    .where(paths.c.path == bindparam("p"))
    .with_for_update()
)
SELECT_CURRENT_ENTRY = HotStatement(
    select(paths.c.path, paths.c.version, *BLOB_COLUMNS)
    .join(blobs, blobs.c.key == paths.c.blob_key)
    .where(paths.c.path == bindparam("p"))
)
SELECT_VERSION_ENTRY = HotStatement(
    select(versions.c.path, versions.c.version, *BLOB_COLUMNS)
    .join(blobs, blobs.c.key == versions.c.blob_key)
    .where(versions.c.path == bindparam("p"), versions.c.version == bindparam("v"))
)
SELECT_CURRENT_VERSION = HotStatement(select(paths.c.version).where(paths.c.path == bindparam("p")))
SELECT_BLOB_STATE = HotStatement(
    select(*BLOB_COLUMNS, blobs.c.refcount, blobs.c.created).where(blobs.c.key == bindparam("k"))
)
INSERT_PATH = HotStatement(
    paths.insert().values(path=bindparam("p"), version=bindparam("v"), blob_key=bindparam("k"), nversions=1)
)
UPDATE_PATH = HotStatement(
    update(paths)
    .where(paths.c.path == bindparam("p"))
    .values(version=bindparam("v"), blob_key=bindparam("k"), nversions=bindparam("nv"))
)
INSERT_VERSION = HotStatement(
    versions.insert().values(path=bindparam("p"), version=bindparam("v"), blob_key=bindparam("k"))
)
UPDATE_VERSION = HotStatement(
    update(versions)
    .where(versions.c.path == bindparam("p"), versions.c.version == bindparam("v"))
    .values(blob_key=bindparam("k"))
)
OLDEST_VERSIONS = HotStatement(
    select(versions.c.version, versions.c.blob_key)
    .where(versions.c.path == bindparam("p"))
    .order_by(versions.c.version)
    .limit(bindparam("n"))
)
DELETE_VERSIONS_UP_TO = HotStatement(
    delete(versions).where(versions.c.path == bindparam("p"), versions.c.version <= bindparam("v"))
)
RELEASE_BLOB = HotStatement(
    update(blobs)
    .where(blobs.c.key == bindparam("k"))
    .values(refcount=blobs.c.refcount - bindparam("n"))
)

TAKE_LIVE_BLOB = HotStatement(
    update(blobs)
    .where(blobs.c.key == bindparam("k"), blobs.c.refcount > 0)
    .values(refcount=blobs.c.refcount + bindparam("n"))
    .returning(blobs.c.refcount)
)
"""More references on a blob that has some (an import's links); no row when it has none."""

# -- Core only: digests, leases, deletes, garbage collection ----------------------

SET_DIGESTS = (
    update(blobs)
    .where(blobs.c.key == bindparam("k"), blobs.c.size == bindparam("s_size"), blobs.c.digests.is_(None))
    .values(digests=bindparam("d"))
)
VERSION_KEYS = select(versions.c.blob_key).where(versions.c.path == bindparam("p"))
DELETE_ALL_VERSIONS = delete(versions).where(versions.c.path == bindparam("p"))
DELETE_PATH = delete(paths).where(paths.c.path == bindparam("p"))
_DELTA = blobs.alias("delta")
NO_DELTA_NEEDS_IT = ~exists().where(_DELTA.c.base == literal_column('blobs."key"'))
"""No delta frame decodes against this content (``ix_blobs_base``): gc may collect it once unreferenced.

The row's key is named as SQL, so that it is always the statement's own ``blobs`` row: a
SELECT or DELETE correlates ``blobs.c.key`` by itself, but an upsert's ``DO UPDATE`` does
not, and there ``blobs`` was added to the subquery's own FROM, which asked whether any delta
of any content existed (and scanned ``blobs`` twice per put meeting a row at refcount 0)."""
A_DELTA_OF = HotStatement(select(blobs.c.key).where(blobs.c.base == bindparam("k")).limit(1))
"""A delta frame decoding against the content ``:k``, if any (``ix_blobs_base``)."""
UNREFERENCED = (
    select(blobs.c.key, INLINE_LENGTH, blobs.c.stored_size, blobs.c.frame)
    .where(
        blobs.c.refcount == 0,
        (blobs.c.pending_until.is_(None)) | (blobs.c.pending_until < bindparam("now")),
        NO_DELTA_NEEDS_IT,
    )
    .limit(bindparam("limit"))
    .with_for_update()
)
SELECT_DELETION = select(deletions.c.version).where(deletions.c.path == bindparam("p"))
SELECT_FOR_RESERVE = (
    select(blobs.c.refcount, blobs.c.size, blobs.c.codec, blobs.c.stored_size, blobs.c.digests,
           blobs.c.pending_until)
    .where(blobs.c.key == bindparam("k"))
    .with_for_update()
)
INSERT_RESERVED = blobs.insert().values(
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
TAKE_OVER = (
    update(blobs)
    .where(blobs.c.key == bindparam("k"), blobs.c.refcount == 0)
    .values(size=bindparam("b_size"), stored_size=bindparam("b_stored_size"), codec=bindparam("b_codec"),
            data=None, digests=bindparam("b_digests"), pending_until=bindparam("until"), frame=0, base=None)
)
END_LEASE = (
    update(blobs)
    .where(blobs.c.key == bindparam("k"), blobs.c.pending_until == bindparam("until"))
    .values(pending_until=None)
)
DELETE_UNREFERENCED = delete(blobs).where(blobs.c.key == bindparam("k"), blobs.c.refcount == 0, NO_DELTA_NEEDS_IT)


def upsert_insert(dialect: str) -> Any:
    """The dialect's ``insert`` construct, which has ``on_conflict_do_update``/``_do_nothing``
    (the same arguments on both databases): an upsert is one statement, never a look then a
    write, which two PostgreSQL transactions can both pass."""
    if dialect == "sqlite":
        return sqlite.insert
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # here: a SQLite store never loads it (start-up)

        return postgresql.insert
    raise NotImplementedError(f"castore metadata does not support the {dialect} dialect yet")


@functools.lru_cache(maxsize=4)
def set_setting_statement(dialect: str) -> Any:
    """Set the setting ``:n`` to ``:v``, whether it exists or not."""
    insert = upsert_insert(dialect)(settings).values(name=bindparam("n"), value=bindparam("v"))
    return insert.on_conflict_do_update(index_elements=[settings.c.name], set_={"value": insert.excluded.value})


@functools.lru_cache(maxsize=4)
def remember_deletion_statement(dialect: str) -> Any:
    """Remember that ``:p`` was deleted at ``:v``, keeping the later of that and a version remembered before."""
    insert = upsert_insert(dialect)(deletions).values(path=bindparam("p"), version=bindparam("v"))
    later = case((insert.excluded.version > deletions.c.version, insert.excluded.version), else_=deletions.c.version)
    return insert.on_conflict_do_update(index_elements=[deletions.c.path], set_={"version": later})


def acquire_statement(dialect: str) -> HotStatement:
    """Insert a blob row with refcount 1, or add one reference to the existing row.

    Built per dialect (an upsert), once per :class:`~castore.metadata.repo.MetadataRepo`.
    """
    statement: Any = upsert_insert(dialect)(blobs).values(
        key=bindparam("k"),
        size=bindparam("b_size"),
        stored_size=bindparam("b_stored_size"),
        codec=bindparam("b_codec"),
        data=bindparam("b_data"),
        refcount=1,
        created=bindparam("b_created"),
        digests=bindparam("b_digests"),
        frame=0,
        base=None,
    )
    # A row at refcount 0 may be half collected (its bytes already deleted), or hold
    # another content with the same key: reviving it takes the new content whole, and
    # the store then publishes the new bytes. A row kept for a delta frame (a reference at
    # refcount 0) is not dead: its bytes stay, and a put that compared them shares it.
    dead = (blobs.c.refcount == 0) & NO_DELTA_NEEDS_IT
    revive = {
        column: case((dead, getattr(statement.excluded, column)), else_=blobs.c[column])
        for column in ("codec", "stored_size", "data", "size", "created", "frame", "base")
    }
    # A live row from before revision 0002 learns its digests from a put that compared
    # its bytes (the store only shares a blob it compared).
    revive["digests"] = case(
        (dead, statement.excluded.digests), else_=func.coalesce(blobs.c.digests, statement.excluded.digests)
    )
    return HotStatement(statement.on_conflict_do_update(
        index_elements=[blobs.c.key], set_={"refcount": blobs.c.refcount + 1, **revive}
    ).returning(
        # Not "data IS [NOT] NULL": SQLite 3.40 gets both wrong inside this RETURNING.
        blobs.c.refcount, blobs.c.size, INLINE_LENGTH, blobs.c.digests, blobs.c.created
    ))



# -- a new file's name: no file above it, no file below it ------------------------


@functools.lru_cache(maxsize=64)
def in_the_way_statement(depth: int) -> HotStatement:
    """One stored path that keeps a new path from being a file: a file at one of its ``depth``
    parent folders (``:a0`` … outermost first), or a file below it (``[:lo, :hi)``).

    One statement, every part a search of the primary key (SQLite: ``MULTI-INDEX OR``),
    ``LIMIT 1``. Built once per depth.
    """
    below = and_(paths.c.path >= bindparam("lo"), paths.c.path < bindparam("hi"))
    above = [paths.c.path == bindparam(f"a{i}") for i in range(depth)]
    return HotStatement(select(paths.c.path).where(or_(*above, below)).limit(1))


PATH_LOCK_CLASS = 0x63617374  # "cast"
"""First key of the PostgreSQL advisory locks on path names (the second is the name's hash)."""


@functools.lru_cache(maxsize=64)
def path_locks_statement(depth: int) -> Any:
    """PostgreSQL: lock the name ``:p`` (exclusive) and its ``depth`` parent folders ``:a0`` … (shared).

    Transaction-level advisory locks, so that of two writers creating ``/a`` and ``/a/b`` at
    once, the second waits for the first to commit and then sees its row (READ COMMITTED
    takes a new snapshot for each statement). Writers below one folder only share locks.
    """
    def lock(name: str, kind: str) -> Any:
        return getattr(func, kind)(PATH_LOCK_CLASS, func.hashtext(bindparam(name)))

    return select(lock("p", "pg_advisory_xact_lock"),
                  *(lock(f"a{i}", "pg_advisory_xact_lock_shared") for i in range(depth)))
