"""Attacks on issue #19's new pieces that found bugs: each test failed before its fix.

A hostile old server of ``serve --migrate-from`` (scripted with the hostile-migration
tests' :class:`OldServer`) must get castore to answer a clean 502 naming it, never a 500
"internal error" with a traceback in the log, nor make a worker hold a gigabyte for a
listing of short names; two DELETEs racing over a slow old server must not bring a
deleted file back; the report page's cache must not keep every group of every report.
"""

from __future__ import annotations

import gc
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from castore.client.remote import Remote
from castore.errors import FiletrackerError
from castore.metadata.report import GroupUsage
from castore.migration.live import MigrationLimits
from castore.protocol import format_version
from castore.server import ui
from castore.server.app import create_app
from castore.server.config import ServerConfig
from castore.store import Store
from tests.migration.test_live_migration_hostile import (
    GUARD,
    OLD_VERSION,
    OldServer,
    _Handler,
    not_found,
    send_file,
)
from tests.server_process import castore_server

pytestmark = pytest.mark.backends("sqlite+file")


def _answer(handler: _Handler, status: int, headers: dict[str, str], body: bytes = b"") -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def test_an_old_servers_listing_that_is_not_utf8_is_a_502(store: Store) -> None:
    """Filetracker 2.3.3 encodes every listed name as UTF-8; other bytes are a malformed answer.

    Before: 500 ``internal error: UnicodeDecodeError`` (a traceback in the log)."""
    body = b"ok\nbad\xff\xfename\n"

    def answer(handler: _Handler) -> None:
        if handler.path.startswith("/list/"):
            _answer(handler, 200, {"Content-Length": str(len(body))}, body)
        else:
            not_found(handler)

    with OldServer(answer) as old, \
            TestClient(create_app(store, ServerConfig(migrate_from=old.url)), raise_server_exceptions=False) as http:
        response = http.get("/list/")
    assert response.status_code == 502
    assert old.url in response.headers["x-exception"] and "UTF-8" in response.headers["x-exception"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_redirect_to_a_non_ascii_target_is_a_502(tmp_path: Path, method: str) -> None:
    """A same-origin ``Location`` with a raw non-ASCII byte, which http.client cannot send.

    On a real server: the message names the target, a byte Starlette's test client
    cannot decode. Before: 500 ``internal error: UnicodeEncodeError``."""

    def answer(handler: _Handler) -> None:
        if handler.path == "/files/x":
            _answer(handler, 307, {"Location": "/files/caf\xe9", "Content-Length": "0"})
        else:
            not_found(handler)

    with OldServer(answer) as old, \
            castore_server(tmp_path / "castore", "--workers", "1", "--migrate-from", old.url) as url:
        response = httpx.request(method, url + "/files/x")
        assert response.status_code == 502
        assert old.url in response.headers["x-exception"]
        assert old.requests == ["/files/x"]
        assert httpx.get(url + "/files/x").status_code == 502  # and again: nothing was stored


def test_a_delete_whose_old_version_is_newer_keeps_a_concurrent_deletion(tmp_path: Path) -> None:
    """Two DELETEs of a path only the old server has (at ``OLD + 200``), while it is slow to
    answer their HEADs: one at ``OLD + 100`` (older: nothing deleted), one at ``OLD + 300``.

    The first one put back the deletions table as it found it, erasing the second's
    deletion, which had answered 200: the old file then came back on the next GET.
    """
    answer_heads = threading.Event()

    def answer(handler: _Handler) -> None:
        if handler.command == "HEAD":
            answer_heads.wait(GUARD)
        send_file(handler, b"old content", version=OLD_VERSION + 200)

    with OldServer(answer) as old, \
            castore_server(tmp_path / "castore", "--workers", "1", "--migrate-from", old.url) as url:
        def delete(version: int) -> int:
            params = {"last_modified": format_version(version)}
            return httpx.delete(url + "/files/p", params=params, timeout=GUARD).status_code

        with ThreadPoolExecutor(2) as pool:
            older = pool.submit(delete, OLD_VERSION + 100)
            assert old.wait_for(lambda: len(old.requests) == 1)
            newer = pool.submit(delete, OLD_VERSION + 300)
            assert old.wait_for(lambda: len(old.requests) == 2)
            answer_heads.set()
            assert older.result() == 200 and newer.result() == 200
        assert httpx.get(url + "/files/p").status_code == 404
        assert old.requests == ["/files/p", "/files/p"]  # not asked again: the deletion is remembered


MALFORMED_LOCATIONS = ["http://127.0.0.1:99999/files/y", "http://127.0.0.1:-1/files/y", "http://[::1/files/y"]
"""Locations ``urlsplit`` takes, but whose port or host it cannot tell (ValueError on asking)."""


def _redirecting_to(location: str) -> Callable[[_Handler], None]:
    def answer(handler: _Handler) -> None:
        if handler.path == "/files/x":
            _answer(handler, 307, {"Location": location, "Content-Length": "0"})
        else:
            not_found(handler)

    return answer


@pytest.mark.parametrize("location", MALFORMED_LOCATIONS)
def test_a_redirect_to_a_malformed_location_is_a_502(store: Store, location: str) -> None:
    """Before: 500 ``internal error: ValueError`` (Port out of range, Invalid IPv6 URL)."""
    with OldServer(_redirecting_to(location)) as old, \
            TestClient(create_app(store, ServerConfig(migrate_from=old.url)), raise_server_exceptions=False) as http:
        response = http.get("/files/x")
    assert response.status_code == 502
    assert "redirected" in response.headers["x-exception"] and not store.exists("/x")


@pytest.mark.parametrize("location", MALFORMED_LOCATIONS)
def test_castores_client_reports_a_malformed_redirect_as_a_filetracker_error(location: str) -> None:
    """castore's client follows redirects to other servers: the same Location is its error, not a ValueError."""
    with OldServer(_redirecting_to(location)) as old:
        remote = Remote(old.url)
        try:
            with pytest.raises(FiletrackerError, match="redirected"):
                remote.open("/x")
        finally:
            remote.close()


def test_an_old_servers_listing_of_many_short_names_is_refused(store: Store) -> None:
    """The listing limit is in bytes, but a name costs some 180 bytes of a worker's memory however
    short: 53 MiB of 7 M seven-digit names took 1.2 GB and 21 s of CPU. Within the byte limit, a listing of more than one name per 32 bytes of it is refused."""
    names = [f"{i:07}" for i in range(4001)]  # 32 008 bytes: within 64 000, but 4001 names > 64 000 / 32
    listed = [names]

    def answer(handler: _Handler) -> None:
        body = "".join(name + "\n" for name in listed[0]).encode()
        _answer(handler, 200, {"Content-Length": str(len(body))}, body)

    with OldServer(answer) as old, TestClient(create_app(
            store, ServerConfig(migrate_from=old.url, migration_limits=MigrationLimits(listing=64_000)))) as http:
        response = http.get("/list/")
        assert response.status_code == 502 and "names" in response.headers["x-exception"]
        listed[0] = names[:2000]  # one name per 32 bytes of the limit: listed
        assert http.get("/list/").text.split() == names[:2000]


def _held(value: object, kind: type) -> int:
    """How many distinct ``kind`` objects ``value`` holds, through containers and castore's own objects.

    The walk stays out of modules, classes and functions (and so out of whatever other tests
    left in the process, such as Django's lazy objects, whose attributes may raise).
    """
    seen: set[int] = set()
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        kind_of_item = type(item)
        count += issubclass(kind_of_item, kind)
        if isinstance(item, (list, tuple, dict, set, frozenset)) or kind_of_item.__module__.startswith("castore."):
            stack.extend(gc.get_referents(item))
    return count


def test_the_cached_report_page_keeps_only_the_rows_it_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report cache keeps up to RECENT_REPORTS reports a minute per worker; a report has a group
    per path at a deep ``--by`` (~440 bytes each: 16 reports of a 1 M-path store, ~7 GB), and each
    reload sorted all of them again on the event loop. Only the rows a page shows are kept."""
    monkeypatch.setattr(ui, "REPORT_ROWS", 10)
    store = Store.open(tmp_path / "s", create=True)
    store.put_many([(f"/r/{i:04}/f", 1, random.Random(i).randbytes(i + 1), None) for i in range(300)])  # sizes differ
    mount = ui.ui_mount(store)
    reports = mount.routes[0].endpoint.__self__.reports  # type: ignore[attr-defined]
    with TestClient(Starlette(routes=[mount])) as http:
        pages = {sort: http.get("/ui/report", params={"prefix": "/r", "by": "1", "sort": sort}).text
                 for sort in ui.SORT_KEYS}
    assert all("290 more groups are not shown" in page for page in pages.values())
    assert pages["name"].index("/r/0000/") < pages["name"].index("/r/0009/") and "/r/0010/" not in pages["name"]
    assert pages["freed"].index("/r/0299/") < pages["freed"].index("/r/0290/") and "/r/0289/" not in pages["freed"]
    assert [key for key, _ in reports._results.items()] == [("/r/", 1)]
    cached = reports._results[("/r/", 1)].value
    assert _held(cached, GroupUsage) <= 10 * len(ui.SORT_KEYS) + 1  # and the total
    store.close()
