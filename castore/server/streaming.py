"""Response bodies: ``Range`` parsing, and content sent only once verified (chunk by chunk).

Each iterator closes its reader at its end; a chunk that fails verification aborts the
response (see :func:`verified_content`).
"""

from __future__ import annotations

import itertools
import logging
import re
import zlib
from collections.abc import AsyncIterator, Iterator

import anyio.to_thread

from ..codec import Codec, compressed_chunks
from ..errors import CorruptBlob
from ..reading import BlobReader
from .statuses import HTTPError

__all__ = ["gzipped", "parse_range", "passes_through", "stored_frames", "verified_content"]

GZIP_LEVEL = 1

log = logging.getLogger(__name__)


_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` → ``(start, end_exclusive)``; None when the header is unusable (send it all).

    A range no byte of the file satisfies (any range of an empty file) raises 416.
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "":
        if last == "" or int(last) == 0:
            return None
        if size == 0:
            raise HTTPError(416, f"range {header!r} is not satisfiable: the file is empty")
        return max(size - int(last), 0), size
    start = int(first)
    end = int(last) + 1 if last else size
    if start >= size or end <= start:
        raise HTTPError(416, f"range {header!r} is not satisfiable for {size} bytes")
    return start, min(end, size)


def verified_content(reader: BlobReader, *, start: int = 0, limit: int | None = None) -> Iterator[bytes]:
    """Verified content, chunk by chunk (in a worker thread, via Starlette), then close the reader.

    A chunk that fails verification raises CorruptBlob before any of it is yielded;
    after the headers went out that aborts the connection, so the client sees a body
    shorter than announced (or no final chunk), never a complete response.
    """
    return _closing_on_damage(reader, _span(reader, start, limit))


def _span(reader: BlobReader, start: int, limit: int | None) -> Iterator[bytes]:
    if start:
        reader.seek_content(start)
    remaining = limit
    for chunk in reader.chunks():
        if remaining is not None:
            if len(chunk) >= remaining:
                yield chunk[:remaining]
                return
            remaining -= len(chunk)
        yield chunk


def passes_through(reader: BlobReader, frames: bool) -> bool:
    """Whether the answer is the stored zstd frames as they are: the client may take them
    (``frames``: it accepts zstd, and wants the whole content) and the file is stored so."""
    return frames and reader.codec is Codec.ZSTD


def stored_frames(reader: BlobReader) -> Iterator[bytes]:
    """The stored zstd frames, each piece sent only once the content it decodes to is verified."""
    return _closing_on_damage(reader, reader.verified_stored())


def _closing_on_damage(reader: BlobReader, pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Yield ``pieces``; log a CorruptBlob before it aborts the response; close the reader at the end."""
    try:
        yield from pieces
    except CorruptBlob as e:
        log.error("castore: aborting a response: %s", e)
        raise
    finally:
        reader.close()


def gzipped(reader: BlobReader) -> Iterator[bytes]:
    return compressed_chunks(verified_content(reader), zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31))


LINES_PER_CHUNK = 1000
"""Names per chunk of a ``/list/`` body: the server holds one such chunk, not the listing."""


async def lines(names: Iterator[str]) -> AsyncIterator[bytes]:
    """``names`` as ``name\n`` lines, :data:`LINES_PER_CHUNK` at a time, each chunk read in a
    worker thread (the iterator queries the database page by page)."""

    def chunk() -> bytes:
        return "".join(name + "\n" for name in itertools.islice(names, LINES_PER_CHUNK)).encode()

    while body := await anyio.to_thread.run_sync(chunk):
        yield body
