"""The read-only web page at ``/ui/``: browse folders, a file's versions, usage, dedup report.

Server-rendered HTML (Jinja2 templates in ``castore/server/templates/``, no JavaScript), mounted
inside the server's app by :func:`ui_mount`, so it sits behind whatever guards the API
(URL prefix, access tokens). Every store call runs in a worker thread.

The landing page's totals are read from what the write transactions keep
(:mod:`castore.metadata.totals`): one small query, whatever the store holds. A dedup
report costs what its folder holds (~20 s over a million files), so each is kept
:data:`REPORT_TTL` seconds per server worker and per report (prefix and depth): a
folder's report is computed by one request while the others that want it wait
(:class:`_Recent`); the report of ``/`` (the whole store) is never computed on a
request's path: a thread computes it once per interval while requests get the last one
(:class:`_InBackground`). The report page says when it was computed.

Paths go into links percent-encoded (:func:`quote_path`) and into text through Jinja2's
autoescaping, so a name with spaces, ``%``, ``#``, ``?``, quotes or ``<script>`` shows as
itself and links to itself. Blob keys never appear: the key of a known content lets
whoever sees it work at the store's secret seed; the page shows a short one-way
:func:`content_id` instead, enough to see which versions hold the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import anyio.to_thread
import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.templating import Jinja2Templates

from ..errors import InvalidName, NotFound
from ..metadata.report import SORT_KEYS, DedupReport, GroupUsage
from ..names import check_prefix, parse_name, parse_version, versioned_name
from ..protocol import quote_path
from ..reading import BlobReader
from ..sizes import IO_BUFFER, WHOLE_IN_MEMORY, format_size
from ..store import Store

__all__ = ["FOLDER_PAGE", "content_id", "quote_path", "ui_mount"]

FOLDER_PAGE = 500
"""Entries per page of a folder listing."""
SAME_CONTENT = 20
"""Other paths shown as sharing a file's content."""
REPORT_ROWS = 1000
"""Groups shown by the dedup report page (the CLI shows them all)."""
REPORT_TTL = 60.0
"""Seconds a dedup report (one prefix and depth) is reused: over 100 k files it costs ~20 s."""
RECENT_REPORTS = 16
"""Reports kept per worker at most (the oldest computed goes first)."""

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Computed(Generic[T]):
    """A result of :class:`_Recent` with when it was computed."""

    value: T
    at: float
    """Unix time of the computation (for the page)."""
    tick: float
    """The cache's clock then (for its age)."""


class _Recent(Generic[T]):
    """Results kept ``ttl`` seconds per key, each computed by one caller at a time.

    A caller that finds no fresh result computes it while later callers for the same key
    wait for it (a lock per key, on the event loop), then take it: a reload storm costs one
    computation. At most ``size`` results are kept. Errors are not kept.
    """

    def __init__(self, ttl: float, *, size: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._results: OrderedDict[Hashable, Computed[T]] = OrderedDict()
        self._locks: dict[Hashable, anyio.Lock] = {}

    def _fresh(self, key: Hashable) -> Computed[T] | None:
        found = self._results.get(key)
        return found if found is not None and self.clock() - found.tick < self.ttl else None

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> Computed[T]:
        """The result for ``key``: a fresh one, else the one ``compute`` makes (once for all waiting)."""
        found = self._fresh(key)
        if found is not None:
            return found
        lock = self._locks.setdefault(key, anyio.Lock())
        try:
            async with lock:
                found = self._fresh(key)
                if found is None:
                    found = Computed(await compute(), time.time(), self.clock())
                    self._results[key] = found
                    self._results.move_to_end(key)
                    while len(self._results) > self.size:
                        self._results.popitem(last=False)
                return found
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(key, None)

    def waiting(self, key: Hashable) -> int:
        """Callers waiting for ``key``'s computation (for tests)."""
        lock = self._locks.get(key)
        return lock.statistics().tasks_waiting if lock is not None else 0


class _InBackground(Generic[T]):
    """Results computed by a background thread, at most once per ``ttl`` per key; a caller never waits.

    :meth:`get` hands out the last result (however old, or None before the first) and,
    when it is older than ``ttl``, starts computing a new one unless one is under way.
    The threads of one object take turns: one computation at a time. Errors are logged
    and not kept (the next request after them starts another).
    """

    def __init__(self, ttl: float, *, size: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._results: OrderedDict[Hashable, Computed[T]] = OrderedDict()
        self._running: set[Hashable] = set()
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> Computed[T] | None:
        with self._lock:
            found = self._results.get(key)
            if (found is None or self.clock() - found.tick >= self.ttl) and key not in self._running:
                self._running.add(key)
                threading.Thread(target=self._compute, args=(key, compute), daemon=True,
                                 name="castore-ui-report").start()
        return found

    def _compute(self, key: Hashable, compute: Callable[[], T]) -> None:
        try:
            with self._one_at_a_time:
                value = compute()
            with self._lock:
                self._results[key] = Computed(value, time.time(), self.clock())
                self._results.move_to_end(key)
                while len(self._results) > self.size:
                    self._results.popitem(last=False)
        except Exception:
            logging.getLogger(__name__).exception("the report of %s could not be computed", key)
        finally:
            with self._lock:
                self._running.discard(key)


def content_id(key: str) -> str:
    """A short one-way id of a blob key: equal contents, equal ids; the key is not recoverable."""
    return hashlib.sha256(b"castore-ui-content-id\0" + key.encode()).hexdigest()[:12]


def _when(version: int) -> str:
    """A version as a UTC date, when it reads as Unix seconds."""
    if 0 < version < 2**37:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(version))
    return ""


def _crumbs(path: str) -> list[tuple[str, str]]:
    """``(segment, folder)`` for every folder above ``path``, the root first."""
    parts = path.strip("/").split("/") if path.strip("/") else []
    return [(part, "/" + "/".join(parts[: i + 1]) + "/") for i, part in enumerate(parts)]


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update({"human": format_size, "when": _when, "q": quote_path, "content_id": content_id})
    return Jinja2Templates(env=env)


@dataclasses.dataclass(frozen=True)
class _ReportPage:
    """What the report page shows of a dedup report, by every sort: what :class:`_Pages` caches.

    Not the report: it has a group per path at a deep ``--by`` (~440 bytes each), and
    :data:`RECENT_REPORTS` of them would stay a minute in each worker (~7 GB for a 1 M-path
    store); nor sorted again on the event loop by every request that finds it cached.
    """

    report: DedupReport
    """The report's figures, without its groups."""
    rows: dict[str, list[GroupUsage]]
    """The first :data:`REPORT_ROWS` groups by each of :data:`SORT_KEYS`."""
    groups: int
    """The report's groups in all."""

    @classmethod
    def of(cls, report: DedupReport) -> _ReportPage:
        rows = {key: report.sorted_groups(key, REPORT_ROWS) for key in SORT_KEYS}
        return cls(dataclasses.replace(report, groups=[]), rows, len(report.groups))


class _Pages:
    """The page handlers, bound to one store."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.templates = _templates()
        self.reports: _Recent[_ReportPage] = _Recent(REPORT_TTL, size=RECENT_REPORTS, clock=clock)
        self.whole_store: _InBackground[_ReportPage] = _InBackground(REPORT_TTL, size=RECENT_REPORTS, clock=clock)
        self._heavy: anyio.CapacityLimiter | None = None

    async def _run_heavy(self, function: Callable[[], T]) -> T:
        """Run a whole-store query in a thread, one at a time: a reload storm of the
        report on a large store queues up instead of taking every core."""
        if self._heavy is None:
            self._heavy = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(function, limiter=self._heavy)

    def _render(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        ui = request.scope.get("root_path", "").rstrip("/")  # where this mount lives, e.g. /ft/ui
        base = ui.removesuffix("/ui")
        context.update(ui=ui, base=base, crumbs=context.get("crumbs", []))
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                   "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"}
        return self.templates.TemplateResponse(request, template, context, status_code=status, headers=headers)

    def _problem(self, request: Request, status: int, message: str) -> Response:
        return self._render(request, "problem.html", status, title="Not found" if status == 404 else "Error",
                            message=message)

    async def index(self, request: Request) -> Response:
        usage = await anyio.to_thread.run_sync(self.store.usage)  # the kept totals: one small query
        return self._render(request, "index.html", title="castore", usage=usage, sort_keys=SORT_KEYS)

    async def browse(self, request: Request) -> Response:
        raw = request.path_params["path"]
        after = request.query_params.get("after") or None
        try:
            folder = check_prefix("/" + raw)
        except InvalidName as e:
            return self._problem(request, 400, str(e))
        if not raw.endswith("/") and raw:
            return RedirectResponse(request.scope["root_path"] + "/browse" + quote_path(folder), status_code=307)
        children = await anyio.to_thread.run_sync(
            lambda: self.store.children(folder, after=after, limit=FOLDER_PAGE + 1)
        )
        if not children and folder != "/" and after is None:
            return self._problem(request, 404, f"no folder {folder}")
        # the next page starts after the last name shown
        more = children[FOLDER_PAGE - 1][0] if len(children) > FOLDER_PAGE else None
        return self._render(request, "folder.html", title=folder, folder=folder, children=children[:FOLDER_PAGE],
                            more=more, crumbs=_crumbs(folder))

    async def file(self, request: Request) -> Response:
        try:
            path = parse_name("/" + request.path_params["path"], allow_version=False).path
        except InvalidName as e:
            return self._problem(request, 400, str(e))

        def collect() -> tuple[Any, list[str]]:
            history = self.store.versions(path)
            return history, self.store.same_content(versioned_name(path, history[0].version), limit=SAME_CONTENT)

        try:
            history, same = await anyio.to_thread.run_sync(collect)
        except NotFound as e:
            return self._problem(request, 404, str(e))
        current = history[0]
        parent = path.rsplit("/", 1)[0] + "/"
        return self._render(request, "file.html", title=path, path=path, current=current, history=history,
                            same=same, same_limit=SAME_CONTENT, crumbs=_crumbs(parent),
                            name=path.rsplit("/", 1)[1])

    async def download(self, request: Request) -> Response:
        try:
            path = parse_name("/" + request.path_params["path"], allow_version=False).path
            version = parse_version(request.query_params.get("version", ""))
            reader = await anyio.to_thread.run_sync(self.store.open_file, versioned_name(path, version))
        except NotFound as e:
            return self._problem(request, 404, str(e))
        except InvalidName as e:
            return self._problem(request, 400, str(e))
        filename = quote(path.rsplit("/", 1)[1], safe="")
        headers = {"Content-Length": str(reader.size), "Content-Disposition": f"attachment; filename*=UTF-8''{filename}",
                   "X-Content-Type-Options": "nosniff"}
        if reader.size <= WHOLE_IN_MEMORY:
            # read whole and verified before the headers: damage raises CorruptBlob, a 500 (castore.server.statuses.error_response)
            body = await anyio.to_thread.run_sync(_whole, reader)
            return Response(body, headers=headers, media_type="application/octet-stream")
        return StreamingResponse(_chunks(reader), headers=headers, media_type="application/octet-stream")

    async def report(self, request: Request) -> Response:
        params = request.query_params
        prefix = params.get("prefix") or "/"
        sort = params.get("sort") or "name"
        try:
            depth = int(params.get("by") or "1")
            if not 0 <= depth <= 64:
                raise ValueError("--by must be between 0 and 64")
            if sort not in SORT_KEYS:
                raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}")
            folder = check_prefix(prefix)
        except ValueError as e:  # InvalidName is a ValueError
            return self._problem(request, 400, str(e))

        def compute() -> _ReportPage:
            return _ReportPage.of(self.store.dedup_report(folder, depth=depth, top=10))

        if folder == "/":  # the whole store: never on a request's path
            computed = self.whole_store.get(depth, compute)
            if computed is None:
                return self._render(request, "report_pending.html", title="Dedup report of /", depth=depth,
                                    crumbs=_crumbs("/"))
        else:
            computed = await self.reports.get((folder, depth), lambda: self._run_heavy(compute))
        page = computed.value
        report = page.report
        return self._render(request, "report.html", title=f"Dedup report of {report.prefix}", report=report,
                            groups=page.rows[sort], hidden=max(page.groups - REPORT_ROWS, 0), depth=depth,
                            sort=sort, sort_keys=SORT_KEYS, crumbs=_crumbs(report.prefix),
                            computed_at=time.strftime("%H:%M:%S", time.gmtime(computed.at)),
                            computed_ago=max(int(self.reports.clock() - computed.tick), 0), report_ttl=REPORT_TTL,
                            background=folder == "/")


def _whole(reader: BlobReader) -> bytes:
    """The whole (small) content, verified, and the reader closed."""
    with reader:
        return reader.read()


def _chunks(reader: BlobReader) -> Iterator[bytes]:
    """The content, chunk by chunk (Starlette runs this iterator in a worker thread)."""
    with reader:
        while chunk := reader.read(IO_BUFFER):
            yield chunk


def ui_mount(store: Store, *, clock: Callable[[], float] = time.monotonic) -> Mount:
    """The ``/ui`` routes for ``store``, to add to the server app's routes.

    ``clock``: the seconds by which cached usage and reports age (tests move it).
    """
    pages = _Pages(store, clock=clock)
    return Mount(
        "/ui",
        routes=[
            Route("/", pages.index, methods=["GET"]),
            Route("/browse/{path:path}", pages.browse, methods=["GET"]),
            Route("/file/{path:path}", pages.file, methods=["GET"]),
            Route("/download/{path:path}", pages.download, methods=["GET"]),
            Route("/report", pages.report, methods=["GET"]),
        ],
    )
