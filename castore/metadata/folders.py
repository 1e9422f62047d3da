"""A folder's direct children, read by a skip scan of the ``paths`` primary key.

:meth:`castore.metadata.repo.MetadataRepo.children` (the web page's and ``castore ls``'s
folder view) runs it on a reader connection.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from ..codec import Codec
from ..keys import BlobKey
from .models import blobs, paths
from .rows import BlobRow, Child, Entry
from .statements import BLOB_COLUMNS

__all__ = ["children"]


def children(c: Connection, low: str, high: str, *, after: str | None = None, limit: int = 1000) -> list[Child]:
    """Up to ``limit`` files and subfolders directly below the folder ``low``, by name.

    ``[low, high)`` is the folder's range; ``after`` resumes after that child name.
    A skip scan: a page of rows is read from the primary key, files are taken from
    it, and a subfolder costs one more page started past its whole range, so a
    folder above a million files lists in a few dozen index lookups.
    """
    found: list[Child] = []
    lower, inclusive = low, True
    if after is not None:
        # past the file ``after``, or past the whole subfolder ``after/``
        lower, inclusive = (low + after[:-1] + "0", True) if after.endswith("/") else (low + after, False)
    page = 64
    while len(found) < limit:
        start = paths.c.path >= lower if inclusive else paths.c.path > lower
        query = (
            select(paths.c.path, paths.c.version, *BLOB_COLUMNS[:4])
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
