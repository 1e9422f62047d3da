"""Many new paths pointed at stored blobs, in a few statements a batch (an import's links, #22).

:meth:`castore.metadata.txn.WriteTxn.link_new_paths` links the paths an import finds naming
contents castore holds already. Statement by statement that cost five round trips a path
on PostgreSQL (the name's lock, its current row, what is in its way, two inserts, each
insert firing the totals' statement triggers): ~500 paths/s. Here a batch costs six
statements whatever its size, each taking the whole batch as arrays (``unnest``):

1. lock every name (exclusive) and every parent folder (shared), in name order, as a put
   of one new path does (:func:`~castore.metadata.statements.path_locks_statement`);
2. find the names taken: a row among the names or their parent folders, or a row below
   a name (then the name is a folder);
3. of their blobs, those live (refcount > 0), locked ``FOR KEY SHARE``: garbage collection
   (which locks a row ``FOR UPDATE`` before it deletes a file) waits, and then finds the
   row referenced again; other batches' locks do not conflict;
4. insert their ``paths`` and their ``versions`` rows (two statements; the totals
   triggers fire once for each), and last add their references, per blob: a blob's row
   lock, which batches naming one content queue on, is held from there to the commit only
   (taken first, it held the batches of an import one behind the other).

Which paths of the batch stand in each other's way is decided before, in Python
(:func:`free_of_each_other`). SQLite keeps its statement per step and path (a local call,
not a round trip: :class:`~castore.metadata.txn.WriteTxn`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import Connection, text

from ..keys import BlobKey
from ..names import child_range, parent_folders
from .statements import PATH_LOCK_CLASS

__all__ = ["free_of_each_other", "link_new_postgresql"]


_LOCK_NAMES = text(
    "SELECT count(CASE WHEN n.exclusive THEN pg_advisory_xact_lock(:lock_class, hashtext(n.name)) "
    "ELSE pg_advisory_xact_lock_shared(:lock_class, hashtext(n.name)) END) "
    "FROM (SELECT name, exclusive FROM unnest(CAST(:names AS text[]), CAST(:exclusive AS boolean[])) "
    "AS u(name, exclusive) ORDER BY name COLLATE \"C\") AS n"
)
"""Lock the names (exclusive) and their folders (shared) in one order: two batches wait, not deadlock."""

_TAKEN = text(
    "SELECT p.path FROM paths p JOIN unnest(CAST(:names AS text[])) AS u(name) "
    "ON p.path = u.name COLLATE \"C\" "
    "UNION ALL "
    "SELECT u.name FROM unnest(CAST(:news AS text[]), CAST(:low AS text[]), CAST(:high AS text[])) "
    "AS u(name, low, high) "
    "WHERE EXISTS (SELECT 1 FROM paths p WHERE p.path >= u.low COLLATE \"C\" AND p.path < u.high COLLATE \"C\")"
)
"""Of ``names`` (new paths and their folders), those stored; of ``news``, those with a path below them."""

_LIVE = text(
    "SELECT key FROM blobs WHERE key = ANY(CAST(:keys AS text[])) AND refcount > 0 ORDER BY key FOR KEY SHARE"
)
_ADD_REFERENCES = text(
    "UPDATE blobs SET refcount = blobs.refcount + u.n "
    "FROM unnest(CAST(:keys AS text[]), CAST(:counts AS bigint[])) AS u(key, n) WHERE blobs.key = u.key"
)

_INSERT_PATHS = text(
    "INSERT INTO paths (path, version, blob_key, nversions) "
    "SELECT path, version, blob_key, 1 FROM unnest(CAST(:paths AS text[]), CAST(:versions AS bigint[]), "
    "CAST(:keys AS text[])) AS u(path, version, blob_key)"
)
_INSERT_VERSIONS = text(
    "INSERT INTO versions (path, version, blob_key) "
    "SELECT path, version, blob_key FROM unnest(CAST(:paths AS text[]), CAST(:versions AS bigint[]), "
    "CAST(:keys AS text[])) AS u(path, version, blob_key)"
)


def free_of_each_other(paths: Sequence[str]) -> list[bool]:
    """For each of ``paths``, whether no path before it in the list is the same, one of its folders, or below it.

    Every path before counts, linked or not: a path left here is put on its own later, which
    tells the cases apart; linking all the others together cannot make two of them clash.
    """
    names: set[str] = set()
    folders: set[str] = set()
    free = []
    for path in paths:
        above = parent_folders(path)
        free.append(path not in names and path not in folders and names.isdisjoint(above))
        names.add(path)
        folders.update(above)
    return free


def link_new_postgresql(connection: Connection, rows: Sequence[tuple[str, int, BlobKey]]) -> list[bool]:
    """:meth:`~castore.metadata.txn.WriteTxn.link_new_paths` on PostgreSQL, in six statements."""
    free = free_of_each_other([path for path, _, _ in rows])
    news = [path for (path, _, _), ok in zip(rows, free, strict=True) if ok]
    if not news:
        return free
    folders = sorted({folder for path in news for folder in parent_folders(path)})
    c = connection
    c.execute(_LOCK_NAMES, {"lock_class": PATH_LOCK_CLASS, "names": news + folders,
                            "exclusive": [True] * len(news) + [False] * len(folders)})
    ranges = [child_range(path + "/") for path in news]
    taken: set[str] = set(c.execute(_TAKEN, {"names": news + folders, "news": news, "low": [low for low, _ in ranges],
                                   "high": [high for _, high in ranges]}).scalars())
    wanted = [ok and path not in taken and taken.isdisjoint(parent_folders(path))
              for (path, _, _), ok in zip(rows, free, strict=True)]
    keys = sorted({key for (_, _, key), want in zip(rows, wanted, strict=True) if want})
    if not keys:
        return wanted
    live: set[str] = set(c.execute(_LIVE, {"keys": keys}).scalars())
    linked = [want and key in live for (_, _, key), want in zip(rows, wanted, strict=True)]
    chosen = [row for row, link in zip(rows, linked, strict=True) if link]
    if chosen:
        given = {"paths": [path for path, _, _ in chosen], "versions": [version for _, version, _ in chosen],
                 "keys": [key for _, _, key in chosen]}
        c.execute(_INSERT_PATHS, given)
        c.execute(_INSERT_VERSIONS, given)
        counts = Counter(key for _, _, key in chosen)
        ordered = sorted(counts)
        c.execute(_ADD_REFERENCES, {"keys": ordered, "counts": [counts[key] for key in ordered]})
    return linked
