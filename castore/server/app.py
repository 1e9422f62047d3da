"""The HTTP server: the Filetracker v2 protocol over a castore store (Starlette ASGI app).

Handlers only translate HTTP to store calls and back; errors become statuses in one
place (:func:`castore.server.statuses.error_response`), always with a one-line ``X-Exception`` header and
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

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from ..errors import CastoreError
from .auth import TokenAuth
from .handlers import FiletrackerApp, batch_limits, version_answer
from .hosts import LOCAL_NAMES, AllowedHosts
from .metrics import Metrics
from .middleware import AllowedHost, HotFiles, Metered, OnFirstRequest, StrictUrl
from .statuses import HTTPError, error_response
from .tokens import DEFAULT_CACHE_SECONDS, TokenCache
from .upload import UploadLimits

if TYPE_CHECKING:  # imported when used: a server starts without them (see OnFirstRequest)
    from ..migration.live import MigrationLimits
    from ..store import Store

__all__ = ["app_from_environment", "create_app", "early_answers"]


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

    ``lean``: answer ``/files/`` requests past Starlette's router (:class:`HotFiles`);
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
        Mount("/ui", app=OnFirstRequest(lambda: _ui_app(store))),  # the read-only web page (castore/ui.py)
    ]
    if prefix.strip("/"):
        routes = [Mount("/" + prefix.strip("/"), routes=routes)]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        detail = "method not allowed" if status == 405 else f"unknown endpoint {request.url.path!r}"
        response = error_response(HTTPError(status, detail))
        if status == 405 and hasattr(exc, "headers") and exc.headers:
            response.headers.update(exc.headers)
        return response

    async def error(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    handlers_by_error: dict[Any, Any] = {
        404: not_found,
        405: not_found,
        CastoreError: error,
        HTTPError: error,
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
    inner: ASGIApp = HotFiles(app, handlers, base) if lean else app
    guarded: ASGIApp = TokenAuth(StrictUrl(inner), tokens, open_paths=frozenset({f"{base}/health"}))
    if allowed_hosts is not None and not allowed_hosts.any:
        guarded = AllowedHost(guarded, allowed_hosts)
    return Metered(guarded, metrics)


def _ui_app(store: Store) -> ASGIApp:
    from .ui import ui_mount

    return ui_mount(store).app


def app_from_environment() -> ASGIApp:
    """App factory for the workers, configured by ``CASTORE_*`` variables (set by :func:`serve`).

    The store must exist (made by ``castore init`` or ``serve --init``).
    ``CASTORE_TOKEN_CACHE_SECONDS`` (default 5) sets how soon a new or revoked access
    token takes effect on every worker. ``CASTORE_VERIFY_FIRST`` is ``auto``, ``always``
    or ``never`` (see :func:`castore.server.app.create_app`). ``CASTORE_ALLOWED_HOSTS``: the ``Host`` values
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
