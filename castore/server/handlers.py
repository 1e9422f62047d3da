"""The HTTP server: the Filetracker v2 protocol over a castore store (Starlette ASGI app).

Handlers only translate HTTP to store calls and back; errors become statuses in one
place (:func:`_error_response`), always with a one-line ``X-Exception`` header and
never a traceback. Blocking store calls run in worker threads.

Endpoints (``docs/protocol.md`` has the details):

* ``GET /version`` — ``{"protocol_versions": [2]}``
* ``GET|HEAD|PUT|DELETE /files/<path>`` — content, with ``?last_modified=<RFC 2822>``
* ``GET /list/<dir>`` — current files below a folder, one relative path per line
* ``PUT /batch/`` — castore's own: many small files in one request (:mod:`castore.batch`)
* ``GET /health``, ``GET /metrics`` — liveness and Prometheus metrics
* ``GET /ui/`` — a read-only web page (:mod:`castore.server.ui`)

With ``migrate_from`` the app moves files in from an old Filetracker server as they
are asked for (:mod:`castore.migration.live`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast
from urllib.parse import unquote_to_bytes

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..batch import MAX_BATCH_BYTES, MAX_FILE_SIZE, BatchLimits, store_batch
from ..blobs.fs import FileBlobBackend
from ..blobs.memory import MemoryBlobBackend
from ..codec import Codec, compressed_chunks
from ..content_coding import CODINGS, max_frame_size
from ..digests import content_digest
from ..errors import (
    Busy,
    CastoreError,
    CorruptBlob,
    FiletrackerError,
    IntegrityError,
    InvalidName,
    MissingBlob,
    NotFound,
    ReadOnlyStore,
    SourceError,
    StoreFull,
    UploadTimeout,
    UploadTooLarge,
    WouldWait,
)
from ..faults import as_store_fault, on_read_only_filesystem
from ..keys import BlobKey
from ..names import check_prefix, parse_name
from ..protocol import (
    CONTENT_DIGEST_HEADER,
    PROTOCOL_VERSIONS,
    accepted_encodings,
    format_content_digest,
    format_version,
    parse_size_header,
    parse_version_date,
    path_from_url,
    quote_path,
)
from ..reading import BlobReader
from ..sizes import WHOLE_IN_MEMORY
from .auth import TokenAuth
from .conditional import has_conditions, precondition, range_holds
from .hosts import LOCAL_NAMES, AllowedHosts, default_allowed_hosts
from .httptools import DEFAULT_HEADER_TIMEOUT, HEADER_TIMEOUT_VARIABLE
from .metrics import Metrics
from .tokens import DEFAULT_CACHE_SECONDS, TokenCache
from .upload import MemoryBudget, ReceivedBody, UploadLimits, UploadReader, receive_body

if TYPE_CHECKING:  # imported when used: a server starts without them (see _OnFirstRequest)
    from ..migration.live import LiveMigration, MigrationLimits
    from ..store import Store

T = TypeVar("T")

__all__ = ["app_from_environment", "batch_limits", "create_app", "early_answers", "version_answer"]


def batch_limits(limits: UploadLimits) -> BatchLimits:
    """What one ``PUT /batch/`` may hold on a server with these upload limits."""
    upload_cap = limits.max_upload_size
    return BatchLimits(
        max_bytes=min(MAX_BATCH_BYTES, upload_cap) if upload_cap is not None else MAX_BATCH_BYTES,
        max_file_size=min(MAX_FILE_SIZE, upload_cap) if upload_cap is not None else MAX_FILE_SIZE,
        max_zstd_window=limits.max_zstd_window,
    )


def version_answer(*, read_only: bool, batch: BatchLimits) -> dict[str, Any]:
    """``GET /version``: Filetracker clients read only ``protocol_versions``; castore's client
    looks for the ``castore`` key to know it may send zstd and chunked uploads, and
    ``batch``: ``PUT /batch/`` is served, with these limits (castore/batch.py)."""
    features: dict[str, Any] = {"upload_encodings": ["zstd", "gzip"]}
    if not read_only:
        features["batch"] = batch.advertised()
    return {"protocol_versions": PROTOCOL_VERSIONS, "castore": features}

GZIP_LEVEL = 1
SMALL_BODY = WHOLE_IN_MEMORY
"""Files up to this size are read whole (and so verified whole) and sent in one response body."""
HEAVY_UPLOADS = 4
"""Compressed or large uploads stored at once per worker (each holds a decoder, a compressor
and 1 MiB buffers; a zstd decoder up to an 8 MiB window): about 12 MiB each at most."""

log = logging.getLogger(__name__)

VERIFY_FIRST = ("auto", "always", "never")
"""When a streamed response is verified whole before its headers are sent (see :func:`create_app`)."""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _one_line(message: str) -> str:
    line = " ".join(str(message).split())
    return line.encode("latin-1", "replace").decode("latin-1")[:500]


_STATUSES: list[tuple[type[Exception], int]] = [
    (NotFound, 404),
    (UploadTooLarge, 413),
    (UploadTimeout, 408),
    (InvalidName, 400),
    (SourceError, 400),
    (Busy, 503),
    (FiletrackerError, 502),  # the old server of a live migration failed
    (ReadOnlyStore, 403),
    (StoreFull, 507),
    (CastoreError, 500),
]
_CLOSE_AFTER = {408, 413, 421, 507}
"""Statuses that may come before the whole body was read: close rather than drain it."""


def _error_response(error: Exception) -> Response:
    """The one place where exceptions become HTTP statuses."""
    if not isinstance(error, (_HTTPError, CastoreError)):
        error = as_store_fault(error) or error  # ENOSPC, SQLITE_FULL, EROFS: say so
    if isinstance(error, _HTTPError):
        status = error.status
    elif isinstance(error, IntegrityError):
        # The details name blob keys and server folders: they go to the log, not to clients.
        log.error("castore: %s", error)
        status = 500
        if isinstance(error, CorruptBlob):
            error = Exception("the stored content failed verification and was not sent (run castore check)")
        elif isinstance(error, MissingBlob):
            error = Exception("the stored content is missing (run castore check)")
        else:
            error = Exception("the stored content is damaged (run castore check)")
    else:
        status = next((code for kind, code in _STATUSES if isinstance(error, kind)), 0)
        if not status:
            status, error = 500, Exception(f"internal error: {type(error).__name__}")
    message = _one_line(str(error))
    headers = {"X-Exception": message}
    if isinstance(error, Busy):
        headers["Retry-After"] = str(error.retry_after)
    if status in _CLOSE_AFTER:
        headers["Connection"] = "close"
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


def _int_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    try:
        return parse_size_header(value)
    except ValueError:
        raise _HTTPError(400, f"invalid {name} header {value!r}: expected decimal digits") from None


_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
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
            raise _HTTPError(416, f"range {header!r} is not satisfiable: the file is empty")
        return max(size - int(last), 0), size
    start = int(first)
    end = int(last) + 1 if last else size
    if start >= size or end <= start:
        raise _HTTPError(416, f"range {header!r} is not satisfiable for {size} bytes")
    return start, min(end, size)


def _content(reader: BlobReader, *, start: int = 0, limit: int | None = None) -> Iterator[bytes]:
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


def _passes_through(reader: BlobReader, frames: bool) -> bool:
    """Whether the answer is the stored zstd frames as they are: the client may take them
    (``frames``: it accepts zstd, and wants the whole content) and the file is stored so."""
    return frames and reader.codec is Codec.ZSTD


def _stored_frames(reader: BlobReader) -> Iterator[bytes]:
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


def _gzip(reader: BlobReader) -> Iterator[bytes]:
    return compressed_chunks(_content(reader), zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31))


class FiletrackerApp:
    """Request handlers bound to one store."""

    def __init__(
        self,
        store: Store,
        *,
        fallback_url: str | None,
        metrics: Metrics,
        gzip: bool,
        migration: LiveMigration | None = None,
        limits: UploadLimits | None = None,
        spool_dir: str | None = None,
        verify_first: str = "auto",
    ) -> None:
        if verify_first not in VERIFY_FIRST:
            raise ValueError(f"verify_first must be one of {', '.join(VERIFY_FIRST)}, not {verify_first!r}")
        limits = limits or UploadLimits()
        self.store = store
        self.migration = migration
        self.gzip = gzip
        self.verify_first = verify_first
        self.fallback_url = fallback_url.rstrip("/") if fallback_url else None
        self.metrics = metrics
        self.limits = limits
        self.spool_dir = spool_dir
        self.budget = MemoryBudget(limits.memory_budget)
        self._heavy_uploads: anyio.CapacityLimiter | None = None
        self.batch_limits = batch_limits(limits)
        self.inline_max = store.settings()["inline_max"]
        self.loop_puts = store.metadata.local_reads and isinstance(store.blobs, (FileBlobBackend, MemoryBlobBackend))
        """Small puts may be stored on the event loop (:meth:`_store_on_loop`); tests turn it off."""

    @property
    def heavy_uploads(self) -> anyio.CapacityLimiter:
        """Threads for storing compressed or large bodies: a few at a time, to bound memory.

        Made on first use, inside the event loop (anyio needs one to make a limiter).
        Small plain bodies, and every other request, use anyio's default threads.
        """
        if self._heavy_uploads is None:
            self._heavy_uploads = anyio.CapacityLimiter(HEAVY_UPLOADS)
        return self._heavy_uploads

    async def version(self, request: Request) -> Response:
        return JSONResponse(version_answer(read_only=self.store.read_only, batch=self.batch_limits))

    async def put_batch(self, request: Request) -> Response:
        """``PUT /batch/``: many small files in one body, one commit (:mod:`castore.batch`)."""
        if self.store.read_only:
            raise ReadOnlyStore("the store is served read-only: PUT and DELETE are refused")
        if request.headers.get("content-encoding", "identity").strip().lower() != "identity":
            raise _HTTPError(415, "a batch body is not content-coded: each file says its own encoding")
        content_length = _int_header(request, "content-length")
        limits = self.batch_limits
        if content_length is not None and content_length > limits.max_bytes:
            raise UploadTooLarge(f"the batch is {content_length} bytes, over this server's limit of {limits.max_bytes}")
        received = await receive_body(
            request.stream(), content_length=content_length,
            limits=dataclasses.replace(self.limits, max_upload_size=limits.max_bytes),
            budget=self.budget, spool_dir=self.spool_dir,
        )
        try:
            names = await anyio.to_thread.run_sync(
                store_batch, self.store, received.open(), received.size, limits, limiter=self.heavy_uploads
            )
        finally:
            received.close()
        return JSONResponse({"files": [{"stored": name} for name in names]})

    async def files(self, request: Request) -> Response:
        path = path_from_url(request.path_params["path"])
        method = request.method
        if method in ("GET", "HEAD"):
            return await self._get(request, path)
        if method == "PUT":
            return await self._put(request, path)
        return await self._delete(request, path)

    def _open(self, path: str, frames: bool) -> tuple[BlobReader, bytes | None]:
        """Open a file; read it whole at once (verified) when it is small (:meth:`_open_reader`)."""
        return self._open_reader(self.store.open_file(path), frames)

    def _verify_span(self, path: str, version: int, start: int, end: int) -> None:
        """Read and verify content bytes ``[start, end)`` of ``path@version`` (before any header is sent)."""
        with self.store.open_file(f"{path}@{version}") as reader:
            if start:
                reader.seek_content(start)
            remaining = end - start
            for chunk in reader.chunks():
                remaining -= len(chunk)
                if remaining <= 0:
                    break

    @staticmethod
    def _open_reader(reader: BlobReader, frames: bool) -> tuple[BlobReader, bytes | None]:
        """The reader and, for a file up to SMALL_BODY, the whole answer body, verified
        before any header is sent (damage: CorruptBlob, a 500): its stored zstd frames when
        ``frames`` (the client accepts zstd and asked no range) and it is stored so
        (:func:`_passes_through`), else its content. A larger file is streamed: None."""
        if reader.size > SMALL_BODY:
            return reader, None
        with reader:
            return reader, b"".join(reader.verified_stored()) if _passes_through(reader, frames) else reader.read()

    def _open_small(self, path: str, frames: bool) -> tuple[BlobReader, bytes | None] | None:
        """Open a file on the event loop when its bytes and digests are in the metadata row.

        A lookup by primary key plus at most 128 KiB from SQLite's page cache takes
        ~0.1 ms, less than the hop to a worker thread. Files stored as blob files go
        to a thread (returns None), since reading them may wait for the disk, and so
        do blobs without digests yet (recording them is a write that may wait), and
        every file when the metadata is not local (PostgreSQL: a network round trip).
        """
        if not self.store.metadata.local_reads:
            return None
        entry = self.store.lookup(path)
        if entry.blob.data is None or entry.blob.digests is None:
            return None
        return self._open_reader(self.store.open_entry(entry), frames)

    def _headers(self, version: int, size: int, key: BlobKey, digests: bytes | None) -> dict[str, str]:
        headers = {
            "Last-Modified": format_version(version),
            "Logical-Size": str(size),
            "Accept-Ranges": "bytes",
            "ETag": f'"{self.store.etag(key)}"',
            "Vary": "Accept-Encoding",  # the same URL answers zstd, gzip or identity: caches must key on it
        }
        if digests is not None:
            headers[CONTENT_DIGEST_HEADER] = format_content_digest(content_digest(digests))
        return headers

    def _head(self, path: str, request: Request) -> Response:
        """A HEAD answer from the metadata alone (a primary-key lookup: on the event loop)."""
        entry = self.store.lookup(path)
        headers = self._headers(entry.version, entry.blob.size, entry.blob.key, entry.blob.digests)
        not_modified = self._precondition(request, headers, entry.version)
        if not_modified is not None:
            return not_modified
        headers["Content-Length"] = str(entry.blob.size)
        return Response(status_code=200, headers=headers, media_type="application/octet-stream")

    async def _head_soon(self, path: str, request: Request) -> Response:
        """:meth:`_head` on the event loop for local metadata, else in a thread."""
        if self.store.metadata.local_reads:
            return self._head(path, request)
        return await anyio.to_thread.run_sync(self._head, path, request)

    @staticmethod
    def _precondition(request: Request, headers: dict[str, str], version: int) -> Response | None:
        """The answer a GET or HEAD gets instead of the file by its conditional headers
        (:mod:`castore.server.conditional`): a 304 with the file's validators and no body, or
        None (answer as usual); a failed If-Match or If-Unmodified-Since raises 412."""
        if not has_conditions(request.scope["headers"]):
            return None
        status = precondition(request.headers, headers["ETag"], version)
        if status == 412:
            raise _HTTPError(412, "precondition failed: the file's current version does not match If-Match "
                                  "or If-Unmodified-Since")
        if status == 304:
            return Response(status_code=304, headers=headers)
        return None

    async def _get(self, request: Request, path: str) -> Response:
        media = "application/octet-stream"
        accepted = accepted_encodings(request.headers.get("accept-encoding"))
        frames = "zstd" in accepted and "range" not in request.headers  # stored zstd frames may go out as they are
        try:
            if request.method == "HEAD":
                return await self._head_soon(path, request)
            small = self._open_small(path, frames)
            if small is None:
                small = await anyio.to_thread.run_sync(self._open, path, frames)
            reader, body = small
        except NotFound:
            if self.migration is not None and await _while_connected(request, self.migration.fetch(path)):
                if request.method == "HEAD":
                    return await self._head_soon(path, request)
                reader, body = await anyio.to_thread.run_sync(self._open, path, frames)
            elif self.fallback_url is not None:
                return RedirectResponse(self._fallback_location(request, path), status_code=307)
            else:
                raise
        headers = self._headers(reader.version, reader.size, reader.key, reader.digests)
        range_header = request.headers.get("range")
        try:
            not_modified = self._precondition(request, headers, reader.version)
            if not_modified is not None:
                reader.close()
                return not_modified
            if range_header and not range_holds(request.headers.get("if-range"), headers["ETag"]):
                range_header = None  # a validator of another content: the whole new one, never a splice
            span = _parse_range(range_header, reader.size) if range_header else None
            if body is None and self._verifies_first(accepted):
                start, end = span or (0, reader.size)
                await anyio.to_thread.run_sync(self._verify_span, path, reader.version, start, end)
        except BaseException:
            reader.close()
            raise
        if span is not None:
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{reader.size}"
            headers["Content-Length"] = str(end - start)
            if body is not None:  # a small file's content, read whole
                return Response(body[start:end], status_code=206, headers=headers, media_type=media)
            part = _content(reader, start=start, limit=end - start)
            return StreamingResponse(part, status_code=206, headers=headers, media_type=media)
        if body is not None:
            if _passes_through(reader, frames):
                headers["Content-Encoding"] = "zstd"
            return Response(body, headers=headers, media_type=media)
        codec = reader.codec.value
        if _passes_through(reader, "zstd" in accepted):
            headers.update({"Content-Encoding": "zstd", "Content-Length": str(reader.stored_size)})
            return StreamingResponse(_stored_frames(reader), headers=headers, media_type=media)
        if codec == Codec.ZSTD.value and "gzip" in accepted and self.gzip:
            headers["Content-Encoding"] = "gzip"
            return StreamingResponse(_gzip(reader), headers=headers, media_type=media)
        headers["Content-Length"] = str(reader.size)
        return StreamingResponse(_content(reader), headers=headers, media_type=media)

    def _fallback_location(self, request: Request, path: str) -> str:
        """Where a missing ``path`` is on the ``--fallback-url`` server: the path castore looked
        up, percent-encoded again (a decoded ``?``, ``#`` or ``%41`` would name another file
        there), with the query the client sent (``?last_modified=…``)."""
        query = request.scope.get("query_string", b"").decode("latin-1")
        return f"{self.fallback_url}/files{quote_path(path)}" + (f"?{query}" if query else "")

    def _verifies_first(self, accepted: set[str]) -> bool:
        """Whether to verify a streamed body whole before sending headers (an extra read).

        ``auto``: for clients that do not accept zstd. castore's client accepts zstd and
        checks what it receives before it keeps a byte, so an aborted stream costs it
        nothing; a client such as Filetracker's writes into its destination as bytes
        arrive, so it must get an error status instead of a body cut short.
        """
        return self.verify_first == "always" or (self.verify_first == "auto" and "zstd" not in accepted)

    async def _put(self, request: Request, path: str) -> Response:
        if self.store.read_only:
            raise ReadOnlyStore("the store is served read-only: PUT and DELETE are refused")
        version = parse_version_date(request.query_params.get("last_modified"))
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in CODINGS:
            raise _HTTPError(415, f"unsupported Content-Encoding {encoding!r}")
        content_length = _int_header(request, "content-length")
        logical_size = _int_header(request, "logical-size")
        limit = self.limits.max_upload_size
        for declared in (content_length, logical_size):
            if limit is not None and declared is not None and declared > limit:
                raise UploadTooLarge(f"the upload is {declared} bytes, over this server's limit of {limit} bytes")
        if logical_size is None and encoding == "identity":
            logical_size = content_length
        if encoding == "zstd" and logical_size is None:
            raise SourceError("a zstd body needs a Logical-Size header")
        sha256 = request.headers.get("sha256-checksum")
        received = await receive_body(
            request.stream(),
            content_length=content_length,
            limits=self.limits,
            budget=self.budget,
            spool_dir=self.spool_dir,
        )
        try:
            name = self._store_on_loop(path, version, received, encoding, logical_size, sha256)
            if name is None:
                name = await anyio.to_thread.run_sync(
                    self._store_body, path, version, received, encoding, logical_size, sha256,
                    limiter=self.heavy_uploads if encoding != "identity" or received.spooled else None,
                )
        finally:
            received.close()
        stored = parse_name(name).version
        assert stored is not None
        return Response(status_code=200, headers={"Last-Modified": format_version(stored)}, media_type="text/plain")

    def _store_on_loop(
        self, path: str, version: int, received: ReceivedBody, encoding: str, logical_size: int | None,
        sha256: str | None,
    ) -> str | None:
        """Store a small body on the event loop when nothing there can wait; None: use a thread.

        The hop to a worker thread and back costs more than storing a small content
        (decoding, hashing and one SQLite transaction: well under a millisecond), so a
        body kept in memory whose content is stored inline in a local SQLite database is
        stored here, at once. Nothing here may wait: the write goes ahead only when the
        database's write lock is free at once (:meth:`MetadataRepo.not_waiting`); when
        another writer holds it, nothing was written and the same work is done in a thread
        (which waits its turn). Bodies in a spool file, bodies far larger than the content
        they declare, contents stored as blob files, and stores whose metadata or blobs are
        not local always go to a thread.
        """
        if not self.loop_puts or received.spooled or logical_size is None or logical_size > self.inline_max:
            return None
        if received.size > max_frame_size(logical_size):
            # a body far larger than its content (e.g. 1 MiB of empty zstd frames: ~1 s to decode) is
            # decoded in a thread: the work done here stays bounded by the content's size
            return None
        try:
            with self.store.metadata.not_waiting():
                return self._store_body(path, version, received, encoding, logical_size, sha256)
        except WouldWait:
            return None

    def _store_body(
        self, path: str, version: int, received: ReceivedBody, encoding: str, logical_size: int | None,
        sha256: str | None,
    ) -> str:
        """Decode, check and store a received body (in a worker thread: no network waits here)."""
        limits = self.limits
        if encoding == "zstd" and logical_size is not None and sha256 is None:
            # castore's client: keep its frame as the stored bytes, decode only to verify
            return self.store.put_zstd(
                path, received.open(), version, size=logical_size, max_window=limits.max_zstd_window
            )
        if encoding == "identity" and sha256 is None:
            data = received.in_memory
            source = data if data is not None else received.open()  # a file: hashed first, dedup'd
            return self.store.put(path, source, version, expected_size=logical_size)
        max_size, too_large = limits.max_upload_size, f"the content is over this server's limit of {limits.max_upload_size} bytes"
        if logical_size is None and encoding != "identity":
            cap = max(limits.max_expansion * received.size, limits.expansion_floor)
            if max_size is None or cap < max_size:
                max_size = cap
                too_large = (
                    f"the {encoding} body decodes to more than {cap} bytes ({limits.max_expansion} times its size); "
                    "send its Logical-Size to store it"
                )
        body = UploadReader(
            received.open(),
            encoding=encoding,
            logical_size=logical_size,
            sha256=sha256,
            max_size=max_size,
            too_large=too_large,
            max_window=limits.max_zstd_window,
        )
        if logical_size is not None and logical_size <= self.inline_max:
            # Small (Filetracker's client: gzip with its SHA-256): decoded and checked whole
            # first, then stored as bytes, which spares the store a stream's extra lookup.
            return self.store.put(path, body.read_whole(logical_size), version, expected_size=logical_size)
        return self.store.put(path, cast(BinaryIO, body), version)  # the reader holds it to its Logical-Size

    async def _delete(self, request: Request, path: str) -> Response:
        if self.store.read_only:
            raise ReadOnlyStore("the store is served read-only: PUT and DELETE are refused")
        version = parse_version_date(request.query_params.get("last_modified"))
        if self.migration is None:
            await anyio.to_thread.run_sync(self.store.delete, path, version)
        else:
            await self.migration.delete(path, version)
        return Response(status_code=200, media_type="text/plain")

    async def list(self, request: Request) -> Response:
        raw = request.path_params.get("path", "")
        directory = check_prefix("/" + raw.strip("/") if raw.strip("/") else "/")
        text = request.query_params.get("last_modified")
        cutoff = parse_version_date(text) if text else int(time.time())

        try:
            if self.migration is not None:
                paths = await _while_connected(request, self.migration.list_folder(directory, cutoff))
            else:
                paths = await anyio.to_thread.run_sync(lambda: self.store.list_folder(directory, max_version=cutoff))
        except NotFound:
            raise _HTTPError(400, "Path doesn't exist or is not a directory") from None
        return Response("".join(p + "\n" for p in paths), media_type="text/plain; charset=utf-8")

    async def health(self, request: Request) -> Response:
        try:
            await anyio.to_thread.run_sync(self.store.exists, "/health-check")
        except Exception as e:  # noqa: BLE001 - any failure means unhealthy
            return JSONResponse({"status": "error", "error": _one_line(str(e))}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(self, request: Request) -> Response:
        usage = await anyio.to_thread.run_sync(self.store.usage)
        text = self.metrics.render(usage) + (self.migration.render_metrics() if self.migration else "")
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def _while_connected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` (a call to a live migration's old server), given up if the client hangs up.

    A GET has no body, so ``receive`` has nothing more to give but ``http.disconnect``;
    a call given up this way stops reading from the old server (see ``LiveMigration``).
    The answer then goes nowhere: a 499 (nginx's "client closed request") for the metrics.
    """
    done: list[T] = []
    failed: list[Exception] = []  # raised after the task group (which would wrap it in an ExceptionGroup)
    async with anyio.create_task_group() as tasks:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            tasks.cancel_scope.cancel()

        tasks.start_soon(watch)
        try:
            done.append(await work)
        except Exception as e:  # noqa: BLE001 - raised again below
            failed.append(e)
        finally:
            tasks.cancel_scope.cancel()
    if failed:
        raise failed[0]
    if not done:
        raise _HTTPError(499, "the client hung up before the old server answered")
    return done[0]


class _HotFiles:
    """ASGI: requests to ``/files/…`` go straight to their handler, past Starlette's router.

    They are what a contest system sends all day (small puts and gets); a profile of
    ``castore serve`` answering them showed Starlette's exception middleware, router and
    endpoint wrapper as a cost of their own. The answer is the general path's: the same
    handler, the same :func:`_error_response` for an error raised before the response
    starts, and an unexpected error is re-raised after its 500 (for uvicorn to log it), as
    Starlette's ``ServerErrorMiddleware`` does; an error after the response started aborts
    the connection. Authentication and the other middleware wrap this app, unchanged.
    Every other request (and a path Starlette's ``{path:path}`` would not match: one with
    a newline) goes to the Starlette app.
    """

    METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})

    def __init__(self, app: ASGIApp, handlers: FiletrackerApp, base: str) -> None:
        self.app = app
        self.handlers = handlers
        self.prefix = base + "/files/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.METHODS:
            await self.app(scope, receive, send)
            return
        route_path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and route_path.startswith(root_path + "/"):
            route_path = route_path[len(root_path):]  # as Starlette's router sees it
        if not route_path.startswith(self.prefix) or "\n" in route_path:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"path": route_path[len(self.prefix):]}
        try:
            response = await self.handlers.files(Request(scope, receive, send))
        except Exception as error:
            await _error_response(error)(scope, receive, send)
            if not isinstance(error, (CastoreError, _HTTPError)):
                raise
            return
        await response(scope, receive, send)


class _StrictUrl:
    """ASGI middleware: a URL path must percent-decode to valid UTF-8.

    uvicorn decodes ``%ff`` and ``%c0%ae`` to U+FFFD, which would make different
    URLs name the same file; the raw path is checked here and such a request answers 400.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or b""
            try:
                unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                response = _error_response(_HTTPError(400, "the URL path is not valid UTF-8 once percent-decoded"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _AllowedHost:
    """ASGI middleware: answer only requests whose ``Host`` names this server (:mod:`castore.server.hosts`).

    The guard against DNS rebinding: a web page that made its own name resolve to this
    server's address gets 421 (400 for HTTP/1.1 without ``Host``, or two of them),
    before authentication and before any handler runs.
    """

    def __init__(self, app: ASGIApp, hosts: AllowedHosts) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.hosts.refusal(scope["headers"], scope.get("http_version", "1.1"))
            if refused is not None:
                await _error_response(_HTTPError(*refused))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Metered:
    """ASGI middleware: counts requests, bytes in and out, and latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 500, "bytes_out": 0, "bytes_in": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["bytes_in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            self.metrics.observe(
                scope.get("method", "?"),
                int(state["status"]),
                time.perf_counter() - started,
                int(state["bytes_in"]),
                int(state["bytes_out"]),
            )


def create_app(
    store: Store,
    *,
    fallback_url: str | None = None,
    prefix: str = "",
    gzip: bool = False,
    close_store: bool = False,
    migrate_from: str | None = None,
    migration_limits: MigrationLimits | None = None,
    token_cache_seconds: float = DEFAULT_CACHE_SECONDS,
    limits: UploadLimits | None = None,
    spool_dir: str | None = None,
    verify_first: str = "auto",
    lean: bool = True,
    loop_puts: bool = True,
    allowed_hosts: AllowedHosts | None = None,
) -> ASGIApp:
    """The ASGI app serving ``store``; ``prefix`` (e.g. ``/ft``) mounts it below a path.

    Once the store has an access token, every request but ``/health`` needs one
    (:mod:`castore.server.auth`); a worker rereads the tokens every ``token_cache_seconds``.

    ``limits``: what one upload may cost (timeouts, sizes, zstd window); ``spool_dir``:
    where bodies too large to keep in memory wait while they arrive (the store's folder,
    so that a full disk answers 507; None: the system's temporary folder).

    ``close_store``: the app owns the store and closes it when the server shuts down
    (SQLite then folds its write-ahead log back into the database file).

    ``gzip``: compress compressible large files on the fly for clients that accept gzip
    but not zstd. Off by default: gzip -1 runs at ~110 MB/s here, slower than sending the
    bytes as they are on loopback or a LAN (see ``benchmarks/server.py``).

    ``migrate_from``: an old Filetracker server whose files move in on a miss;
    ``migration_limits``: what calls to it may cost (timeouts, threads, queue), and what it
    sends is held to ``limits`` as an upload is.

    ``verify_first``: every byte sent is verified first in any case; a file over 1 MiB
    goes out chunk by chunk and a damaged chunk aborts the connection. ``auto`` (the
    default) also reads the whole response once before its headers for clients that do
    not accept zstd (Filetracker's client), so they get a 500 instead of a cut body;
    ``always`` does so for every client, ``never`` for none.

    ``lean``: answer ``/files/`` requests past Starlette's router (:class:`_HotFiles`);
    False sends them through it like every other request (the tests compare the two).

    ``loop_puts``: store small bodies on the event loop when the database is free at once
    (:meth:`FiletrackerApp._store_on_loop`); False stores every body in a worker thread
    (the tests compare the two).

    ``allowed_hosts``: the ``Host`` values answered, others get 421 before anything else
    (:mod:`castore.server.hosts`); None answers any (the app does not know the names it is
    served by: ``castore serve`` passes its own, see :func:`app_from_environment`).
    """
    metrics = Metrics()
    migration = None
    if migrate_from:
        from ..migration.live import LiveMigration

        migration = LiveMigration(store, migrate_from, limits=migration_limits, uploads=limits)
    handlers = FiletrackerApp(
        store, fallback_url=fallback_url, metrics=metrics, gzip=gzip, migration=migration,
        limits=limits or UploadLimits(), spool_dir=spool_dir, verify_first=verify_first,
    )
    handlers.loop_puts = handlers.loop_puts and loop_puts
    routes: list[BaseRoute] = [
        Route("/version", handlers.version, methods=["GET"]),
        Route("/version/", handlers.version, methods=["GET"]),
        Route("/files/{path:path}", handlers.files, methods=["GET", "HEAD", "PUT", "DELETE"]),
        Route("/batch/", handlers.put_batch, methods=["PUT"]),  # castore's own: castore/batch.py
        Route("/list", handlers.list, methods=["GET"]),
        Route("/list/{path:path}", handlers.list, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/metrics", handlers.metrics_endpoint, methods=["GET"]),
        Mount("/ui", app=_OnFirstRequest(lambda: _ui_app(store))),  # the read-only web page (castore/ui.py)
    ]
    if prefix.strip("/"):
        routes = [Mount("/" + prefix.strip("/"), routes=routes)]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        detail = "method not allowed" if status == 405 else f"unknown endpoint {request.url.path!r}"
        response = _error_response(_HTTPError(status, detail))
        if status == 405 and hasattr(exc, "headers") and exc.headers:
            response.headers.update(exc.headers)
        return response

    async def error(request: Request, exc: Exception) -> Response:
        return _error_response(exc)

    handlers_by_error: dict[Any, Any] = {
        404: not_found,
        405: not_found,
        CastoreError: error,
        _HTTPError: error,
        Exception: error,  # unexpected: a one-line 500, logged by uvicorn
    }
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if migration is not None:
            migration.close()
        if close_store:
            store.close()

    app = Starlette(routes=routes, exception_handlers=handlers_by_error, lifespan=lifespan)
    app.state.store = store
    base = "/" + prefix.strip("/") if prefix.strip("/") else ""
    tokens = TokenCache(store.metadata.token_roles, seconds=token_cache_seconds)
    inner: ASGIApp = _HotFiles(app, handlers, base) if lean else app
    guarded: ASGIApp = TokenAuth(_StrictUrl(inner), tokens, open_paths=frozenset({f"{base}/health"}))
    if allowed_hosts is not None and not allowed_hosts.any:
        guarded = _AllowedHost(guarded, allowed_hosts)
    return _Metered(guarded, metrics)


class _OnFirstRequest:
    """An ASGI app built when its first request comes: the web page (Jinja2 and its
    templates, ~0.1 s) is not loaded by a server that nobody browses, nor before the
    server's first answer."""

    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)


def _ui_app(store: Store) -> ASGIApp:
    from .ui import ui_mount

    return ui_mount(store).app


def app_from_environment() -> ASGIApp:
    """App factory for the workers, configured by ``CASTORE_*`` variables (set by :func:`serve`).

    The store must exist (made by ``castore init`` or ``serve --init``).
    ``CASTORE_TOKEN_CACHE_SECONDS`` (default 5) sets how soon a new or revoked access
    token takes effect on every worker. ``CASTORE_VERIFY_FIRST`` is ``auto``, ``always``
    or ``never`` (see :func:`create_app`). ``CASTORE_ALLOWED_HOSTS``: the ``Host`` values
    answered, comma-separated (:mod:`castore.server.hosts`); unset or empty, only the loopback names.
    """
    from ..opening import open_store  # SQLAlchemy: each worker loads it while answering /version/

    env = os.environ
    read_only = env.get("CASTORE_READ_ONLY") == "1"
    store = open_store(
        env.get("CASTORE_ROOT") or None,
        metadata=env.get("CASTORE_METADATA") or None,
        blobs=env.get("CASTORE_BLOBS") or None,
        read_only=True if read_only else None,
    )
    store.metadata.checkpoint_in_background()  # SQLite's log is copied back by a thread, not inside puts
    spool_root = env.get("CASTORE_ROOT") or ""  # large uploads spool beside the store folder, if any
    max_upload = env.get("CASTORE_MAX_UPLOAD_SIZE")
    limits = UploadLimits(
        body_timeout=float(env.get("CASTORE_BODY_TIMEOUT", UploadLimits.body_timeout)),
        max_upload_size=int(max_upload) if max_upload else None,
        max_zstd_window=int(env.get("CASTORE_MAX_ZSTD_WINDOW", UploadLimits.max_zstd_window)),
    )
    migrate_from = env.get("CASTORE_MIGRATE_FROM") or None
    migration_limits = None
    if migrate_from:
        from ..migration.live import MigrationLimits

        migration_limits = MigrationLimits.from_environment(env)
    return create_app(
        store,
        fallback_url=env.get("CASTORE_FALLBACK_URL") or None,
        prefix=env.get("CASTORE_URL_PREFIX", ""),
        gzip=env.get("CASTORE_GZIP") == "1",
        close_store=True,
        migrate_from=migrate_from,
        migration_limits=migration_limits,
        token_cache_seconds=float(env.get("CASTORE_TOKEN_CACHE_SECONDS") or DEFAULT_CACHE_SECONDS),
        limits=limits,
        spool_dir=None if store.read_only or not os.path.isdir(spool_root) else os.path.abspath(spool_root),
        verify_first=env.get("CASTORE_VERIFY_FIRST", "auto"),
        allowed_hosts=AllowedHosts.parse((env.get("CASTORE_ALLOWED_HOSTS") or ",".join(LOCAL_NAMES)).split(",")),
    )


def early_answers(prefix: str = "", *, read_only: bool, limits: UploadLimits) -> dict[str, bytes]:
    """What a worker answers to ``GET`` of these paths while its store is still opening
    (:class:`castore.server.serving.PerWorkerApp`): the body :class:`FiletrackerApp` sends, byte for
    byte, for a store served read-only or not, with these upload limits."""
    base = "/" + prefix.strip("/") if prefix.strip("/") else ""
    body = bytes(JSONResponse(version_answer(read_only=read_only, batch=batch_limits(limits))).body)
    return {f"{base}/version": body, f"{base}/version/": body}


def serve(
    root: str | None,
    *,
    metadata: str | None = None,
    blobs: str | None = None,
    host: str = "127.0.0.1",
    port: int = 9999,
    workers: int = 1,
    prefix: str = "",
    fallback_url: str | None = None,
    gzip: bool = False,
    log_level: str = "warning",
    migrate_from: str | None = None,
    migration_limits: MigrationLimits | None = None,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    limits: UploadLimits | None = None,
    read_only: bool = False,
    verify_first: str = "auto",
    sock: socket.socket | None = None,
    early_version: bool = False,
    allowed_hosts: Sequence[str] | None = None,
) -> None:
    """Run the server in the foreground until SIGTERM or SIGINT (``castore.server.serving``).

    The store at ``root`` must exist and be migrated (``castore serve`` opens it once first).
    ``header_timeout``: seconds a connection may take to send a request line and
    headers (408 after); ``limits``: body timeout and upload sizes; ``read_only``:
    serve reads only (PUT and DELETE answer 403) and never change the store;
    ``verify_first``: see :data:`VERIFY_FIRST` (``CASTORE_VERIFY_FIRST`` for the workers).
    ``migrate_from``, ``migration_limits``: see :func:`create_app`.
    ``sock``: a socket already listening (:func:`castore.server.listening.listen`), served
    instead of binding ``host:port``. ``early_version``: each worker answers ``GET
    /version`` while its store is still opening (only for a store without access tokens,
    whose ``/version`` needs none). ``allowed_hosts``: the ``Host`` values answered
    (:mod:`castore.server.hosts`; ``["*"]``: any); None: :func:`castore.server.hosts.default_allowed_hosts`
    for ``host`` (``CASTORE_ALLOWED_HOSTS`` for the workers).
    """
    from .serving import run

    if allowed_hosts is None:
        allowed_hosts = default_allowed_hosts(host, sock.getsockname()[0] if sock is not None else None)
    hosts = AllowedHosts.parse(allowed_hosts)  # ValueError for a malformed entry, before anything starts

    limits = limits or UploadLimits()
    os.environ.update(
        {
            "CASTORE_ROOT": os.path.abspath(root) if root else "",
            "CASTORE_METADATA": metadata or "",
            "CASTORE_BLOBS": blobs or "",
            "CASTORE_URL_PREFIX": prefix,
            "CASTORE_GZIP": "1" if gzip else "0",
            "CASTORE_READ_ONLY": "1" if read_only else "0",
            "CASTORE_VERIFY_FIRST": verify_first,
            "CASTORE_BODY_TIMEOUT": str(limits.body_timeout),
            "CASTORE_MAX_UPLOAD_SIZE": str(limits.max_upload_size or ""),
            "CASTORE_MAX_ZSTD_WINDOW": str(limits.max_zstd_window),
            HEADER_TIMEOUT_VARIABLE: str(header_timeout),
            "CASTORE_ALLOWED_HOSTS": ",".join(allowed_hosts),
        }
    )
    if fallback_url:
        os.environ["CASTORE_FALLBACK_URL"] = fallback_url
    if migrate_from:
        from ..migration.live import MigrationLimits, share_fetch_locks

        os.environ["CASTORE_MIGRATE_FROM"] = migrate_from
        os.environ.update((migration_limits or MigrationLimits()).environment())
        share_fetch_locks()  # the workers fetch a missing path once in all
    run("castore.server.app:app_from_environment", host=host, port=port, workers=workers, log_level=log_level, sock=sock,
        early=early_answers(prefix, read_only=read_only or bool(root and on_read_only_filesystem(root)), limits=limits)
        if early_version else None, early_hosts=hosts)
