"""castore.server.serving.PerWorkerApp: a worker answers /version/ while its app (its store) is still being built.

Driven through the ASGI protocol in-process, with a factory that waits on an event the
test sets: ``/version/`` is answered from ``early`` meanwhile, every other request waits
(no failure, no file served before the store is open) and then goes to the app; the
app's own lifespan (which closes the store) runs after it is built.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from castore.opening import open_store
from castore.server.app import create_app, early_answers
from castore.server.config import ServerConfig
from castore.server.serving import PerWorkerApp
from castore.server.upload import UploadLimits

Message = dict[str, Any]


def _inner(events: list[str]) -> Starlette:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        events.append("startup")
        yield
        events.append("shutdown")

    async def files(request: Any) -> PlainTextResponse:
        return PlainTextResponse("file")

    return Starlette(routes=[Route("/files/{path:path}", files)], lifespan=lifespan)


async def _get(app: PerWorkerApp, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers or [],
             "server": ("127.0.0.1", 9), "client": ("127.0.0.1", 1)}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


class _Lifespan:
    """The server's side of the lifespan protocol."""

    def __init__(self, app: PerWorkerApp) -> None:
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.from_app: asyncio.Queue[Message] = asyncio.Queue()
        self.task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, self.to_app.get,
                                              self.from_app.put))

    async def send(self, kind: str) -> str:
        await self.to_app.put({"type": f"lifespan.{kind}"})
        return str((await asyncio.wait_for(self.from_app.get(), 10))["type"])


async def _until_waiting_for_the_app(request: asyncio.Future[Any]) -> None:
    """Return once ``request`` is suspended in PerWorkerApp awaiting the app being built.

    That is the observable event (its chain of coroutines ends in ``PerWorkerApp.__call__``,
    which awaits a future: the app), not a pause; a request answered or refused instead ends.
    """
    assert isinstance(request, asyncio.Task)
    for _ in range(10_000):
        await asyncio.sleep(0)
        if request.done():
            return
        coroutine: Any = request.get_coro()
        while inspect.iscoroutine(getattr(coroutine, "cr_await", None)):
            coroutine = coroutine.cr_await
        if coroutine.cr_code is PerWorkerApp.__call__.__code__ and coroutine.cr_await is not None:
            return
    raise AssertionError("the request never reached its wait for the app")


def test_version_answers_while_the_app_is_built_and_other_requests_wait() -> None:
    release = threading.Event()
    events: list[str] = []

    def factory() -> Starlette:
        assert release.wait(10)
        events.append("built")
        return _inner(events)

    early = early_answers(read_only=False, limits=UploadLimits())
    app = PerWorkerApp(factory, early=early, on_failure=lambda e: None)

    async def scenario() -> None:
        lifespan = _Lifespan(app)
        assert await lifespan.send("startup") == "lifespan.startup.complete"  # at once: the worker serves
        assert await asyncio.wait_for(_get(app, "/version/"), 5) == (200, early["/version/"])
        assert await asyncio.wait_for(_get(app, "/version"), 5) == (200, early["/version"])
        waiting = asyncio.ensure_future(_get(app, "/files/a"))
        await _until_waiting_for_the_app(waiting)
        assert not waiting.done() and events == []  # not refused, not answered: waiting for the store
        release.set()
        assert await asyncio.wait_for(waiting, 10) == (200, b"file")
        assert events == ["built", "startup"]  # the app's own lifespan started before it got the request
        assert await lifespan.send("shutdown") == "lifespan.shutdown.complete"
        assert events == ["built", "startup", "shutdown"]
        await lifespan.task

    asyncio.run(scenario())


def test_without_early_answers_version_waits_too() -> None:
    release = threading.Event()
    app = PerWorkerApp(lambda: (release.wait(10), _inner([]))[1], on_failure=lambda e: None)

    async def scenario() -> None:
        lifespan = _Lifespan(app)
        assert await lifespan.send("startup") == "lifespan.startup.complete"
        waiting = asyncio.ensure_future(_get(app, "/version/"))
        await _until_waiting_for_the_app(waiting)
        assert not waiting.done()  # a store with tokens: /version/ needs one, so it waits for the app
        release.set()
        assert (await asyncio.wait_for(waiting, 10))[0] == 404  # the inner app has no /version/ route
        assert await lifespan.send("shutdown") == "lifespan.shutdown.complete"

    asyncio.run(scenario())


def test_a_factory_that_fails_is_reported_and_waiting_requests_get_its_error() -> None:
    failures: list[BaseException] = []

    def factory() -> Starlette:
        raise OSError("disk gone")

    app = PerWorkerApp(factory, early=early_answers(read_only=False, limits=UploadLimits()), on_failure=failures.append)

    async def scenario() -> None:
        lifespan = _Lifespan(app)
        assert await lifespan.send("startup") == "lifespan.startup.complete"
        with pytest.raises(OSError, match="disk gone"):
            await asyncio.wait_for(_get(app, "/files/a"), 10)
        assert [str(e) for e in failures] == ["disk gone"]

    asyncio.run(scenario())


def test_early_version_body_is_the_servers_own(tmp_path: Any) -> None:
    open_store(tmp_path / "s", create=True).close()
    for read_only in (False, True):
        for limits in (UploadLimits(), UploadLimits(max_upload_size=1 << 20)):
            with open_store(tmp_path / "s", read_only=read_only) as store:
                for prefix in ("", "/ft"):
                    client = TestClient(create_app(store, ServerConfig(prefix=prefix, limits=limits)))
                    for path, body in early_answers(prefix, read_only=read_only, limits=limits).items():
                        answer = client.get(path)
                        assert answer.status_code == 200 and answer.content == body, (path, read_only, limits)
                        assert answer.headers["content-type"] == "application/json"
