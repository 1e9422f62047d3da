"""A PUT's body as the store reads it: raw bytes counted, then decoded with bounded memory.

Two layers, read from a worker thread:

* :class:`RequestBody` — the raw bytes, fetched chunk by chunk from the event loop (or
  from a list, for a small body received whole), checked against ``Content-Length``;
* :class:`UploadReader` — those bytes decoded (:mod:`castore.content_coding`), checked
  against the ``Logical-Size`` and ``SHA256-Checksum`` hints.

Every mismatch raises :class:`~castore.errors.SourceError` before the store records
anything. A read never decodes more than the caller asked for, so a small compressed
body that expands enormously (a "zip bomb") costs no more memory than any other upload;
a zstd body must say its ``Logical-Size``, which bounds how far it may expand and is
how a truncated zstd frame is told apart from a shorter file.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from typing import Any, BinaryIO, cast

import anyio.from_thread
from starlette.requests import ClientDisconnect

from .content_coding import decoded
from .errors import SourceError

__all__ = ["RequestBody", "UploadReader"]


class RequestBody(io.RawIOBase):
    """The raw bytes of a request body, counted against its ``Content-Length``."""

    def __init__(self, chunks: AsyncIterator[bytes] | list[bytes], content_length: int | None) -> None:
        super().__init__()
        self._chunks = chunks
        self._content_length = content_length
        self.received = 0
        self._pending = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    async def _next_async(self) -> bytes | None:
        assert not isinstance(self._chunks, list)
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None
        except ClientDisconnect:
            raise SourceError("the upload was cut short: the client disconnected") from None

    def _next(self) -> bytes | None:
        if isinstance(self._chunks, list):  # a small body, received before the worker thread started
            return self._chunks.pop(0) if self._chunks else None
        return anyio.from_thread.run(self._next_async)

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._eof:
            raw = self._next()
            if raw is None:
                self._eof = True
                if self._content_length is not None and self.received < self._content_length:
                    raise SourceError(f"the body has {self.received} of its {self._content_length} bytes")
                break
            self.received += len(raw)
            if self._content_length is not None and self.received > self._content_length:
                raise SourceError("the body is longer than its Content-Length")
            self._pending = memoryview(raw)  # Starlette ends a body with an empty chunk: skipped
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class UploadReader(io.RawIOBase):
    """The decoded content of a PUT, checked against its hints as it is read."""

    def __init__(self, raw: RequestBody, *, encoding: str, logical_size: int | None, sha256: str | None) -> None:
        super().__init__()
        self._encoding = encoding
        self._logical_size = logical_size
        self._sha256 = hashlib.sha256() if sha256 else None
        self._expected_sha256 = (sha256 or "").lower()
        self._delivered = 0
        if encoding == "zstd" and logical_size is None:
            raise SourceError("a zstd body needs a Logical-Size header")
        self._decoded = decoded(cast(BinaryIO, raw), encoding)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._decoded.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._delivered += n
            if self._logical_size is not None and self._delivered > self._logical_size:
                raise SourceError(f"the body decodes to more than its Logical-Size of {self._logical_size} bytes")
            if self._sha256 is not None:
                self._sha256.update(memoryview(buffer)[:n])
            return n
        self._finish()
        return 0

    def _finish(self) -> None:
        if self._logical_size is not None and self._delivered != self._logical_size:
            what = "is truncated" if self._encoding != "identity" else "is short"
            raise SourceError(
                f"the {self._encoding} body {what}: {self._delivered} of its Logical-Size {self._logical_size} bytes"
            )
        if self._sha256 is not None and self._sha256.hexdigest() != self._expected_sha256:
            raise SourceError("the body does not match its SHA256-Checksum")
