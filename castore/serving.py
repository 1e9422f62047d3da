"""Running the ASGI app: one process, or a pre-forking master with several workers.

uvicorn's own ``--workers`` starts each worker as a fresh interpreter (``spawn``), so every
worker imports Starlette, SQLAlchemy and castore again before it answers: ~0.6 s per
worker on this 2-core machine, paid on every restart. With several workers castore runs
gunicorn's arbiter instead, with uvicorn's worker class and the code imported once in the
master (``preload``): workers are ``fork``ed from it and answer within milliseconds.
Each worker still builds its own app (and opens its own database connections) after the
fork, in :class:`PerWorkerApp`, since a connection must never cross a ``fork``.
"""

from __future__ import annotations

import importlib
import socket
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn_worker import UvicornWorker

from .http_protocol import BoundedHttpToolsProtocol

__all__ = ["PerWorkerApp", "run"]

GRACEFUL_SHUTDOWN = 10
"""Seconds a stopping worker gives requests in flight before it closes them."""

STARTUP_FAILURE = 3
"""Exit status when the app cannot start (uvicorn's own)."""


class PerWorkerApp:
    """An ASGI app built on its first event in each process (the lifespan start-up).

    The master imports the code and forks; the factory runs in the worker, so each
    worker has its own store and database connections.
    """

    def __init__(self, factory: Callable[[], ASGIApp]) -> None:
        self._factory = factory
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = self._factory()
        await self._app(scope, receive, send)


class _Worker(UvicornWorker):  # type: ignore[misc]
    """uvicorn's gunicorn worker with castore's HTTP protocol (the 431 bound on request heads)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": BoundedHttpToolsProtocol, "lifespan": "on",
                                               "ws": "none"}


def _factory(path: str) -> Callable[[], ASGIApp]:
    module, _, name = path.partition(":")
    factory: Callable[[], ASGIApp] = getattr(importlib.import_module(module), name)
    return factory


def run(factory: str, *, host: str, port: int, workers: int, log_level: str,
        sock: socket.socket | None = None) -> None:
    """Serve the app that ``factory`` (``module:function``) builds, until SIGTERM or SIGINT.

    ``sock``: a socket already listening (then ``host`` and ``port`` only name it).
    """
    if workers <= 1:
        import uvicorn

        config = uvicorn.Config(factory, factory=True, host=host, port=port, log_level=log_level, access_log=False,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN, http=BoundedHttpToolsProtocol,
                                ws="none")  # no WebSockets: loading wsproto costs start-up
        server = uvicorn.Server(config)
        try:
            server.run(sockets=None if sock is None else [sock])
        except KeyboardInterrupt:
            pass
        if not server.started:  # as uvicorn.run: the app failed to start
            sys.exit(STARTUP_FAILURE)
        return
    from gunicorn.app.base import BaseApplication

    app = PerWorkerApp(_factory(factory))
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
            }
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> PerWorkerApp:
            return app

    _Master().run()
