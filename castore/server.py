"""The HTTP server: the Filetracker v2 protocol over a castore store (Starlette ASGI app).

Handlers only translate HTTP to store calls and back; errors become statuses in one
place (:func:`_error_response`), always with a one-line ``X-Exception`` header and
never a traceback. Blocking store calls run in worker threads.

Endpoints (``docs/protocol.md`` has the details):

* ``GET /version`` — ``{"protocol_versions": [2]}``
* ``GET|HEAD|PUT|DELETE /files/<path>`` — content, with ``?last_modified=<RFC 2822>``
* ``GET /list/<dir>`` — current files below a folder, one relative path per line
* ``GET /health``, ``GET /metrics`` — liveness and Prometheus metrics
* ``GET /ui/`` — a read-only web page (:mod:`castore.ui`)

With ``migrate_from`` the app moves files in from an old Filetracker server as they
are asked for (:mod:`castore.migration.live`).
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, BinaryIO, cast

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import TokenAuth
from .codec import Codec
from .content_coding import CODINGS
from .errors import (
    CastoreError,
    FiletrackerError,
    HashCollision,
    IntegrityError,
    InvalidName,
    NotFound,
    SourceError,
)
from .metrics import Metrics
from .migration.live import LiveMigration
from .names import check_prefix, parse_name
from .protocol import PROTOCOL_VERSIONS, accepted_encodings, format_version, parse_version_date, path_from_url
from .reading import BlobReader
from .store import Store
from .tokens import DEFAULT_CACHE_SECONDS, TokenCache
from .ui import ui_mount
from .upload import RequestBody, UploadReader

__all__ = ["CHUNK_SIZE", "app_from_environment", "create_app"]

CHUNK_SIZE = 1 << 20
"""Bytes per chunk when streaming a file to a client."""
GZIP_LEVEL = 1
SMALL_BODY = 1 << 20
"""Files up to this size are read whole and sent in one response body."""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _one_line(message: str) -> str:
    line = " ".join(str(message).split())
    return line.encode("latin-1", "replace").decode("latin-1")[:500]


def _error_response(error: Exception) -> Response:
    """The one place where exceptions become HTTP statuses."""
    if isinstance(error, _HTTPError):
        status = error.status
    elif isinstance(error, NotFound):
        status = 404
    elif isinstance(error, (InvalidName, SourceError)):
        status = 400
    elif isinstance(error, HashCollision):
        status = 409
    elif isinstance(error, FiletrackerError):
        status = 502  # the old server of a live migration failed
    elif isinstance(error, (IntegrityError, CastoreError)):
        status = 500
    else:
        status, error = 500, Exception(f"internal error: {type(error).__name__}")
    message = _one_line(str(error))
    return PlainTextResponse(message + "\n", status_code=status, headers={"X-Exception": message})


async def _receive_whole(request: Request) -> list[bytes]:
    """The chunks of a small request body, received on the event loop."""
    try:
        return [chunk async for chunk in request.stream() if chunk]
    except ClientDisconnect:
        raise SourceError("the upload was cut short: the client disconnected") from None


def _int_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise _HTTPError(400, f"invalid {name} header {value!r}")
    return int(value)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` → ``(start, end_exclusive)``; None when the header is unusable."""
    if not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                return None
            return max(size - length, 0), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        raise _HTTPError(416, f"range {header!r} is not satisfiable for {size} bytes")
    return start, min(end, size)


def _iterate(reader: BlobReader | Any, *, skip: int = 0, limit: int | None = None) -> Iterator[bytes]:
    """Read a stream in chunks (in a worker thread, via Starlette), then close it."""
    try:
        while skip > 0:
            skipped = len(reader.read(min(skip, CHUNK_SIZE)))
            if not skipped:
                return
            skip -= skipped
        remaining = limit
        while remaining is None or remaining > 0:
            chunk = reader.read(CHUNK_SIZE if remaining is None else min(remaining, CHUNK_SIZE))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
    finally:
        reader.close()


def _gzip(reader: BlobReader) -> Iterator[bytes]:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    for chunk in _iterate(reader):
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


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
    ) -> None:
        self.store = store
        self.migration = migration
        self.gzip = gzip
        self.fallback_url = fallback_url.rstrip("/") if fallback_url else None
        self.metrics = metrics

    async def version(self, request: Request) -> Response:
        # Filetracker clients read only protocol_versions; castore's client looks for
        # the "castore" key to know it may send zstd and chunked uploads.
        return JSONResponse({"protocol_versions": PROTOCOL_VERSIONS, "castore": {"upload_encodings": ["zstd", "gzip"]}})

    async def files(self, request: Request) -> Response:
        path = path_from_url(request.path_params["path"])
        method = request.method
        if method in ("GET", "HEAD"):
            return await self._get(request, path)
        if method == "PUT":
            return await self._put(request, path)
        return await self._delete(request, path)

    def _open(self, path: str, want_body: bool, accept_zstd: bool) -> tuple[BlobReader, bytes | None]:
        """Open a file; read it whole at once when it is small and goes out decoded."""
        return self._open_reader(self.store.open(path), want_body, accept_zstd)

    @staticmethod
    def _open_reader(reader: BlobReader, want_body: bool, accept_zstd: bool) -> tuple[BlobReader, bytes | None]:
        passthrough = accept_zstd and reader.codec is Codec.ZSTD
        if want_body and reader.size <= SMALL_BODY and not passthrough:
            with reader:
                return reader, reader.read()
        return reader, None

    def _open_small(self, path: str, want_body: bool, accept_zstd: bool) -> tuple[BlobReader, bytes | None] | None:
        """Open a file on the event loop when its bytes are in the metadata row.

        A lookup by primary key plus at most 128 KiB from SQLite's page cache takes
        ~0.1 ms, less than the hop to a worker thread. Files stored as blob files go
        to a thread (returns None), since reading them may wait for the disk.
        """
        reader = self.store.open(path)
        if not reader.in_memory:
            reader.close()
            return None
        return self._open_reader(reader, want_body, accept_zstd)

    async def _get(self, request: Request, path: str) -> Response:
        plain = request.method == "GET" and "range" not in request.headers
        accepted = accepted_encodings(request.headers.get("accept-encoding"))
        try:
            small = self._open_small(path, plain, "zstd" in accepted)
            if small is None:
                small = await anyio.to_thread.run_sync(self._open, path, plain, "zstd" in accepted)
            reader, body = small
        except NotFound:
            if self.migration is not None and await self.migration.fetch(path):
                reader, body = await anyio.to_thread.run_sync(self._open, path, plain, "zstd" in accepted)
            elif self.fallback_url is not None:
                return RedirectResponse(f"{self.fallback_url}/files{path}", status_code=307)
            else:
                raise
        headers = {
            "Last-Modified": format_version(reader.version),
            "Logical-Size": str(reader.size),
            "Accept-Ranges": "bytes",
            "ETag": f'"{reader.key}"',
        }
        media = "application/octet-stream"
        if request.method == "HEAD":
            reader.close()
            headers["Content-Length"] = str(reader.size)
            return Response(status_code=200, headers=headers, media_type=media)
        range_header = request.headers.get("range")
        if range_header:
            span = _parse_range(range_header, reader.size)
            if span is not None:
                start, end = span
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{reader.size}"
                headers["Content-Length"] = str(end - start)
                part = _iterate(reader, skip=start, limit=end - start)
                return StreamingResponse(part, status_code=206, headers=headers, media_type=media)
        if body is not None:
            return Response(body, headers=headers, media_type=media)
        codec = reader.codec.value
        if codec == Codec.ZSTD.value and "zstd" in accepted:
            headers.update({"Content-Encoding": "zstd", "Content-Length": str(reader.stored_size)})
            return StreamingResponse(_iterate(reader.take_stored()), headers=headers, media_type=media)
        if codec == Codec.ZSTD.value and "gzip" in accepted and self.gzip:
            headers["Content-Encoding"] = "gzip"
            return StreamingResponse(_gzip(reader), headers=headers, media_type=media)
        headers["Content-Length"] = str(reader.size)
        return StreamingResponse(_iterate(reader), headers=headers, media_type=media)

    async def _put(self, request: Request, path: str) -> Response:
        version = parse_version_date(request.query_params.get("last_modified"))
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in CODINGS:
            raise _HTTPError(415, f"unsupported Content-Encoding {encoding!r}")
        content_length = _int_header(request, "content-length")
        logical_size = _int_header(request, "logical-size")
        if logical_size is None and encoding == "identity":
            logical_size = content_length
        chunks: AsyncIterator[bytes] | list[bytes] = request.stream()
        if content_length is not None and content_length <= SMALL_BODY:
            chunks = await _receive_whole(request)  # saves a thread hop per chunk
        raw = RequestBody(chunks, content_length)
        sha256 = request.headers.get("sha256-checksum")
        if encoding == "zstd" and logical_size is not None and sha256 is None:
            # castore's client: keep its frame as the stored bytes, decode only to verify
            size = logical_size
            name = await anyio.to_thread.run_sync(
                lambda: self.store.put_zstd(path, cast(BinaryIO, raw), version, size=size)
            )
        else:
            body = UploadReader(raw, encoding=encoding, logical_size=logical_size, sha256=sha256)
            name = await anyio.to_thread.run_sync(
                lambda: self.store.put(path, cast(BinaryIO, body), version, expected_size=logical_size)
            )
        stored = parse_name(name).version
        assert stored is not None
        return Response(status_code=200, headers={"Last-Modified": format_version(stored)}, media_type="text/plain")

    async def _delete(self, request: Request, path: str) -> Response:
        version = parse_version_date(request.query_params.get("last_modified"))
        delete = self.store.delete if self.migration is None else self.migration.delete
        await anyio.to_thread.run_sync(delete, path, version)
        return Response(status_code=200, media_type="text/plain")

    async def list(self, request: Request) -> Response:
        raw = request.path_params.get("path", "")
        directory = check_prefix("/" + raw.strip("/") if raw.strip("/") else "/")
        text = request.query_params.get("last_modified")
        cutoff = parse_version_date(text) if text else int(time.time())

        def collect() -> list[str]:
            try:
                if self.migration is not None:
                    return self.migration.list_folder(directory, cutoff)
                return self.store.list_folder(directory, max_version=cutoff)
            except NotFound:
                raise _HTTPError(400, "Path doesn't exist or is not a directory") from None

        paths = await anyio.to_thread.run_sync(collect)
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
    token_cache_seconds: float = DEFAULT_CACHE_SECONDS,
) -> ASGIApp:
    """The ASGI app serving ``store``; ``prefix`` (e.g. ``/ft``) mounts it below a path.

    Once the store has an access token, every request but ``/health`` needs one
    (:mod:`castore.auth`); a worker rereads the tokens every ``token_cache_seconds``.

    ``close_store``: the app owns the store and closes it when the server shuts down
    (SQLite then folds its write-ahead log back into the database file).

    ``gzip``: compress compressible large files on the fly for clients that accept gzip
    but not zstd. Off by default: gzip -1 runs at ~110 MB/s here, slower than sending the
    bytes as they are on loopback or a LAN (see ``benchmarks/server.py``).

    ``migrate_from``: an old Filetracker server whose files move in on a miss.
    """
    metrics = Metrics()
    migration = LiveMigration(store, migrate_from) if migrate_from else None
    handlers = FiletrackerApp(store, fallback_url=fallback_url, metrics=metrics, gzip=gzip, migration=migration)
    routes: list[BaseRoute] = [
        Route("/version", handlers.version, methods=["GET"]),
        Route("/version/", handlers.version, methods=["GET"]),
        Route("/files/{path:path}", handlers.files, methods=["GET", "HEAD", "PUT", "DELETE"]),
        Route("/list", handlers.list, methods=["GET"]),
        Route("/list/{path:path}", handlers.list, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/metrics", handlers.metrics_endpoint, methods=["GET"]),
        ui_mount(store),  # the read-only web page, /ui/ (castore/ui.py)
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
    return _Metered(TokenAuth(app, tokens, open_paths=frozenset({f"{base}/health"})), metrics)


def app_from_environment() -> ASGIApp:
    """App factory for uvicorn workers: ``CASTORE_ROOT``, ``CASTORE_FALLBACK_URL``, ``CASTORE_URL_PREFIX``,
    ``CASTORE_MIGRATE_FROM``.

    ``CASTORE_TOKEN_CACHE_SECONDS`` (default 5) sets how soon a new or revoked access
    token takes effect on every worker.
    """
    store = Store.open(os.environ.get("CASTORE_ROOT", "castore-data"))  # made by `castore init`/`serve --init`
    return create_app(
        store,
        fallback_url=os.environ.get("CASTORE_FALLBACK_URL") or None,
        prefix=os.environ.get("CASTORE_URL_PREFIX", ""),
        gzip=os.environ.get("CASTORE_GZIP") == "1",
        close_store=True,
        migrate_from=os.environ.get("CASTORE_MIGRATE_FROM") or None,
        token_cache_seconds=float(os.environ.get("CASTORE_TOKEN_CACHE_SECONDS") or DEFAULT_CACHE_SECONDS),
    )


def serve(
    root: str,
    *,
    host: str = "127.0.0.1",
    port: int = 9999,
    workers: int = 1,
    prefix: str = "",
    fallback_url: str | None = None,
    gzip: bool = False,
    log_level: str = "warning",
    migrate_from: str | None = None,
) -> None:
    """Run the server in the foreground until SIGTERM or SIGINT (``castore.serving``).

    The store at ``root`` must exist and be migrated (``castore serve`` opens it once first).
    """
    from .serving import run

    os.environ["CASTORE_ROOT"] = os.path.abspath(root)
    os.environ["CASTORE_URL_PREFIX"] = prefix
    if fallback_url:
        os.environ["CASTORE_FALLBACK_URL"] = fallback_url
    os.environ["CASTORE_GZIP"] = "1" if gzip else "0"
    if migrate_from:
        os.environ["CASTORE_MIGRATE_FROM"] = migrate_from
    run("castore.server:app_from_environment", host=host, port=port, workers=workers, log_level=log_level)
