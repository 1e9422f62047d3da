"""What a client's ``get_stream`` returns, made into what Django and OIOIOI's callers expect.

Clients hand out different kinds of stream: castore's embedded store a verified
``BlobReader`` (no seeking), its cache and Filetracker's cache an open file, castore's
remote client a download, Filetracker 2.3.3's client a ``_FileLikeFromResponse`` (only
``read``: no ``close``). Two promises hold whatever the client:

* :func:`closable` — Django's ``File`` protocol: ``close()``, so ``with``, ``stream_file``
  and ``dumpdata`` work;
* :func:`seekable` — ``field.read_using_cache()`` can be sought, as OIOIOI's
  ``zipfile.ZipFile(field.read_using_cache())`` and ``is_zipfile(...)`` need. A large
  file is never read into memory for it: a blob stored raw is read in place, a chunk
  at a time (``BlobReader.random_access``), anything else is copied into a
  ``SpooledTemporaryFile`` that holds at most :data:`SPOOL_IN_MEMORY` bytes in memory.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from typing import IO, Any

__all__ = ["SPOOL_IN_MEMORY", "SPOOL_PIECE", "ClosableStream", "closable", "known_size", "seekable"]

SPOOL_IN_MEMORY = 1 << 20
"""A copy made to seek in stays in memory up to this size, then moves to a temporary file."""
SPOOL_PIECE = 256 * 1024
"""Bytes read at a time into that copy from a stream without verified chunks of its own."""


class ClosableStream(io.RawIOBase):
    """A read-only stream around a reader that has only ``read`` (Filetracker 2.3.3's download).

    Closing it ends the download's chunk iterator (``_FileLikeFromResponse.iter``), so the
    rest of the response is not read; the response goes with it.
    """

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self._inner = inner

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        data = self._inner.read() if size is None or size < 0 else self._inner.read(size)
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            chunks = getattr(self._inner, "iter", None)
            end = getattr(chunks, "close", None)
            if callable(end):
                end()
        super().close()


def closable(stream: Any) -> Any:
    """``stream`` itself when it has ``close()``, else a :class:`ClosableStream` around it."""
    return stream if callable(getattr(stream, "close", None)) else ClosableStream(stream)


def _can_seek(stream: Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, ValueError, OSError):
        return False


def seekable(stream: Any, spool_dir: str | None = None) -> tuple[IO[bytes], int | None]:
    """A seekable stream of ``stream``'s content, and its size when that is known for free.

    ``stream`` itself when it can seek (a cache file); its random-access view when it is a
    raw stored blob; else a spooled copy (in ``spool_dir`` once over :data:`SPOOL_IN_MEMORY`),
    and ``stream`` is then closed.
    """
    if _can_seek(stream):
        return stream, None
    random_access = getattr(stream, "random_access", None)
    view = random_access() if callable(random_access) else None
    if view is not None:
        return view, int(view.size)
    copy = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - handed to the caller, closed here on failure
        max_size=SPOOL_IN_MEMORY, prefix="castore-read-", dir=spool_dir
    )
    try:
        expected = known_size(stream)
        if expected is not None and expected > SPOOL_IN_MEMORY:
            copy.rollover()  # straight to the file: no in-memory copy to grow and move first
        with closable(stream) as source:
            pieces = getattr(source, "chunks", None)
            if callable(pieces):  # castore's reader: its verified chunks, no copy into a buffer
                for piece in pieces():
                    copy.write(piece)
            else:
                shutil.copyfileobj(source, copy, SPOOL_PIECE)
        size = copy.tell()
        copy.seek(0)
    except BaseException:
        copy.close()
        raise
    return copy, size


def known_size(stream: Any) -> int | None:
    """The size of ``stream``'s content when it says so (castore's readers) or is a local file."""
    size = getattr(stream, "size", None)
    if isinstance(size, int):
        return size
    if isinstance(stream, (io.BufferedReader, io.FileIO)):
        try:
            return os.fstat(stream.fileno()).st_size
        except (OSError, ValueError):
            return None
    return None
