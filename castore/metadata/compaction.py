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

from ..digests import DIGEST_SIZE
from .models import HEAD, blobs
from .rows import BlobRow
from .statements import A_DELTA_OF, BLOB_COLUMNS, blob_row

__all__ = ["REFERENCES_LOOKED_AT", "Backlog", "backlog", "candidates", "reference"]

REFERENCES_LOOKED_AT = 16
"""Contents beginning like the one settled that :func:`reference` compares (the oldest)."""


@dataclass(frozen=True)
class Backlog:
    """Contents ``castore compact`` has not looked at yet: how many, their original and stored bytes."""

    contents: int
    logical_bytes: int
    stored_bytes: int


_NOT_A_DELTA = func.coalesce(blobs.c.base, "") == ""
"""A row that is no delta frame; through coalesce, so that SQLite's planner keeps to the index
the query is made for rather than taking ix_blobs_base for "base IS NULL" (nearly every row)."""


def _waiting(after: tuple[int, str] | None, created_before: int) -> list[Any]:
    """Live blobs with chunk digests, created before ``created_before``, after the cursor ``after``."""
    where = [blobs.c.refcount > 0, blobs.c.digests.is_not(None), blobs.c.created < created_before, _NOT_A_DELTA]
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


def reference(c: Connection, row: BlobRow, created: int, *, max_size: int) -> BlobRow | None:
    """The content a delta frame of ``row`` (first stored at ``created``) is best compressed against, or None.

    A candidate shares ``row``'s first chunk (``ix_blobs_head``), came before it in
    compact's order (``(created, key)``: the older content stays a plain frame, the one
    derived from it becomes the delta, whichever compact meets first), is live, is not
    itself a delta and holds at most ``max_size`` bytes; of the :data:`REFERENCES_LOOKED_AT`
    oldest, the one sharing the most leading chunk digests wins (the older on a tie).
    None as well for a content of less than two chunks (left to a plain frame) and for
    one that is already some delta's reference (depth one).
    """
    digests = row.digests
    if digests is None or len(digests) < 2 * DIGEST_SIZE:
        return None
    if c.execute(A_DELTA_OF.core, {"k": row.key}).first() is not None:
        return None
    query = (
        select(*BLOB_COLUMNS)
        .where(HEAD == digests[:DIGEST_SIZE],
               tuple_(blobs.c.created, blobs.c.key) < tuple_(literal(created), literal(row.key)), blobs.c.refcount > 0,
               _NOT_A_DELTA, blobs.c.digests.is_not(None), blobs.c.size <= max_size)
        .order_by(blobs.c.created, blobs.c.key)
        .limit(REFERENCES_LOOKED_AT)
    )
    found = [blob_row(candidate) for candidate in c.execute(query)]
    return max(found, key=lambda candidate: _shared_chunks(digests, candidate.digests or b""), default=None)


def _shared_chunks(one: bytes, other: bytes) -> int:
    """How many leading chunk digests two contents share."""
    count = 0
    for start in range(0, min(len(one), len(other)), DIGEST_SIZE):
        if one[start:start + DIGEST_SIZE] != other[start:start + DIGEST_SIZE]:
            break
        count += 1
    return count
