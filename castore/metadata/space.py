"""The metadata database's own space: what it takes beyond the contents it keeps inline, and free pages given back.

A content kept inline that shrinks (``castore compact``) or goes (``castore gc``) leaves
free pages in a SQLite file; the file keeps its size until they are given back. A new
store is made with ``auto_vacuum = INCREMENTAL`` (:mod:`castore.creating`,
:func:`castore.metadata.engine.configure_sqlite`), so ``PRAGMA incremental_vacuum``
returns them to the filesystem after each compact and gc (:func:`reclaim`). A store made
before has ``auto_vacuum = NONE``, which only a ``VACUUM`` can change: a rewrite of the
whole file that holds the write lock meanwhile and needs as much free disk again, so it
is never done on the side; ``castore compact --vacuum`` does it once (:func:`make_incremental`).

PostgreSQL keeps and reuses its own free space (autovacuum): nothing to do there.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Connection, Engine, func, select

from .models import blobs

__all__ = ["BLOCK", "MetadataSpace", "make_incremental", "reclaim", "space"]

BLOCK = 4096
"""The filesystem block a blob file's size is rounded up to (ext4, XFS: 4 KiB)."""


@dataclass(frozen=True)
class MetadataSpace:
    """What the metadata takes on disk (SQLite; None where the database does not tell)."""

    database_bytes: int | None
    """The database file: pages times page size (SQLite), None elsewhere."""
    free_bytes: int | None
    """Of those, free pages (given back by :func:`reclaim` on an incremental store)."""
    incremental: bool | None
    """Whether free pages are given back (``auto_vacuum = INCREMENTAL``); None off SQLite."""
    inline_bytes: int
    """Stored bytes of the live contents kept inline."""
    file_slack_bytes: int
    """What rounding each blob file up to a :data:`BLOCK` adds (an estimate: the backend's own blocks may differ)."""


def space(c: Connection) -> MetadataSpace:
    """The database's size and free pages, and what blob files add by their blocks."""
    inline, slack = (int(value or 0) for value in c.execute(
        select(
            func.coalesce(func.sum(func.length(blobs.c.data)), 0),
            func.coalesce(func.sum(
                (blobs.c.stored_size + BLOCK - 1) / BLOCK * BLOCK - blobs.c.stored_size
            ).filter(blobs.c.data.is_(None)), 0),
        ).where(blobs.c.refcount > 0)
    ).one())
    if c.dialect.name != "sqlite":
        return MetadataSpace(None, None, None, inline, slack)
    page_size = int(c.exec_driver_sql("PRAGMA page_size").scalar_one())
    pages = int(c.exec_driver_sql("PRAGMA page_count").scalar_one())
    free = int(c.exec_driver_sql("PRAGMA freelist_count").scalar_one())
    mode = int(c.exec_driver_sql("PRAGMA auto_vacuum").scalar_one())
    return MetadataSpace(pages * page_size, free * page_size, mode == 2, inline, slack)


def reclaim(writer: Engine) -> int:
    """Give the free pages of an incremental SQLite file back to the filesystem; the bytes given back.

    Nothing (0) on another database or a store made before incremental vacuum (see the
    module's docstring). One short write transaction: a page is moved or dropped per step.
    """
    if writer.dialect.name != "sqlite":
        return 0
    raw = writer.raw_connection()
    try:
        cursor = raw.cursor()
        if cursor.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            return 0
        page_size = cursor.execute("PRAGMA page_size").fetchone()[0]
        before = cursor.execute("PRAGMA freelist_count").fetchone()[0]
        # Each step of the statement frees one page, and sqlite3's execute() takes one step:
        # executescript() runs it to its end.
        cast(sqlite3.Connection, raw.driver_connection).executescript("PRAGMA incremental_vacuum;")
        after = cursor.execute("PRAGMA freelist_count").fetchone()[0]
        return int((before - after) * page_size)
    finally:
        raw.close()


def make_incremental(writer: Engine) -> bool:
    """Switch a SQLite file made before to ``auto_vacuum = INCREMENTAL`` (one VACUUM); False if nothing to do."""
    if writer.dialect.name != "sqlite":
        return False
    raw = writer.raw_connection()
    try:
        cursor = raw.cursor()
        if cursor.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            return False
        cursor.execute("PRAGMA auto_vacuum = INCREMENTAL")
        cursor.execute("VACUUM")
        return True
    finally:
        raw.close()
