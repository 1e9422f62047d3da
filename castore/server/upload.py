"""A PUT's body: received on the event loop, then decoded with bounded memory in a thread.

Two steps:

* :func:`receive_body` — runs on the event loop and waits for the network without
  holding a worker thread, so idle or slow clients cost a socket and a small buffer,
  never one of the worker's threads. A small body, or one whose ``Content-Length`` is
  at most :data:`SIZED_BODY`, stays in memory (within a budget per worker,
  :class:`MemoryBudget`); a larger one goes to an anonymous spool file on the store's
  disk, written in batches from a thread. Limits apply as bytes arrive:
  ``body_timeout`` between two parts (:class:`~castore.errors.UploadTimeout`) and
  ``max_upload_size`` (:class:`~castore.errors.UploadTooLarge`).
* :class:`UploadReader` — the received bytes decoded (:mod:`castore.content_coding`),
  checked against the ``Logical-Size`` and ``SHA256-Checksum`` hints, and bounded: a
  compressed body without ``Logical-Size`` may expand at most ``max_expansion`` times.

Every mismatch raises :class:`~castore.errors.SourceError` before the store records
anything. A read never decodes more than the caller asked for, so a small compressed
body that expands enormously (a "zip bomb") costs no more memory than any other upload;
a zstd body must say its ``Logical-Size``, which bounds how far it may expand and is
how a truncated zstd frame is told apart from a shorter file.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO, cast

import anyio
import anyio.to_thread
from starlette.requests import ClientDisconnect

from ..content_coding import MAX_ZSTD_WINDOW, Sized, SizeMismatch, decoded
from ..errors import SourceError, UploadTimeout, UploadTooLarge
from ..sizes import WHOLE_IN_MEMORY

__all__ = ["MemoryBudget", "ReceivedBody", "UploadLimits", "UploadReader", "receive_body"]

SMALL_BODY = WHOLE_IN_MEMORY
"""Bodies up to this size are kept in memory (while the worker's budget allows)."""
SIZED_BODY = 32 << 20
"""A body that says its ``Content-Length``, up to this size, is kept in memory too when the
worker's budget has room for all of it (taken before its first byte): writing 16 MiB to a
spool file and reading it back cost a put more than its decoding and hashing together."""
SPOOL_BATCH = 1 << 20
"""Bytes gathered before a write to the spool file (one thread hop per batch)."""


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may cost a worker (``castore serve`` options)."""

    body_timeout: float = 60.0
    """Seconds to wait for the next part of a body before answering 408."""
    max_upload_size: int | None = None
    """Largest body, and largest decoded content, in bytes (None: no limit)."""
    max_zstd_window: int = MAX_ZSTD_WINDOW
    """Largest window a zstd frame in an upload may ask for."""
    max_expansion: int = 100
    """A compressed body without ``Logical-Size`` may decode to this many times its size."""
    expansion_floor: int = SMALL_BODY
    """...or to this many bytes, whichever is more."""
    memory_budget: int = 64 << 20
    """In-memory bytes for all bodies being received by one worker; beyond, bodies spool."""


class MemoryBudget:
    """Bytes of request bodies held in memory by one worker (event loop only: no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class ReceivedBody:
    """A whole request body: a few bytes in memory, or an anonymous spool file."""

    def __init__(self, parts: list[bytes], spool: BinaryIO | None, size: int, budget: MemoryBudget) -> None:
        self._parts = parts
        self._spool = spool
        self.size = size
        self._budget = budget
        self._held = sum(len(p) for p in parts)  # counted in the budget until closed

    @classmethod
    def holding(cls, data: bytes) -> ReceivedBody:
        """A body of ``data``, counted in no worker's budget (a copy kept past its request:
        :mod:`castore.server.grouping`)."""
        return cls([data], None, len(data), MemoryBudget(len(data)))

    @property
    def spooled(self) -> bool:
        """True when the body waits in a spool file rather than in memory."""
        return self._spool is not None

    @property
    def in_memory(self) -> bytes | None:
        """The body's bytes when it was kept in memory, else None."""
        if self._spool is not None:
            return None
        if len(self._parts) != 1:
            self._parts = [b"".join(self._parts)]  # joined once
        return self._parts[0]

    def open(self) -> BinaryIO:
        """A reader of the body from its first byte (seekable)."""
        if self._spool is None:
            return io.BytesIO(cast(bytes, self.in_memory))
        self._spool.seek(0)
        return self._spool

    def close(self) -> None:
        self._parts = []
        self._budget.give(self._held)
        self._held = 0
        if self._spool is not None:
            self._spool.close()  # anonymous: its space goes back to the disk now


async def receive_body(
    chunks: AsyncIterator[bytes],
    *,
    content_length: int | None,
    limits: UploadLimits,
    budget: MemoryBudget,
    spool_dir: str | None,
) -> ReceivedBody:
    """Receive a whole body on the event loop; no thread waits for the network."""
    parts: list[bytes] = []
    held = 0  # bytes of ``parts`` counted in the budget
    spool: BinaryIO | None = None
    batch = bytearray()
    size = 0
    idle = _IdleTimer(limits.body_timeout)
    # A sized body is held whole, counted in the budget at once (Content-Length bounds it).
    sized = content_length is not None and SMALL_BODY < content_length <= SIZED_BODY and (
        limits.max_upload_size is None or content_length <= limits.max_upload_size
    ) and budget.take(content_length)
    if sized:
        assert content_length is not None
        held = content_length
    try:
        while True:
            try:
                async with idle:
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UploadTimeout(f"no part of the body came for {limits.body_timeout:g} s") from None
            except ClientDisconnect:
                raise SourceError("the upload was cut short: the client disconnected") from None
            if not chunk:
                continue
            size += len(chunk)
            if content_length is not None and size > content_length:
                raise SourceError("the body is longer than its Content-Length")
            if limits.max_upload_size is not None and size > limits.max_upload_size:
                raise UploadTooLarge(f"the body is larger than this server's limit of {limits.max_upload_size} bytes")
            if sized:
                parts.append(chunk)
                continue
            if spool is None and size <= SMALL_BODY and budget.take(len(chunk)):
                parts.append(chunk)
                held += len(chunk)
                continue
            if spool is None:
                spool = await anyio.to_thread.run_sync(_new_spool, spool_dir)
                batch += b"".join(parts)
                parts = []
                budget.give(held)
                held = 0
            batch += chunk
            if len(batch) >= SPOOL_BATCH:
                await anyio.to_thread.run_sync(spool.write, bytes(batch))
                batch.clear()
        if content_length is not None and size < content_length:
            raise SourceError(f"the body has {size} of its {content_length} bytes")
        if spool is not None and batch:
            await anyio.to_thread.run_sync(spool.write, bytes(batch))
    except BaseException:
        budget.give(held)
        if spool is not None:
            spool.close()
        raise
    finally:
        idle.close()
    return ReceivedBody(parts, spool, size, budget)


class _IdleTimer:
    """``async with timer:`` around each wait for a part of one body: TimeoutError once a wait
    has lasted ``seconds``.

    One timer serves the whole body. A profile of uploads showed a timeout per part
    (``asyncio.timeout``: a timer scheduled and cancelled, a task looked up) as a cost of
    its own: a 16 MiB body arrives in some 250 parts. Here a wait only notes when it
    began; the one timer, when it fires, cancels the wait in progress if that began
    ``seconds`` ago or more, and otherwise sets itself for when that wait would be due.
    """

    __slots__ = ("_handle", "_loop", "_seconds", "_since", "_task", "_timed_out")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._since = 0.0
        self._timed_out = False

    async def __aenter__(self) -> None:
        self._since = self._loop.time()
        if self._task is None:
            self._task = asyncio.current_task()
        if self._handle is None:
            self._handle = self._loop.call_at(self._since + self._seconds, self._fire)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._since = 0.0  # not waiting: the timer lets the rest of the work be
        if self._timed_out and kind is asyncio.CancelledError:
            self._timed_out = False
            if self._task is not None and self._task.uncancel() == 0:
                raise TimeoutError from error

    def _fire(self) -> None:
        self._handle = None
        if not self._since:
            return  # between two waits: the next wait sets the timer again
        due = self._since + self._seconds
        if self._loop.time() >= due:
            self._timed_out = True
            assert self._task is not None
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(due, self._fire)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _new_spool(folder: str | None) -> BinaryIO:
    """An anonymous file (no name: nothing to sweep, gone with the process) on the store's disk."""
    return cast(BinaryIO, tempfile.TemporaryFile(dir=folder, prefix="castore-upload-"))


class UploadReader(io.RawIOBase):
    """The decoded content of a PUT, checked against its hints as it is read."""

    def __init__(
        self,
        raw: BinaryIO,
        *,
        encoding: str,
        logical_size: int | None,
        sha256: str | None,
        max_size: int | None = None,
        too_large: str = "",
        max_window: int | None = MAX_ZSTD_WINDOW,
    ) -> None:
        super().__init__()
        self._encoding = encoding
        self._max_size = max_size
        self._too_large = too_large or f"the content is larger than {max_size} bytes"
        self._sha256 = hashlib.sha256() if sha256 else None
        self._expected_sha256 = (sha256 or "").lower()
        if encoding == "zstd" and logical_size is None:
            raise SourceError("a zstd body needs a Logical-Size header")
        self._content = Sized(decoded(raw, encoding, max_window=max_window), logical_size)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = self._content.readinto(buffer)
        except SizeMismatch as e:
            if e.longer:
                raise SourceError(f"the body decodes to more than its Logical-Size of {e.promised} bytes") from None
            what = "is truncated" if self._encoding != "identity" else "is short"
            raise SourceError(
                f"the {self._encoding} body {what}: {e.delivered} of its Logical-Size {e.promised} bytes"
            ) from None
        if n:
            if self._max_size is not None and self._content.delivered > self._max_size:
                raise UploadTooLarge(self._too_large)
            if self._sha256 is not None:
                self._sha256.update(memoryview(buffer)[:n])
            return n
        if self._sha256 is not None and self._sha256.hexdigest() != self._expected_sha256:
            raise SourceError("the body does not match its SHA256-Checksum")
        return 0

    def read_whole(self, size: int) -> bytes:
        """The whole content of a body promised to hold ``size`` bytes, every check made.

        The reader raises as soon as the content passes ``size``, and at its end when it is
        shorter or does not match its SHA-256: reading to the end is what checks it.
        """
        parts = []
        while chunk := self.read(size + 1):
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
