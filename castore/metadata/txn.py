"""One write transaction of the metadata: the row operations a store composes.

The store decides what they mean (which version wins, when a blob must be
published); :meth:`castore.metadata.repo.MetadataRepo.write` opens the transaction.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Any

from sqlalchemy import Connection, func, select, text, update

from ..codec import Codec
from ..keys import BlobKey, frame_name, stored_name_key
from ..names import child_range, parent_folders
from .linking import link_new_postgresql
from .models import blobs, paths, versions
from .rows import Acquired, BlobRow, Current, Reservation, Usage
from .statements import (
    A_DELTA_OF,
    DELETE_ALL_VERSIONS,
    DELETE_PATH,
    DELETE_UNREFERENCED,
    DELETE_VERSIONS_UP_TO,
    END_LEASE,
    INSERT_PATH,
    INSERT_RESERVED,
    INSERT_VERSION,
    OLDEST_VERSIONS,
    RELEASE_BLOB,
    SELECT_CURRENT,
    SELECT_FOR_RESERVE,
    TAKE_LIVE_BLOB,
    TAKE_OVER,
    UNREFERENCED,
    UPDATE_PATH,
    UPDATE_VERSION,
    VERSION_KEYS,
    HotStatement,
    in_the_way_statement,
    path_locks_statement,
)
from .totals import read_totals, recount, set_totals

__all__ = ["CONFLICT_SQLSTATES", "WriteConflict", "WriteTxn", "file_blobs"]


CONFLICT_SQLSTATES = frozenset({"23505", "40001", "40P01"})
"""unique_violation (two writers created one new path), serialization_failure, deadlock_detected."""


BULK_ROWS = 1000
"""Rows per INSERT of :meth:`WriteTxn.bulk_add_paths` (4,000 parameters: below SQLite's limit)."""


class WriteConflict(Exception):
    """A write transaction lost a race with another writer and was rolled back; try it again."""


def file_blobs(connection: Connection, names: list[BlobKey]) -> set[BlobKey]:
    """Those of the backend's ``names`` that a row needs: its bytes are not inline, and it is that frame.

    A name is a key or a key's later frame (:func:`~castore.keys.frame_name`); one that is
    neither, or an earlier frame of a recompressed content, is needed by no row.
    """
    parsed = [found for name in names if (found := stored_name_key(name)) is not None]
    keys = sorted({key for key, _ in parsed})
    query = select(blobs.c.key, blobs.c.frame).where(blobs.c.key.in_(keys), blobs.c.data.is_(None))
    needed = {frame_name(BlobKey(row.key), int(row.frame)) for row in connection.execute(query)}
    return needed & set(names)


class WriteTxn:
    """Primitive row operations inside one write transaction.

    Opened by :meth:`~castore.metadata.repo.MetadataRepo.write`.
    """

    def __init__(self, connection: Connection, acquire_statement: HotStatement) -> None:
        self._c = connection
        self._acquire = acquire_statement
        self._raw: sqlite3.Connection | None = (
            connection.connection.driver_connection if connection.dialect.name == "sqlite" else None
        )

    def _run(self, hot: HotStatement, given: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute a hot statement in this transaction; its rows as tuples."""
        if self._raw is not None:
            return self._raw.execute(hot.sql, hot.params(given)).fetchall()
        result = self._c.execute(hot.core, given)
        return [tuple(row) for row in result] if result.returns_rows else []

    def current(self, path: str) -> Current | None:
        """The current version of ``path``, locked for this transaction."""
        rows = self._run(SELECT_CURRENT, {"p": path})
        if not rows:
            return None
        version, blob_key, nversions = rows[0]
        return Current(version, BlobKey(blob_key), nversions)

    def in_the_way(self, path: str) -> str | None:
        """A stored path that keeps the new path ``path`` from being a file, or None.

        That is a file at one of its parent folders, or any file below ``path`` (then
        ``path`` is a folder). One indexed statement; on PostgreSQL the name and its
        parent folders are locked first (:func:`.path_locks_statement`), so that a
        writer creating a folder's file and one creating a file below it see each other.
        """
        folders = parent_folders(path)
        given = {f"a{i}": folder for i, folder in enumerate(folders)}
        if self._raw is None:
            self._c.execute(path_locks_statement(len(folders)), {"p": path, **given})
        low, high = child_range(path + "/")
        rows = self._run(in_the_way_statement(len(folders)), {"lo": low, "hi": high, **given})
        return rows[0][0] if rows else None

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
        row = self._c.execute(SELECT_FOR_RESERVE, {"k": key}).first()
        params = {"k": key, "b_size": size, "b_stored_size": stored_size, "b_codec": codec.value,
                  "b_created": now, "b_digests": digests, "until": until}
        if row is None:
            self._c.execute(INSERT_RESERVED, params)
            return Reservation.OWN
        if row.refcount > 0:
            return Reservation.LIVE
        leased = row.pending_until is not None and row.pending_until >= now
        if leased and (row.codec, row.stored_size, row.size, row.digests) != (codec.value, stored_size, size, digests):
            return Reservation.BUSY  # another content, or another representation of it, is being uploaded
        params["until"] = max(until, row.pending_until or 0)
        self._c.execute(TAKE_OVER, params)
        return Reservation.OWN

    def needed_by_delta(self, key: BlobKey) -> bool:
        """Like :meth:`.MetadataRepo.needed_by_delta`, inside this transaction."""
        return bool(self._run(A_DELTA_OF, {"k": key}))

    def end_lease(self, key: BlobKey, until: int) -> None:
        """Drop the lease a put took with ``until`` (if still its own): the row may be collected."""
        self._c.execute(END_LEASE, {"k": key, "until": until})

    def release_blob(self, key: BlobKey, count: int = 1) -> None:
        """Drop ``count`` references on ``key``; rows reaching 0 wait for garbage collection."""
        self._run(RELEASE_BLOB, {"k": key, "n": count})

    def add_path(self, path: str, version: int, key: BlobKey) -> None:
        """Record a new path with its first version."""
        self._run(INSERT_PATH, {"p": path, "v": version, "k": key})
        self._run(INSERT_VERSION, {"p": path, "v": version, "k": key})

    def add_version(self, path: str, version: int, key: BlobKey, nversions: int) -> None:
        """Make ``version`` the current version of an existing path."""
        self._run(UPDATE_PATH, {"p": path, "v": version, "k": key, "nv": nversions})
        self._run(INSERT_VERSION, {"p": path, "v": version, "k": key})

    def replace_current(self, path: str, current: Current, key: BlobKey) -> None:
        """Point the current version of ``path`` at another blob."""
        params = {"p": path, "v": current.version, "k": key, "nv": current.nversions}
        self._run(UPDATE_PATH, params)
        self._run(UPDATE_VERSION, params)

    def drop_oldest(self, path: str, count: int) -> list[BlobKey]:
        """Delete the ``count`` oldest versions of ``path``; return their blob keys."""
        rows = self._run(OLDEST_VERSIONS, {"p": path, "n": count})
        if rows:
            self._run(DELETE_VERSIONS_UP_TO, {"p": path, "v": rows[-1][0]})
        return [BlobKey(blob_key) for _version, blob_key in rows]

    def drop_path(self, path: str) -> list[BlobKey]:
        """Delete ``path`` with all its versions; return their blob keys."""
        rows: Any = self._c.execute(VERSION_KEYS, {"p": path}).scalars().all()
        keys = [BlobKey(str(k)) for k in rows]
        self._c.execute(DELETE_ALL_VERSIONS, {"p": path})
        self._c.execute(DELETE_PATH, {"p": path})
        return keys

    def unreferenced_blobs(self, limit: int, now: int) -> list[tuple[BlobKey, bool, int, int]]:
        """Up to ``limit`` blobs with no reference and no lease at ``now``: ``(key, inline, stored_size, frame)``."""
        rows = self._c.execute(UNREFERENCED, {"limit": limit, "now": now}).all()
        return [(BlobKey(row.key), row.inline_length >= 0, row.stored_size, row.frame) for row in rows]

    def settle_frame(
        self, was: BlobRow, *, codec: Codec, stored_size: int, data: bytes | None, frame: int,
        reference: BlobRow | None = None,
    ) -> bool:
        """Switch a live blob's stored bytes from ``was`` to another frame of the same content.

        ``data``: the new frame kept inline; None when the blob backend holds it under
        ``frame_name(key, frame)``. The one place where a content's stored representation
        changes after its put (``castore compact``, :mod:`castore.compacting`): whole-store
        totals of stored bytes change here by ``stored_size - was.stored_size``. A
        compare-and-swap: False, changing nothing, when the row is no longer ``was``
        (collected, revived with other bytes, settled by another process) or no version
        references it.

        ``reference``: the new frame is a delta (``zdelta``) against that content, which
        must then be live, not itself a delta, and still the content the frame was made
        against; and no delta may decode against ``was`` (depth one: never a chain, never
        a cycle). Both rows are locked first (PostgreSQL: ``FOR UPDATE``, in key order),
        so two compactors switching the two rows of one pair wait for each other and the
        second sees the first's switch.
        """
        if reference is not None and not self._may_be_delta(was, reference):
            return False
        same = [
            blobs.c.key == was.key,
            blobs.c.refcount > 0,
            blobs.c.size == was.size,
            blobs.c.codec == was.codec.value,
            blobs.c.stored_size == was.stored_size,
            blobs.c.digests == was.digests,
            blobs.c.frame == was.frame,
            blobs.c.base.is_(None) if was.base is None else blobs.c.base == was.base,
            blobs.c.data.is_(None) if was.data is None else func.length(blobs.c.data) == len(was.data),
        ]
        values = {"codec": codec.value, "stored_size": stored_size, "data": data,
                  "frame": 0 if data is not None else frame, "base": None if reference is None else reference.key}
        return self._c.execute(update(blobs).where(*same).values(**values)).rowcount == 1

    def _may_be_delta(self, was: BlobRow, reference: BlobRow) -> bool:
        """Whether ``was`` may become a delta against ``reference`` now (both rows locked by this call)."""
        locked = {
            row.key: row for row in self._c.execute(
                select(blobs.c.key, blobs.c.refcount, blobs.c.base, blobs.c.size, blobs.c.digests)
                .where(blobs.c.key.in_(sorted({was.key, reference.key}))).order_by(blobs.c.key).with_for_update())
        }
        ref = locked.get(reference.key)
        if was.key == reference.key or ref is None or ref.refcount <= 0 or ref.base is not None:
            return False
        if (ref.size, ref.digests) != (reference.size, reference.digests):
            return False  # another content took the key over meanwhile
        # A statement after the locks: on PostgreSQL it sees every delta committed before them.
        return not self.needed_by_delta(was.key)

    def forget_blob(self, key: BlobKey) -> bool:
        """Delete the row of an unreferenced blob; False if it was referenced again."""
        return self._c.execute(DELETE_UNREFERENCED, {"k": key}).rowcount == 1

    def file_blobs(self, keys: list[BlobKey]) -> set[BlobKey]:
        """Like :meth:`.MetadataRepo.file_blobs`, inside this transaction (for deciding to delete)."""
        return file_blobs(self._c, keys)

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

    def totals_recounted(self) -> tuple[Usage, Usage]:
        """Recount the store's totals and keep the recount: ``(kept before, recounted)``.

        For ``castore check --repair``. On PostgreSQL ``totals`` is locked first: a writer
        that changed rows the recount cannot see yet adds its change after this commit.
        """
        if self._raw is None:
            self._c.execute(text("LOCK TABLE totals IN EXCLUSIVE MODE"))
        kept, counted = read_totals(self._c), recount(self._c)
        if kept != counted:
            set_totals(self._c, counted)
        return kept, counted

    def bulk_add_paths(self, rows: list[tuple[str, int]], key: BlobKey) -> None:
        """Add many new paths (``(path, version)``) naming one existing blob, in one go.

        For bulk imports and the metadata-scale benchmark. Rows go in multi-row INSERTs of
        :data:`BULK_ROWS`: an executemany is a statement per row on PostgreSQL, and each
        fires the totals' statement triggers (a 100 k-path build took over ten minutes).
        """
        for start in range(0, len(rows), BULK_ROWS):
            part = rows[start : start + BULK_ROWS]
            self._c.execute(paths.insert().values([{"path": p, "version": v, "blob_key": key, "nversions": 1}
                                                   for p, v in part]))
            self._c.execute(versions.insert().values([{"path": p, "version": v, "blob_key": key} for p, v in part]))
        self._c.execute(
            update(blobs).where(blobs.c.key == key).values(refcount=blobs.c.refcount + len(rows))
        )

    def link_new_paths(self, rows: list[tuple[str, int, BlobKey]]) -> list[bool]:
        """Point each new path of ``rows`` (``(path, version, key)``) at the live blob ``key``; whether each was.

        A row is left (False) when its path is stored already, a file or folder is in its
        way, or its blob has no reference (gone, or being collected): the caller puts
        those one by one. On PostgreSQL six statements for all the rows
        (:func:`.linking.link_new_postgresql`: a path that an earlier row names, is below
        or holds is left too); on SQLite, rows in turn (a local call a statement, no round
        trip), each distinct key's references taken in one statement (and those of rows
        left given back). No savepoint.
        """
        if self._raw is None:
            return link_new_postgresql(self._c, rows)
        wanted = Counter(key for _, _, key in rows)
        live = {key for key, count in sorted(wanted.items()) if self._take(key, count)}
        unused: Counter[BlobKey] = Counter()
        linked = []
        for path, version, key in rows:
            new = key in live and self.current(path) is None and self.in_the_way(path) is None
            if new:
                self.add_path(path, version, key)
            elif key in live:
                unused[key] += 1
            linked.append(new)
        for key, count in sorted(unused.items()):
            self.release_blob(key, count)
        return linked

    def _take(self, key: BlobKey, count: int) -> bool:
        """Take ``count`` references on ``key`` if it has any now (a live blob); whether it had."""
        return bool(self._run(TAKE_LIVE_BLOB, {"k": key, "n": count}))
