"""Running the ASGI app: one process, or a pre-forking master with several workers.

uvicorn's own ``--workers`` starts each worker as a fresh interpreter (``spawn``), so every
worker imports Starlette, SQLAlchemy and castore again before it answers: ~0.6 s per
worker on this 2-core machine, paid on every restart. With several workers castore runs
gunicorn's arbiter instead, with uvicorn's worker class and the server's code imported
once in the master (``preload``): workers are ``fork``ed from it and answer within
milliseconds. Each worker still builds its own app (and opens its own database
connections) after the fork, in :class:`PerWorkerApp`, since a connection must never
cross a ``fork``; it does so in a thread while it already answers ``GET /version``, so the
store (and SQLAlchemy, when the master did not need to open the store: castore.preflight)
loads while the server is already up. No file request is served before the store is open.

:func:`serve` is ``castore serve``'s entry: it hands the workers their
:class:`~castore.server.config.ServerConfig` and calls :func:`run`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn_worker import UvicornWorker

from ..faults import on_read_only_filesystem
from .app import early_answers
from .config import CONFIG_VARIABLE, ServerConfig
from .hosts import AllowedHosts
from .httptools import BoundedHttpToolsProtocol
from .tls import TlsFiles

__all__ = ["PerWorkerApp", "run", "serve"]

GRACEFUL_SHUTDOWN = 10
"""Seconds a stopping worker gives requests in flight before it closes them."""

STARTUP_FAILURE = 3
"""Exit status when the app cannot start (uvicorn's own)."""


class PerWorkerApp:
    """An ASGI app built in each worker process, in a thread, while the worker already answers.

    The master imports the server's code and forks; the factory runs in each worker after
    the fork, so each worker has its own store and database connections (a connection
    must never cross a ``fork``). Opening the store loads SQLAlchemy (~0.3 s of start-up),
    so the factory runs in a thread started by the lifespan start-up, and the worker takes
    connections at once: a ``GET`` of a path in ``early`` (``/version``) is answered with
    its JSON body, and every other request waits until the app is built, then goes to it.
    No file request is served before the store is open.

    ``early_hosts``: an early answer goes only to a request whose ``Host`` these allow
    (:mod:`castore.server.hosts`); any other waits for the app, which refuses it.

    ``on_failure``: called with the factory's error (default: log it and end the worker
    with :data:`STARTUP_FAILURE`, which stops gunicorn's master too, as a worker that
    cannot boot does); requests that were waiting get the error.
    """

    def __init__(self, factory: Callable[[], ASGIApp], *, early: Mapping[str, bytes] | None = None,
                 on_failure: Callable[[BaseException], None] | None = None,
                 early_hosts: AllowedHosts | None = None) -> None:
        self._factory = factory
        self._early = dict(early or {})
        self._early_hosts = early_hosts
        self._on_failure = on_failure or _exit_worker
        self._app: ASGIApp | None = None
        self._ready: asyncio.Future[ASGIApp] | None = None
        self._building: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is not None and scope["type"] != "lifespan":
            await self._app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        elif scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in self._early and (
                self._early_hosts is None or self._early_hosts.refusal(scope["headers"], scope.get("http_version", "1.1")) is None):
            await _answer_json(send, self._early[scope["path"]])
        else:
            if self._ready is None:  # no lifespan (uvicorn --lifespan off): build on the first request
                self._building = asyncio.ensure_future(self._build(None))
            await (await asyncio.shield(self._ready_future()))(scope, receive, send)

    def _ready_future(self) -> asyncio.Future[ASGIApp]:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
        return self._ready

    async def _build(self, lifespan: tuple[Scope, _Lifespan] | None) -> None:
        """Run the factory in a thread, start the app's own lifespan, then let requests through."""
        ready = self._ready_future()
        try:
            app = await asyncio.get_running_loop().run_in_executor(None, self._factory)
            if lifespan is not None:
                await lifespan[1].start(app, lifespan[0])
        except Exception as error:  # noqa: BLE001 - whatever it is, the worker cannot serve: on_failure
            ready.set_exception(error)
            self._on_failure(error)
            return
        self._app = app
        ready.set_result(app)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = _Lifespan()
        await receive()  # lifespan.startup
        self._building = asyncio.ensure_future(self._build((scope, inner)))
        await send({"type": "lifespan.startup.complete"})  # the worker takes connections from now
        await receive()  # lifespan.shutdown
        await self._building
        if inner.started:
            await inner.stop()
        await send({"type": "lifespan.shutdown.complete"})


class _Lifespan:
    """Drives the lifespan protocol of an app built after its server started (its start-up, its shutdown)."""

    def __init__(self) -> None:
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Future[None] | None = None
        self.started = False

    async def start(self, app: ASGIApp, scope: Scope) -> None:
        self._task = asyncio.ensure_future(app(scope, self._to_app.get, self._from_app.put))
        await self._step({"type": "lifespan.startup"})
        self.started = True

    async def stop(self) -> None:
        await self._step({"type": "lifespan.shutdown"})

    async def _step(self, message: Message) -> None:
        assert self._task is not None
        self._to_app.put_nowait(message)
        reply = asyncio.ensure_future(self._from_app.get())
        waited: set[asyncio.Future[Any]] = {reply, self._task}
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            reply.cancel()
            self._task.result()  # the app's own error
            raise RuntimeError(f"the app ended its lifespan before answering {message['type']}")
        if reply.result()["type"].endswith(".failed"):
            raise RuntimeError(reply.result().get("message") or f"{message['type']} failed")


async def _answer_json(send: Send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def _exit_worker(error: BaseException) -> None:
    """A worker whose app cannot start ends, as uvicorn's and gunicorn's own do when an app fails to load."""
    logging.getLogger("uvicorn.error").error("castore: the server cannot start: %s", error, exc_info=error)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(STARTUP_FAILURE)


class _Worker(UvicornWorker):  # type: ignore[misc]
    """uvicorn's gunicorn worker with castore's HTTP protocol (the 431 bound on request heads).

    It also ends when its master does, however the master ends (:func:`_end_with_parent`).
    """

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": BoundedHttpToolsProtocol, "lifespan": "on",
                                               "ws": "none", "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN}
    # the bound on a stop is the worker's own, not only its master's (which kills it after graceful_timeout):
    # a worker whose master was killed still ends when a client has stopped reading or sending

    def init_process(self) -> None:
        _end_with_parent(self.ppid)
        super().init_process()


_PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process gets when its parent dies (Linux)."""


def _end_with_parent(parent: int) -> None:
    """Have Linux send this worker SIGTERM when its master dies, even by ``kill -9``.

    A master that ends normally stops its workers itself; one that is killed outright
    cannot, and its workers went on serving with nobody to restart them, holding the
    port, so a new ``castore serve`` on it failed with "address in use". SIGTERM makes a
    worker finish its requests in progress and exit, as on a normal stop. Elsewhere than
    Linux nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # here: only workers need it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logging.getLogger("uvicorn.error").warning("castore: a worker cannot follow its master's death: %s",
                                                   os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != parent:  # the master died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _factory(path: str) -> Callable[[], ASGIApp]:
    module, _, name = path.partition(":")
    factory: Callable[[], ASGIApp] = getattr(importlib.import_module(module), name)
    return factory


def run(factory: str, *, host: str, port: int, workers: int, log_level: str,
        sock: socket.socket | None = None, early: Mapping[str, bytes] | None = None,
        early_hosts: AllowedHosts | None = None, tls: TlsFiles | None = None) -> None:
    """Serve the app that ``factory`` (``module:function``) builds, until SIGTERM or SIGINT.

    ``sock``: a socket already listening (then ``host`` and ``port`` only name it).
    ``tls``: serve HTTPS with this certificate and key (every connection of every worker).
    ``early``: bodies of the ``GET`` paths each worker answers while its app is being built
    (:class:`PerWorkerApp`), to requests whose ``Host`` ``early_hosts`` allows.
    """
    app = PerWorkerApp(_factory(factory), early=early, early_hosts=early_hosts)
    if workers <= 1:
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN, http=BoundedHttpToolsProtocol,
                                ws="none",  # no WebSockets: loading wsproto costs start-up
                                ssl_certfile=tls.cert if tls else None, ssl_keyfile=tls.key if tls else None)
        server = uvicorn.Server(config)
        try:
            server.run(sockets=None if sock is None else [sock])
        except KeyboardInterrupt:
            pass
        if not server.started:  # as uvicorn.run: the app failed to start
            sys.exit(STARTUP_FAILURE)
        return
    from gunicorn.app.base import BaseApplication

    bind = f"{host}:{port}" if sock is None else f"fd://{sock.detach()}"  # gunicorn owns the socket from here

    class _Master(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            settings = {
                "bind": bind,
                "workers": workers,
                "worker_class": f"{__name__}._Worker",
                "preload_app": True,
                "graceful_timeout": GRACEFUL_SHUTDOWN,
                "loglevel": log_level,
                "accesslog": None,
                "proc_name": "castore",
                **({"certfile": tls.cert, "keyfile": tls.key} if tls else {}),  # each uvicorn worker's ssl_*
            }
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> PerWorkerApp:
            return app

    from .metrics import share_metrics, unshare_metrics

    folder = share_metrics()  # /metrics sums every worker's counters (castore.server.metrics)
    try:
        _Master().run()
    finally:
        unshare_metrics(folder)


def serve(config: ServerConfig, *, host: str = "127.0.0.1", port: int = 9999, workers: int = 1,
          log_level: str = "warning", sock: socket.socket | None = None, early_version: bool = False,
          tls: TlsFiles | None = None) -> None:
    """Serve the store ``config`` names, as it says, in the foreground until SIGTERM or SIGINT.

    The store must exist and be migrated (``castore serve`` opens it once first). Each worker
    gets ``config`` through :data:`castore.server.config.CONFIG_VARIABLE` and builds its app
    with :func:`castore.server.app.app_from_environment`. ``sock``: a socket already
    listening (:func:`castore.server.listening.listen`), served instead of binding
    ``host:port``. ``early_version``: each worker answers ``GET /version`` while its store
    is still opening (only for a store open to requests without a token, whose ``/version`` needs none).
    ``tls``: serve HTTPS (:mod:`castore.server.tls`; checked by the caller).
    """
    hosts = AllowedHosts.parse(config.allowed_hosts)  # ValueError for a malformed entry, before anything starts
    os.environ[CONFIG_VARIABLE] = config.to_json()
    if config.migrate_from:
        from ..migration.live import share_fetch_locks

        share_fetch_locks()  # the workers fetch a missing path once in all
    root = config.root
    read_only = config.read_only or bool(root and on_read_only_filesystem(root))
    run("castore.server.app:app_from_environment", host=host, port=port, workers=workers, log_level=log_level, sock=sock,
        early=early_answers(config.prefix, read_only=read_only, limits=config.limits) if early_version else None,
        early_hosts=hosts, tls=tls)
