"""The HTTP server: the Filetracker v2 protocol over a castore store (Starlette ASGI app).

Handlers only translate HTTP to store calls and back; errors become statuses in
:func:`castore.server.statuses.error_response` (the token check and the web page answer
their own), always with a one-line ``X-Exception`` header and never a traceback. Blocking
store calls run in worker threads.

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
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from ..errors import CastoreError
from .auth import TokenAuth
from .config import ServerConfig, server_config
from .handlers import FiletrackerApp, batch_limits, version_answer
from .hosts import AllowedHosts
from .metrics import Metrics
from .middleware import AllowedHost, HotFiles, Metered, OnFirstRequest, StrictUrl
from .statuses import HTTPError, error_response
from .tokens import TokenCache
from .upload import UploadLimits

if TYPE_CHECKING:  # imported when used: a server starts without them (see OnFirstRequest)
    from ..store import Store
    from .idle import Activity, IdleCompactor

__all__ = ["app_from_environment", "create_app", "early_answers"]


def create_app(
    store: Store, config: ServerConfig | None = None, *, close_store: bool = False, lean: bool = True,
    loop_puts: bool = True, group_puts: bool = True,
) -> ASGIApp:
    """The ASGI app serving ``store`` as ``config`` says (:class:`castore.server.config.ServerConfig`;
    None: its defaults).

    ``config.prefix`` (e.g. ``/ft``) mounts it below a path. Once the store is closed (its
    first access token closes it), every request but ``/health`` needs a token
    (:mod:`castore.server.auth`); a worker rereads the tokens and the ``access`` setting
    every ``config.token_cache_seconds``.

    ``config.limits``: what one upload may cost (timeouts, sizes, zstd window);
    ``config.spool_dir``: where bodies too large to keep in memory wait while they arrive
    (the store's folder, so that a full disk answers 507; None: the system's temporary folder).

    ``config.gzip``: compress compressible large files on the fly for clients that accept
    gzip but not zstd. Off by default: gzip -1 runs at ~110 MB/s here, slower than sending
    the bytes as they are on loopback or a LAN (see ``benchmarks/server.py``).

    ``config.migrate_from``: an old Filetracker server whose files move in on a miss;
    ``config.migration_limits``: what calls to it may cost (timeouts, threads, queue), and
    what it sends is held to ``config.limits`` as an upload is.

    ``config.verify_first``: every byte sent is verified first in any case; a file over
    1 MiB goes out chunk by chunk and a damaged chunk aborts the connection. ``auto`` (the
    default) also reads the whole response once before its headers for clients that do
    not accept zstd (Filetracker's client), so they get a 500 instead of a cut body;
    ``always`` does so for every client, ``never`` for none.

    ``config.allowed_hosts``: the ``Host`` values answered, others get 421 before anything
    else (:mod:`castore.server.hosts`); ``("*",)`` (the default) answers any (the app does
    not know the names it is served by: ``castore serve`` passes its own).

    Not configuration, so keyword arguments rather than fields of ``config`` (a worker's
    configuration never holds them):

    ``close_store``: the app owns the store and closes it when the server shuts down
    (SQLite then folds its write-ahead log back into the database file): who made the
    store, not how to serve it.

    ``lean``, ``loop_puts`` and ``group_puts``, test hooks: ``lean`` answers ``/files/`` requests past
    Starlette's router (:class:`HotFiles`), False sends them through it like every other
    request; ``loop_puts`` stores small bodies on the event loop when the database is free
    at once (:meth:`FiletrackerApp._store_on_loop`), False stores every body in a worker
    thread; ``group_puts`` stores the small puts that find the database busy together, in
    one transaction (:mod:`castore.server.grouping`), False each in a thread of its own. All
    three are on in every server; the tests turn them off to compare the paths.
    """
    config = config or ServerConfig()
    metrics = Metrics()
    migration = None
    if config.migrate_from:
        from ..migration.live import LiveMigration

        migration = LiveMigration(store, config.migrate_from, limits=config.migration_limits, uploads=config.limits)
    activity, compactor = _idle_compactor(store, config)
    handlers = FiletrackerApp(store, config, metrics=metrics, migration=migration, activity=activity,
                              loop_puts=loop_puts, group_puts=group_puts)
    routes: list[BaseRoute] = [
        Route("/version", handlers.version, methods=["GET"]),
        Route("/version/", handlers.version, methods=["GET"]),
        Route("/files/{path:path}", handlers.files, methods=["GET", "HEAD", "PUT", "DELETE"]),
        Route("/batch/", handlers.put_batch, methods=["PUT"]),  # castore's own: castore/batch.py, castore/server/batch.py
        Route("/list", handlers.list, methods=["GET"]),
        Route("/list/{path:path}", handlers.list, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/metrics", handlers.metrics_endpoint, methods=["GET"]),
        Mount("/ui", app=OnFirstRequest(lambda: _ui_app(store))),  # the read-only web page (castore/server/ui.py)
    ]
    prefix = config.prefix
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
        if compactor is not None:
            compactor.start()
        yield
        if compactor is not None:
            await anyio.to_thread.run_sync(compactor.close)  # a slice stops at its next step
        if handlers.groups is not None:
            await anyio.to_thread.run_sync(handlers.groups.close)  # puts still queued are stored first
        metrics.close()
        if migration is not None:
            migration.close()
        if close_store:
            store.close()

    app = Starlette(routes=routes, exception_handlers=handlers_by_error, lifespan=lifespan)
    app.state.store = store
    base = "/" + prefix.strip("/") if prefix.strip("/") else ""
    tokens = TokenCache(store.metadata.token_access, seconds=config.token_cache_seconds)
    inner: ASGIApp = HotFiles(app, handlers, base) if lean else app
    guarded: ASGIApp = TokenAuth(StrictUrl(inner), tokens, open_paths=frozenset({f"{base}/health"}))
    allowed_hosts = AllowedHosts.parse(config.allowed_hosts)
    if not allowed_hosts.any:
        guarded = AllowedHost(guarded, allowed_hosts)
    metered: ASGIApp = Metered(guarded, metrics)
    if activity is not None:
        from .idle import Touching

        metered = Touching(metered, activity, prefix=prefix)
    return metered


def _idle_compactor(store: Store, config: ServerConfig) -> tuple[Activity | None, IdleCompactor | None]:
    """``config.compact_when_idle``: the shared page of activity and the compactor (started by the lifespan)."""
    if not config.compact_when_idle or store.read_only:
        return None, None
    from ..compacting import DEFAULT_LEVEL
    from .idle import Activity, IdleCompactor

    activity = Activity()
    return activity, IdleCompactor(store, activity, idle=config.compact_idle, cpu=config.compact_cpu,
                                   level=DEFAULT_LEVEL)


def _ui_app(store: Store) -> ASGIApp:
    from .ui import ui_mount

    return ui_mount(store).app


def app_from_environment() -> ASGIApp:
    """App factory for the workers: the store and app that :func:`castore.server.config.server_config` says.

    The store must exist (made by ``castore init`` or ``serve --init``). Large uploads
    spool beside the store's folder, if it has one and is writable.
    """
    from ..opening import open_store  # SQLAlchemy: each worker loads it while answering /version/

    config = server_config()
    store = open_store(config.root, metadata=config.metadata, blobs=config.blobs,
                       read_only=True if config.read_only else None)
    store.metadata.checkpoint_in_background()  # SQLite's log is copied back by a thread, not inside puts
    if config.spool_dir is None and not store.read_only and config.root and os.path.isdir(config.root):
        config = dataclasses.replace(config, spool_dir=os.path.abspath(config.root))
    return create_app(store, config, close_store=True)


def early_answers(prefix: str = "", *, read_only: bool, limits: UploadLimits) -> dict[str, bytes]:
    """What a worker answers to ``GET`` of these paths while its store is still opening
    (:class:`castore.server.serving.PerWorkerApp`): the body :class:`FiletrackerApp` sends, byte for
    byte, for a store served read-only or not, with these upload limits."""
    base = "/" + prefix.strip("/") if prefix.strip("/") else ""
    body = bytes(JSONResponse(version_answer(read_only=read_only, batch=batch_limits(limits))).body)
    return {f"{base}/version": body, f"{base}/version/": body}
