"""The request handlers (:class:`FiletrackerApp`): HTTP to store calls and back.

Errors are raised, and become statuses in :mod:`castore.server.statuses`; bodies are
sent by :mod:`castore.server.streaming`. This module is one idea, the Filetracker
endpoints over one store, so it keeps GET (with ranges, conditions, migration and
fallback), PUT (on the loop or in a thread) and DELETE together.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse

from ..batch import MAX_BATCH_BYTES, MAX_FILE_SIZE, BatchLimits
from ..codec import Codec
from ..content_coding import CODINGS, max_frame_size
from ..digests import content_digest
from ..errors import (
    NotFound,
    ReadOnlyStore,
    SourceError,
    UploadTooLarge,
    VersionNotFound,
    WouldWait,
)
from ..faults import locked_out
from ..keys import BlobKey
from ..names import check_prefix, parse_name, parse_version, versioned_name
from ..protocol import (
    CONTENT_DIGEST_HEADER,
    PROTOCOL_VERSIONS,
    VERSION_PARAMETER,
    accepted_encodings,
    format_content_digest,
    format_version,
    parse_version_date,
    path_from_url,
    quote_path,
)
from ..reading import BlobReader
from ..sizes import WHOLE_IN_MEMORY
from .batch import store_batch
from .conditional import has_conditions, precondition, range_holds
from .config import ServerConfig
from .grouping import GroupWriter
from .metrics import Metrics
from .statuses import HTTPError, int_header, one_line
from .streaming import gzipped, lines, parse_range, passes_through, stored_frames, verified_content
from .upload import MemoryBudget, ReceivedBody, UploadLimits, UploadReader, receive_body

if TYPE_CHECKING:  # imported when used: a server starts without them (see OnFirstRequest)
    from ..migration.live import LiveMigration
    from ..store import Store
    from .idle import Activity

T = TypeVar("T")

__all__ = ["FiletrackerApp", "SmallPut", "batch_limits", "version_answer"]


@dataclasses.dataclass(frozen=True)
class SmallPut:
    """A small put waiting for its group (:mod:`castore.server.grouping`): the request's
    path, version and headers, and a reference to its body's bytes (a request that ends
    meanwhile does not take them away)."""

    path: str
    version: int
    body: bytes
    encoding: str
    logical_size: int | None
    sha256: str | None


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
SMALL_BODY = WHOLE_IN_MEMORY
"""Files up to this size are read whole (and so verified whole) and sent in one response body."""
HEAVY_UPLOADS = 4
"""Compressed or large uploads stored at once per worker (each holds a decoder, a compressor
and 1 MiB buffers; a zstd decoder up to an 8 MiB window): about 12 MiB each at most."""




class FiletrackerApp:
    """Request handlers bound to one store."""

    def __init__(
        self,
        store: Store,
        config: ServerConfig,
        *,
        metrics: Metrics,
        migration: LiveMigration | None = None,
        activity: Activity | None = None,
        loop_puts: bool = True,
        group_puts: bool = True,
    ) -> None:
        limits = config.limits
        self.store = store
        self.migration = migration
        self.activity = activity
        """The idle compactor's shared page (``serve --compact-when-idle``), for ``/metrics``."""
        self.gzip = config.gzip
        self.verify_first = config.verify_first
        self.fallback_url = config.fallback_url.rstrip("/") if config.fallback_url else None
        self.metrics = metrics
        self.limits = limits
        self.spool_dir = config.spool_dir
        self.budget = MemoryBudget(limits.memory_budget)
        self._heavy_uploads: anyio.CapacityLimiter | None = None
        self.batch_limits = batch_limits(limits)
        self.inline_max = store.settings()["inline_max"]
        self.loop_puts = loop_puts and store.metadata.local_reads and store.blobs.local
        """Small puts may be stored on the event loop (:meth:`_store_on_loop`); tests turn it off."""
        self.groups: GroupWriter[SmallPut] | None = (
            GroupWriter(self._store_group, self._store_alone, lambda put: len(put.body))
            if self.loop_puts and group_puts else None
        )
        """Small puts that find the database busy are stored together (:mod:`castore.server.grouping`)."""

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
            raise HTTPError(415, "a batch body is not content-coded: each file says its own encoding")
        content_length = int_header(request, "content-length")
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
        (:func:`passes_through`), else its content. A larger file is streamed: None."""
        if reader.size > SMALL_BODY:
            return reader, None
        with reader:
            return reader, b"".join(reader.verified_stored()) if passes_through(reader, frames) else reader.read()

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
            raise HTTPError(412, "precondition failed: the file's current version does not match If-Match "
                                  "or If-Unmodified-Since")
        if status == 304:
            return Response(status_code=304, headers=headers)
        return None

    async def _get(self, request: Request, path: str) -> Response:
        media = "application/octet-stream"
        accepted = accepted_encodings(request.headers.get("accept-encoding"))
        frames = "zstd" in accepted and "range" not in request.headers  # stored zstd frames may go out as they are
        name = _asked_name(request, path)
        try:
            if request.method == "HEAD":
                return await self._head_soon(name, request)
            small = self._open_small(name, frames)
            if small is None:
                small = await anyio.to_thread.run_sync(self._open, name, frames)
            reader, body = small
        except VersionNotFound:
            raise  # the path is here, without that version: nothing for an old server to add
        except NotFound:
            if self.migration is not None and await _while_connected(request, self.migration.fetch(path)):
                if request.method == "HEAD":
                    return await self._head_soon(name, request)
                reader, body = await anyio.to_thread.run_sync(self._open, name, frames)
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
            span = parse_range(range_header, reader.size) if range_header else None
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
            part = verified_content(reader, start=start, limit=end - start)
            return StreamingResponse(part, status_code=206, headers=headers, media_type=media)
        if body is not None:
            if passes_through(reader, frames):
                headers["Content-Encoding"] = "zstd"
            return Response(body, headers=headers, media_type=media)
        codec = reader.codec.value
        if passes_through(reader, "zstd" in accepted):
            headers.update({"Content-Encoding": "zstd", "Content-Length": str(reader.stored_size)})
            return StreamingResponse(stored_frames(reader), headers=headers, media_type=media)
        if codec == Codec.ZSTD.value and "gzip" in accepted and self.gzip:
            headers["Content-Encoding"] = "gzip"
            return StreamingResponse(gzipped(reader), headers=headers, media_type=media)
        headers["Content-Length"] = str(reader.size)
        return StreamingResponse(verified_content(reader), headers=headers, media_type=media)

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
            raise HTTPError(415, f"unsupported Content-Encoding {encoding!r}")
        content_length = int_header(request, "content-length")
        logical_size = int_header(request, "logical-size")
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
            name = await self._store_small(path, version, received, encoding, logical_size, sha256)
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

    def _small(self, received: ReceivedBody, logical_size: int | None) -> bool:
        """Whether a put is small enough to be stored on the event loop or in a group: a
        body kept in memory, whose content is stored inline in a local SQLite database."""
        if not self.loop_puts or received.spooled or logical_size is None or logical_size > self.inline_max:
            return False
        # a body far larger than its content (e.g. 1 MiB of empty zstd frames: ~1 s to decode) is
        # decoded in a thread: the work done on the loop stays bounded by the content's size
        return received.size <= max_frame_size(logical_size)

    async def _store_small(
        self, path: str, version: int, received: ReceivedBody, encoding: str, logical_size: int | None,
        sha256: str | None,
    ) -> str | None:
        """A small put (:meth:`_small`): stored at once on the event loop when the database
        is free (:meth:`_store_on_loop`), else with the others waiting
        (:mod:`castore.server.grouping`); None for any other put (a thread stores it)."""
        if not self._small(received, logical_size):
            return None
        if self.groups is None or not self.groups.busy:
            name = self._store_on_loop(path, version, received, encoding, logical_size, sha256)
            if name is not None or self.groups is None:
                return name
        body = received.in_memory
        assert body is not None
        return await self.groups.submit(SmallPut(path, version, body, encoding, logical_size, sha256))

    def _store_on_loop(
        self, path: str, version: int, received: ReceivedBody, encoding: str, logical_size: int | None,
        sha256: str | None,
    ) -> str | None:
        """Store a small body on the event loop when nothing there can wait; None: it would wait.

        The hop to a worker thread and back costs more than storing a small content
        (decoding, hashing and one SQLite transaction: well under a millisecond), so a
        small body (:meth:`_small`) is stored here, at once. Nothing here may wait: the
        write goes ahead only when the database's write lock is free at once
        (:meth:`MetadataRepo.not_waiting`); when another writer holds it, nothing was
        written and the put is stored with others (or, without groups, in a thread).
        """
        try:
            with self.store.metadata.not_waiting():
                return self._store_body(path, version, received, encoding, logical_size, sha256)
        except WouldWait:
            return None

    def _store_group(self, puts: Sequence[SmallPut]) -> list[str | BaseException | None]:
        """Small puts in one transaction (:meth:`Store.put_many`), in the group writer's thread.

        Each body is decoded and checked first, as :meth:`_store_body` does (a bad one gets
        its own error); one that :meth:`_store_body` would answer with an error of its own
        (a plain body whose size is not its ``Logical-Size``) is left to be stored alone (None).
        """
        results: list[str | BaseException | None] = [None] * len(puts)
        items: list[tuple[str, int | None, bytes, int | None]] = []
        placed: list[int] = []
        for i, put in enumerate(puts):
            try:
                item = self._group_item(put)
            except Exception as e:  # noqa: BLE001 - this put's own error (its decoding or checks), for its answer
                results[i] = e
                continue
            if item is not None:
                items.append(item)
                placed.append(i)
        if items:
            try:
                names: Sequence[str | Exception] = self.store.put_many(items, max_window=self.limits.max_zstd_window)
            except Exception as e:
                if not locked_out(e):
                    raise  # the group as a whole: each put is stored again alone, for its own answer
                names = [e] * len(items)  # alone, each would wait a whole busy timeout again, one after another
            for i, name in zip(placed, names, strict=True):
                results[i] = name
        return results

    def _group_item(self, put: SmallPut) -> tuple[str, int | None, bytes, int | None] | None:
        """``put`` as an item of :meth:`Store.put_many` (decoded and checked), or None: store it alone."""
        if put.sha256 is None and put.encoding == "zstd":
            return put.path, put.version, put.body, put.logical_size
        if put.sha256 is None and put.encoding == "identity":
            if put.logical_size is not None and put.logical_size != len(put.body):
                return None
            return put.path, put.version, put.body, None
        assert put.logical_size is not None  # a small put says its size (_small)
        data = self._upload_reader(ReceivedBody.holding(put.body), put.encoding, put.logical_size,
                                   put.sha256).read_whole(put.logical_size)
        return put.path, put.version, data, None

    def _store_alone(self, put: SmallPut) -> str:
        """One small put in a transaction of its own (its group's transaction failed, or :meth:`_group_item` said so)."""
        return self._store_body(put.path, put.version, ReceivedBody.holding(put.body), put.encoding,
                                put.logical_size, put.sha256)

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
        body = self._upload_reader(received, encoding, logical_size, sha256)
        if logical_size is not None and logical_size <= self.inline_max:
            # Small (Filetracker's client: gzip with its SHA-256): decoded and checked whole
            # first, then stored as bytes, which spares the store a stream's extra lookup.
            return self.store.put(path, body.read_whole(logical_size), version, expected_size=logical_size)
        return self.store.put(path, cast(BinaryIO, body), version)  # the reader holds it to its Logical-Size

    def _upload_reader(
        self, received: ReceivedBody, encoding: str, logical_size: int | None, sha256: str | None
    ) -> UploadReader:
        """A reader of the content of a coded (or checksummed) body, every check and limit of an upload in it."""
        limits = self.limits
        max_size, too_large = limits.max_upload_size, f"the content is over this server's limit of {limits.max_upload_size} bytes"
        if logical_size is None and encoding != "identity":
            cap = max(limits.max_expansion * received.size, limits.expansion_floor)
            if max_size is None or cap < max_size:
                max_size = cap
                too_large = (
                    f"the {encoding} body decodes to more than {cap} bytes ({limits.max_expansion} times its size); "
                    "send its Logical-Size to store it"
                )
        return UploadReader(
            received.open(),
            encoding=encoding,
            logical_size=logical_size,
            sha256=sha256,
            max_size=max_size,
            too_large=too_large,
            max_window=limits.max_zstd_window,
        )

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
                return Response("".join(p + "\n" for p in paths), media_type="text/plain; charset=utf-8")
            names = await anyio.to_thread.run_sync(lambda: self.store.iter_folder(directory, max_version=cutoff))
        except NotFound:
            raise HTTPError(400, "Path doesn't exist or is not a directory") from None
        # streamed a page at a time: a folder of millions of names costs the server one page
        return StreamingResponse(lines(names), media_type="text/plain; charset=utf-8")

    async def health(self, request: Request) -> Response:
        try:
            await anyio.to_thread.run_sync(self.store.exists, "/health-check")
        except Exception as e:  # noqa: BLE001 - any failure means unhealthy
            return JSONResponse({"status": "error", "error": one_line(str(e))}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(self, request: Request) -> Response:
        usage = await anyio.to_thread.run_sync(self.store.usage)
        text = (self.metrics.render(usage) + (self.migration.render_metrics() if self.migration else "")
                + (self.activity.metrics() if self.activity else ""))
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
        raise HTTPError(499, "the client hung up before the old server answered")
    return done[0]


def _asked_name(request: Request, path: str) -> str:
    """``path``, or ``path@N`` for castore's ``?version=N``: that retained version (:data:`VERSION_PARAMETER`).

    Filetracker's clients never send it: they read the current version, as before.
    """
    if not request.scope.get("query_string"):
        return path  # the common case: no query to parse
    text = request.query_params.get(VERSION_PARAMETER)
    return path if text is None else versioned_name(path, parse_version(text))
