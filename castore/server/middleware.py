"""The ASGI middlewares around the handlers, outermost first in :func:`castore.server.app.create_app`:
:class:`Metered` (counters), :class:`AllowedHost` (the ``Host`` check), then token
authentication (:mod:`castore.server.auth`), :class:`StrictUrl` (UTF-8 paths),
:class:`HotFiles` (``/files/`` past the router); :class:`OnFirstRequest` builds the web page late.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import CastoreError
from .handlers import FiletrackerApp
from .hosts import AllowedHosts
from .metrics import Metrics
from .statuses import HTTPError, error_response

__all__ = ["AllowedHost", "HotFiles", "Metered", "OnFirstRequest", "StrictUrl"]


class HotFiles:
    """ASGI: requests to ``/files/…`` go straight to their handler, past Starlette's router.

    They are what a contest system sends all day (small puts and gets); a profile of
    ``castore serve`` answering them showed Starlette's exception middleware, router and
    endpoint wrapper as a cost of their own. The answer is the general path's: the same
    handler, the same :func:`error_response` for an error raised before the response
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
            await error_response(error)(scope, receive, send)
            if not isinstance(error, (CastoreError, HTTPError)):
                raise
            return
        await response(scope, receive, send)


class StrictUrl:
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
                response = error_response(HTTPError(400, "the URL path is not valid UTF-8 once percent-decoded"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class AllowedHost:
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
                await error_response(HTTPError(*refused))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Metered:
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


class OnFirstRequest:
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
