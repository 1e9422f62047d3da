"""The queries of ``castore compact`` (:mod:`castore.compacting`): which contents it has still to look at.

Contents are taken oldest first, in ``(created, key)`` order after a cursor (where the
last run stopped), along the index ``ix_blobs_created_key`` (revision 0009): a batch costs
the same however many contents the store holds; the switch of a row to a new frame is
:meth:`castore.metadata.txn.WriteTxn.settle_frame`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, literal, select, tuple_

from .models import blobs
from .rows import BlobRow
from .statements import BLOB_COLUMNS, blob_row

__all__ = ["Backlog", "backlog", "candidates"]


@dataclass(frozen=True)
class Backlog:
    """Contents ``castore compact`` has not looked at yet: how many, their original and stored bytes."""

    contents: int
    logical_bytes: int
    stored_bytes: int


def _waiting(after: tuple[int, str] | None, created_before: int) -> list[Any]:
    """Live blobs with chunk digests, created before ``created_before``, after the cursor ``after``."""
    where = [blobs.c.refcount > 0, blobs.c.digests.is_not(None), blobs.c.created < created_before]
    if after is not None:  # a row value: one seek in ix_blobs_created_key, not a scan from its start
        where.append(tuple_(blobs.c.created, blobs.c.key) > tuple_(literal(after[0]), literal(after[1])))
    return where


def candidates(
    c: Connection, after: tuple[int, str] | None, *, created_before: int, limit: int
) -> list[tuple[BlobRow, int]]:
    """Up to ``limit`` waiting blobs, oldest first, with their inline bytes: ``(row, created)``."""
    query = (
        select(*BLOB_COLUMNS, blobs.c.created)
        .where(*_waiting(after, created_before))
        .order_by(blobs.c.created, blobs.c.key)
        .limit(limit)
    )
    return [(blob_row(row), int(row.created)) for row in c.execute(query)]


def backlog(c: Connection, after: tuple[int, str] | None, *, created_before: int) -> Backlog:
    """How much :func:`candidates` has still to hand out."""
    query = select(
        func.count(), func.coalesce(func.sum(blobs.c.size), 0), func.coalesce(func.sum(blobs.c.stored_size), 0)
    ).where(*_waiting(after, created_before))
    count, size, stored = (int(value or 0) for value in c.execute(query).one())
    return Backlog(count, size, stored)
