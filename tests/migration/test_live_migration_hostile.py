"""``castore serve --migrate-from``: a dead or hostile old server must not stall or bloat castore.

Each test scripts its own old server on 127.0.0.1 (:class:`OldServer`): one that never
answers, drips its body, redirects to another port, sends a zstd frame asking for a
huge window, a far-future ``Last-Modified`` or hostile names in ``/list/``.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
import zstandard
from starlette.testclient import TestClient

from castore.errors import Busy, FiletrackerError
from castore.migration.live import LiveMigration, MigrationLimits, MigrationStatus, migration_status
from castore.protocol import format_version, parse_version_date
from castore.server.app import create_app
from castore.server.config import ServerConfig
from castore.server.upload import UploadLimits
from castore.store import Store
from tests.server_process import castore_server, free_port, read_response_head

pytestmark = pytest.mark.backends("sqlite+file")

GUARD = 20.0
"""Seconds after which a request counts as hung (a "did not hang" guard, not a speed check)."""
OLD_VERSION = 1_600_000_000

Answer = Callable[["_Handler"], None]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.old.seen(self)
        self.server.old.answer(self)

    do_HEAD = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    old: OldServer


class OldServer:
    """A scripted old Filetracker server: ``answer(handler)`` writes each response."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[str] = []
        self.hung_up = 0
        """Connections whose client (castore) closed them while the server held them."""
        self.release = threading.Event()
        self.changed = threading.Condition()
        self.http = _Server(("127.0.0.1", 0), _Handler)
        self.http.old = self
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self._thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def seen(self, handler: _Handler) -> None:
        with self.changed:
            self.requests.append(handler.path)
            self.changed.notify_all()

    def wait_for(self, condition: Callable[[], bool]) -> bool:
        with self.changed:
            return self.changed.wait_for(condition, GUARD)

    def hang(self, handler: _Handler) -> None:
        """Never answer; note when castore closes the connection."""
        connection = handler.connection
        while not self.release.is_set():
            readable, _, _ = select.select([connection], [], [], 0.1)
            if readable and not connection.recv(1, socket.MSG_PEEK):
                with self.changed:
                    self.hung_up += 1
                    self.changed.notify_all()
                return
        handler.close_connection = True

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.http.shutdown()
        self.http.server_close()


def send_file(handler: _Handler, body: bytes, *, version: int = OLD_VERSION, headers: dict[str, str] | None = None,
              status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("Last-Modified", format_version(version))
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def not_found(handler: _Handler) -> None:
    handler.send_response(404)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "castore"


def _metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


# -- 1. stall --------------------------------------------------------------------------------


def _send_miss(url: str, path: str) -> socket.socket:
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname or "", parts.port or 80))
    s.sendall(f"GET /files{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return s


def _answered(sockets: list[socket.socket], expected: int) -> list[bytes]:
    """The response heads of the first ``expected`` sockets that answer (within the guard)."""
    heads: list[bytes] = []
    waiting = list(sockets)
    deadline = time.monotonic() + GUARD
    while len(heads) < expected and time.monotonic() < deadline:
        readable, _, _ = select.select(waiting, [], [], 0.5)
        for s in readable:
            heads.append(read_response_head(s))
            waiting.remove(s)
    return heads


def test_misses_on_a_hanging_old_server_stall_nobody_else(root: Path) -> None:
    """45, then 245 misses that the old server never answers: /health, a small GET, a 3 MiB GET and a
    DELETE of files castore has still answer on a one-worker server; misses past the queue get 503."""
    big = bytes(range(256)) * (3 * 4096)
    with OldServer(lambda h: h.server.old.hang(h)) as old, \
            castore_server(root, "--workers", "1", "--migrate-from", old.url, "--migrate-timeout", "60",
                           "--migrate-deadline", "120", "--migrate-fetches", "4", "--migrate-queue", "60") as url:
        version = {"last_modified": format_version(OLD_VERSION)}
        for path, data in (("/small", b"small"), ("/big", big), ("/doomed", b"x")):
            assert httpx.put(url + "/files" + path, content=data, params=version).status_code == 200
        misses = [_send_miss(url, f"/missing/{i}") for i in range(45)]
        try:
            assert old.wait_for(lambda: len(old.requests) >= 4), "the misses did not reach the old server"

            def others_answer() -> None:
                with httpx.Client(timeout=GUARD) as http:
                    assert http.get(url + "/health").status_code == 200
                    assert http.get(url + "/files/small").content == b"small"
                    assert http.get(url + "/files/big").content == big
                    put = http.put(url + "/files/big2", content=big, params=version)
                    assert put.status_code == 200

            others_answer()
            misses += [_send_miss(url, f"/more/{i}") for i in range(200)]
            busy = _answered(misses, 245 - 64)
            assert len(busy) == 245 - 64
            assert all(head.startswith(b"HTTP/1.1 503") and b"retry-after:" in head.lower() for head in busy)
            others_answer()
            with httpx.Client(timeout=GUARD) as http:
                assert http.delete(url + "/files/doomed", params=version).status_code == 200
        finally:
            for s in misses:
                s.close()


def test_a_miss_is_abandoned_when_its_client_hangs_up(root: Path) -> None:
    with OldServer(lambda h: h.server.old.hang(h)) as old, \
            castore_server(root, "--workers", "1", "--migrate-from", old.url, "--migrate-timeout", "60") as url:
        client = _send_miss(url, "/slow")
        assert old.wait_for(lambda: len(old.requests) == 1)
        client.close()
        assert old.wait_for(lambda: old.hung_up == 1), "castore kept waiting for the old server"


def _dripping(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Last-Modified", format_version(OLD_VERSION))
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    while not handler.server.old.release.is_set():
        try:
            handler.wfile.write(b"x")
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("answer", [_dripping, lambda h: h.server.old.hang(h)], ids=["drips", "hangs"])
def test_a_fetch_ends_at_its_deadline(store: Store, answer: Answer) -> None:
    with OldServer(answer) as old, \
            TestClient(create_app(store, ServerConfig(migrate_from=old.url,
                                  migration_limits=MigrationLimits(timeout=60, deadline=1)))) as http:
        response = http.get("/files/drip")
        assert response.status_code == 502
        assert "did not answer" in response.headers["x-exception"]
        if answer is not _dripping:  # a hanging old server sees its connection shut at the deadline
            assert old.wait_for(lambda: old.hung_up == 1), "the old server's connection was left open"
        assert _metric(http.get("/metrics").text, "castore_migration_gave_up_total") == 1
    assert not store.exists("/drip")


# -- 2. memory ------------------------------------------------------------------------------


def _wide_frame(content: bytes, window_log: int) -> bytes:
    compressor = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters(window_log=window_log))
    writer = compressor.compressobj()  # no content size in the header: the window is not shrunk to it
    return writer.compress(content) + writer.flush()


def test_an_old_servers_zstd_window_over_the_limit_is_refused(store: Store) -> None:
    content = b"abc" * 1000
    frame = _wide_frame(content, 21)

    def answer(handler: _Handler) -> None:
        send_file(handler, frame, headers={"Content-Encoding": "zstd", "Logical-Size": str(len(content))})

    with OldServer(answer) as old, TestClient(create_app(
            store, ServerConfig(migrate_from=old.url, limits=UploadLimits(max_zstd_window=1 << 20)))) as http:
        response = http.get("/files/wide")
        assert response.status_code == 502
        assert "window" in response.headers["x-exception"] and "\n" not in response.text.strip()
    assert not store.exists("/wide")


def test_an_old_servers_file_over_the_upload_limit_is_refused(store: Store) -> None:
    with OldServer(lambda h: send_file(h, b"y" * 5000)) as old, TestClient(create_app(
            store, ServerConfig(migrate_from=old.url, limits=UploadLimits(max_upload_size=4000)))) as http:
        response = http.get("/files/large")
        assert response.status_code == 502
        assert "4000" in response.headers["x-exception"]
        assert http.get("/files/large", headers={"Accept-Encoding": "zstd"}).status_code == 502
    assert not store.exists("/large")


def test_an_old_servers_listing_over_the_limit_is_refused(store: Store) -> None:
    names = {f"name-{i:06}": OLD_VERSION for i in range(2000)}  # some 24 KB of listing
    with OldServer(_listing(names)) as old, TestClient(create_app(
            store, ServerConfig(migrate_from=old.url, migration_limits=MigrationLimits(listing=16000)))) as http:
        response = http.get("/list/")
        assert response.status_code == 502 and "16000 bytes" in response.headers["x-exception"]


# -- 3. redirects ---------------------------------------------------------------------------


def test_no_redirect_to_another_origin_is_followed(store: Store) -> None:
    with OldServer(lambda h: send_file(h, b"from elsewhere")) as elsewhere:
        def answer(handler: _Handler) -> None:
            if handler.path == "/files/here/x":
                send_file(handler, b"same origin")
                return
            target = elsewhere.url if handler.path.startswith("/files/redirect_internal") else old.url + "/files/here"
            handler.send_response(307)
            handler.send_header("Location", target + handler.path.removeprefix("/files"))
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with OldServer(answer) as old, TestClient(create_app(store, ServerConfig(migrate_from=old.url))) as http:
            response = http.get("/files/redirect_internal/x")
            assert response.status_code == 502 and "redirect" in response.headers["x-exception"]
            assert http.get("/files/x").content == b"same origin"  # same scheme, host and port: followed
    assert not elsewhere.requests and not store.exists("/redirect_internal/x")


# -- 4. versions and names ------------------------------------------------------------------

FUTURE = 253402300799


def _listing(names: dict[str, int]) -> Answer:
    """An old server holding ``names`` (relative path -> version), which lists them by cutoff."""

    def answer(handler: _Handler) -> None:
        url = urlsplit(handler.path)
        if url.path.startswith("/list/"):
            cutoff = parse_version_date(parse_qs(url.query)["last_modified"][0])
            body = "".join(f"{n}\n" for n, v in names.items() if v <= cutoff).encode()
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        name = url.path.removeprefix("/files/")
        if name in names:
            send_file(handler, b"old " + name.encode(), version=names[name])
        else:
            not_found(handler)

    return answer


def test_a_far_future_version_is_refused_counted_and_reported(store: Store) -> None:
    with OldServer(_listing({"future": FUTURE, "fine": OLD_VERSION})) as old, \
            TestClient(create_app(store, ServerConfig(migrate_from=old.url))) as http:
        response = http.get("/files/future")
        assert response.status_code == 502 and "future" in response.headers["x-exception"]
        assert "version (" in response.headers["x-exception"] and "(now + 1 day): not taken" in response.headers["x-exception"]
        assert http.get("/files/fine").content == b"old fine"
        assert _metric(http.get("/metrics").text, "castore_migration_future_versions_total") == 1
        status = migration_status(store, old.url)
    assert not store.exists("/future")
    assert status.old_files == 2 and status.moved == 1
    assert [p for p in status.problems if "future" in p] == [
        "1 path has a version beyond the horizon (now + 1 day): /future"]


def test_hostile_names_are_left_out_of_the_merged_list(store: Store) -> None:
    names = {"../../etc/passwd": OLD_VERSION, "bad//x": OLD_VERSION, "x\u0085y": OLD_VERSION, "ok": OLD_VERSION}
    store.put("/mine", b"mine", OLD_VERSION)
    with OldServer(_listing(names)) as old, TestClient(create_app(store, ServerConfig(migrate_from=old.url))) as http:
        assert http.get("/list/").text == "mine\nok\n"
        assert _metric(http.get("/metrics").text, "castore_migration_bad_names_total") == 3
        assert len(migration_status(store, old.url).problems) == 3


# -- 5. remembered deletions ----------------------------------------------------------------


def test_a_deleted_path_is_404_while_the_old_server_is_down(store: Store) -> None:
    store.put("/gone", b"gone", OLD_VERSION)
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with TestClient(create_app(store, ServerConfig(migrate_from=down))) as http:
        assert http.delete("/files/gone", params={"last_modified": format_version(OLD_VERSION)}).status_code == 200
        for method in ("GET", "HEAD"):
            assert http.request(method, "/files/gone").status_code == 404


def test_a_delete_asking_a_hanging_old_server_ends_at_its_deadline_and_hangs_up(store: Store) -> None:
    """DELETE of a path castore lacks asks the old server (a HEAD); given up at the deadline,
    that call's socket is shut down, so its thread does not wait out --migrate-timeout."""
    with OldServer(lambda h: h.server.old.hang(h)) as old, \
            TestClient(create_app(store, ServerConfig(migrate_from=old.url,
                                  migration_limits=MigrationLimits(timeout=600, deadline=1)))) as http:
        response = http.delete("/files/elsewhere", params={"last_modified": format_version(OLD_VERSION)})
        assert response.status_code == 502 and "did not answer" in response.headers["x-exception"]
        assert old.requests == ["/files/elsewhere"]
        assert old.wait_for(lambda: old.hung_up == 1), "the old server's connection was left open"
    assert store.metadata.deletion("/elsewhere") is None


def test_a_listing_asking_a_hanging_old_server_ends_at_its_deadline_and_hangs_up(store: Store) -> None:
    with OldServer(lambda h: h.server.old.hang(h)) as old, \
            TestClient(create_app(store, ServerConfig(migrate_from=old.url,
                                  migration_limits=MigrationLimits(timeout=600, deadline=1)))) as http:
        response = http.get("/list/d/")
        assert response.status_code == 502
        assert response.headers["x-exception"].endswith("did not answer for /d/ within 1 s")
        assert old.wait_for(lambda: old.hung_up == 1), "the old server's connection was left open"


def test_an_old_servers_listing_of_too_many_names_is_refused(store: Store) -> None:
    """``listing`` bytes allow one name per LISTING_BYTES_PER_NAME of them: 320 bytes, 10 names."""
    names = {f"n{i}": OLD_VERSION for i in range(11)}  # 44 bytes: within the bytes, over the names
    with OldServer(_listing(names)) as old, TestClient(create_app(
            store, ServerConfig(migrate_from=old.url, migration_limits=MigrationLimits(listing=320)))) as http:
        response = http.get("/list/")
        assert response.status_code == 502 and "has over 10 names" in response.headers["x-exception"]
        del names["n10"]
        assert http.get("/list/").text == "".join(f"n{i}\n" for i in range(10))


def test_a_folder_only_castore_has_is_listed_when_the_old_server_says_404(store: Store) -> None:
    store.put("/mine/x", b"mine", OLD_VERSION)
    with OldServer(not_found) as old, TestClient(create_app(store, ServerConfig(migrate_from=old.url))) as http:
        assert http.get("/list/mine/").text == "x\n"


def _double_encoded(name: str) -> str:
    """How Filetracker 2.3.3 lists a non-ASCII name."""
    return name.encode("utf-8").decode("latin-1")


def test_each_part_of_an_old_name_is_decoded_on_its_own(store: Store) -> None:
    """A double-encoded folder holding a name that is not (real non-Latin-1 text): both read right."""
    with OldServer(_listing({_double_encoded("ą") + "/ł": OLD_VERSION})) as old, \
            TestClient(create_app(store, ServerConfig(migrate_from=old.url))) as http:
        assert http.get("/list/").text == "ą/ł\n"
        status = migration_status(store, old.url)
    assert (status.left, status.problems) == (["/ą/ł"], [])


def test_migration_status_counts_each_old_path_once(store: Store) -> None:
    """Moved (castore has the old version or newer), deleted, left (in the listing's order),
    a refused name and the paths beyond the horizon (ten named, then "..."); with ``versions``
    a path castore has at an older version is left too."""
    now = int(time.time())
    store.put("/same", b"same", OLD_VERSION)
    store.put("/stale", b"stale", OLD_VERSION - 10)
    store.put("/newer", b"newer", OLD_VERSION + 10)
    store.metadata.remember_deletion("/deleted", OLD_VERSION)
    store.metadata.remember_deletion("/deleted2", OLD_VERSION)
    names = {"same": OLD_VERSION, "left1": OLD_VERSION, "stale": OLD_VERSION, "deleted": OLD_VERSION,
             "newer": OLD_VERSION, "recent": now - 60, "soon": now + 3600, "left2": OLD_VERSION,
             "deleted2": OLD_VERSION, "bad//name": OLD_VERSION}
    names.update({f"f{i:02}": FUTURE for i in range(11)})
    futures = ", ".join(f"/f{i:02}" for i in range(10))
    with OldServer(_listing(names)) as old:
        plain = migration_status(store, old.url)
        with_versions = migration_status(store, old.url, versions=True)
        del names["f10"]
        ten = migration_status(store, old.url)  # exactly ten: all named
    bad = "invalid path '/bad//name': a path must not have empty segments or end with '/'"
    assert plain == MigrationStatus(21, 3, 2, ["/left1", "/recent", "/soon", "/left2"], [
        bad, f"11 paths have a version beyond the horizon (now + 1 day): {futures}, ..."])
    assert with_versions == MigrationStatus(21, 2, 2, ["/left1", "/stale", "/recent", "/soon", "/left2"], plain.problems)
    assert ten.problems[1] == f"10 paths have a version beyond the horizon (now + 1 day): {futures}"


@pytest.mark.parametrize("status", [404, 500])
def test_requests_for_one_path_share_one_call_to_the_old_server(store: Store, status: int) -> None:
    """A second miss of a path being fetched waits for that fetch and shares its outcome: not
    there (False), or its error (naming the path); the old server is asked once."""
    go = threading.Event()

    def answer(handler: _Handler) -> None:
        go.wait(GUARD)
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    outcomes: list[object] = []

    async def two_misses(live: LiveMigration) -> None:
        async def miss() -> None:
            try:
                outcomes.append(await live.fetch("/shared"))
            except FiletrackerError as e:
                outcomes.append(str(e))

        async with anyio.create_task_group() as tg:
            tg.start_soon(miss)
            assert await anyio.to_thread.run_sync(lambda: old.wait_for(lambda: len(old.requests) == 1))
            tg.start_soon(miss)
            # until the second waits for the first's fetch (or, wrongly, asks the old server itself)
            while live._flights["/shared"].done.statistics().tasks_waiting == 0 and len(old.requests) == 1:
                await anyio.sleep(0.01)
            go.set()

    with OldServer(answer) as old:
        live = LiveMigration(store, old.url)
        try:
            anyio.run(two_misses, live)
        finally:
            live.close()
        assert old.requests == ["/files/shared"]
    if status == 404:
        assert outcomes == [False, False]
    else:
        assert len(outcomes) == 2 and outcomes[0] == outcomes[1]
        assert f"the old server {old.url} failed for /shared: " in str(outcomes[0])


def test_calls_beyond_fetches_wait_and_beyond_the_queue_are_busy(store: Store) -> None:
    """fetches=1, queue=1: one call at the old server, one waiting for its thread, a third
    refused (Busy, each counted, Retry-After the timeout rounded); afterwards there is room again."""
    go = threading.Event()

    def answer(handler: _Handler) -> None:
        go.wait(GUARD)
        not_found(handler)

    refused: list[Busy] = []

    async def three_misses(live: LiveMigration) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(live.fetch, "/first")
            assert await anyio.to_thread.run_sync(lambda: old.wait_for(lambda: len(old.requests) == 1))
            tg.start_soon(live.fetch, "/second")
            # until the second waits for the one thread (or, wrongly, reaches the old server)
            while (live._threads is None or live._threads.statistics().tasks_waiting == 0) and len(old.requests) == 1:
                await anyio.sleep(0.01)
            assert len(old.requests) == 1, "the second call waits for the one thread, not at the old server"
            for _ in range(2):
                try:
                    await live.fetch("/third")
                except Busy as e:
                    refused.append(e)
            go.set()
        assert await live.fetch("/fourth") is False  # every call has ended: room again

    with OldServer(answer) as old:
        live = LiveMigration(store, old.url, limits=MigrationLimits(timeout=2.6, fetches=1, queue=1))
        try:
            anyio.run(three_misses, live)
        finally:
            live.close()
        assert old.requests == ["/files/first", "/files/second", "/files/fourth"]
    assert len(refused) == 2 and live.busy == 2
    assert str(refused[0]) == f"2 calls to the old server {old.url} are under way: try again later"
    assert refused[0].retry_after == 3
    assert live.missing == 3


def test_a_recent_old_version_is_fetched_and_a_short_body_is_refused(store: Store) -> None:
    """A version of a minute ago is no future one; a body shorter than its Content-Length stores nothing."""
    recent = int(time.time()) - 60

    def answer(handler: _Handler) -> None:
        if handler.path == "/files/recent":
            send_file(handler, b"recent", version=recent)
            return
        handler.send_response(200)
        handler.send_header("Last-Modified", format_version(OLD_VERSION))
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b"only half")
        handler.close_connection = True

    with OldServer(answer) as old, TestClient(create_app(store, ServerConfig(migrate_from=old.url))) as http:
        assert http.get("/files/recent").content == b"recent"
        assert http.get("/files/short").status_code == 502
    assert store.stat("/recent").version == recent and not store.exists("/short")
