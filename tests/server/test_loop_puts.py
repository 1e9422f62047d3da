"""Small puts stored on the event loop answer exactly as puts stored in a worker thread.

The server stores a small in-memory body at once on the event loop when the SQLite
write lock is free (``FiletrackerApp._store_on_loop``) and otherwise in a thread, where
it waits its turn. Both must give the same statuses, versions and stored contents, with
every check of an upload kept (sizes, SHA-256, gzip and zstd framing); a busy database
must send the put to a thread with nothing written by the attempt on the loop.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from starlette.testclient import TestClient

from castore.errors import WouldWait
from castore.metadata.engine import BUSY_TIMEOUT_MS
from castore.names import parse_name
from castore.server.app import create_app
from castore.server.handlers import FiletrackerApp
from castore.store import METADATA_FILE, Store

from ..server_process import on_event_loop

V0 = "Thu, 01 Jan 1970 00:00:10 -0000"
V1 = "Thu, 01 Jan 1970 00:16:40 -0000"
V2 = "Thu, 01 Jan 1970 00:33:20 -0000"
TEXT = b"1 2 3 4 5 6 7 8 9 10\n" * 400
RANDOM = os.urandom(64 * 1024)
LARGE = os.urandom(300 * 1024)  # over the default inline_max (128 KiB): a blob file, in a thread

Request = tuple[str, str, dict[str, str], bytes]


def q(version: str) -> str:
    return "?last_modified=" + version.replace(" ", "%20")


def _filetracker_put(path: str, data: bytes, version: str, **changes: Any) -> Request:
    """A PUT as Filetracker's client sends it: gzip, with the SHA-256 and size of the content."""
    headers = {"Content-Encoding": "gzip", "SHA256-Checksum": hashlib.sha256(data).hexdigest(),
               "Logical-Size": str(len(data))}
    body = gzip.compress(data)
    headers.update({k.replace("_", "-"): v for k, v in changes.items() if k != "body"})
    return ("PUT", "/files" + path + q(version), headers, changes.get("body", body))


SEQUENCE: list[Request] = [
    _filetracker_put("/r.bin", RANDOM, V1),
    ("GET", "/files/r.bin", {}, b""),
    _filetracker_put("/r.bin", TEXT, V0),  # older: ignored, answers the current version
    _filetracker_put("/r.bin", TEXT, V2),
    _filetracker_put("/r.bin", TEXT, V2),  # the same version again: replaces
    ("GET", "/files/r.bin", {}, b""),
    ("GET", "/files/r.bin@1000", {}, b""),
    _filetracker_put("/copy.bin", RANDOM, V1),  # the same content under another name: shared
    _filetracker_put("/bad-sha.bin", RANDOM, V1, SHA256_Checksum="00" * 32),
    _filetracker_put("/short.bin", RANDOM, V1, Logical_Size=str(len(RANDOM) + 1)),
    _filetracker_put("/long.bin", RANDOM, V1, Logical_Size=str(len(RANDOM) - 1)),
    _filetracker_put("/cut.bin", RANDOM, V1, body=gzip.compress(RANDOM)[:-9]),
    _filetracker_put("/trailing.bin", RANDOM, V1, body=gzip.compress(RANDOM) + b"junk"),
    _filetracker_put("/not-gzip.bin", RANDOM, V1, body=RANDOM),
    ("PUT", "/files/plain.txt" + q(V1), {}, TEXT),
    ("PUT", "/files/plain.txt" + q(V1), {"Logical-Size": "12"}, TEXT),
    ("PUT", "/files/z.txt" + q(V1), {"Content-Encoding": "zstd", "Logical-Size": str(len(TEXT))},
     zstandard.ZstdCompressor().compress(TEXT)),
    ("PUT", "/files/z.txt" + q(V2), {"Content-Encoding": "zstd", "Logical-Size": str(len(TEXT) - 1)},
     zstandard.ZstdCompressor().compress(TEXT)),
    ("PUT", "/files/empty" + q(V1), {}, b""),
    _filetracker_put("/large.bin", LARGE, V1),
    ("GET", "/files/large.bin", {}, b""),
    ("GET", "/files/z.txt", {"Accept-Encoding": "zstd"}, b""),
    ("HEAD", "/files/copy.bin", {}, b""),
    ("DELETE", "/files/copy.bin" + q(V2), {}, b""),
    ("GET", "/list/", {}, b""),
]


def _answer(client: TestClient, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    method, url, headers, body = request
    response = client.request(method, url, headers=headers, content=body or None)
    return response.status_code, sorted(response.headers.multi_items()), response.content


def _state(store: Store) -> list[tuple[str, int, int, str | None, bytes]]:
    """Every retained version of every path, with its content: what the puts left behind."""
    rows = []
    for info in store.list("/"):
        for version in store.versions(info.path):
            rows.append((version.path, version.version, version.size, version.digest,
                         store.read_bytes(version.name)))
    return rows


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Callable[..., tuple[tuple[TestClient, Store], tuple[TestClient, Store]]]]:
    opened: list[tuple[Store, TestClient]] = []

    def make(**options: Any) -> tuple[tuple[TestClient, Store], tuple[TestClient, Store]]:
        first, second = tmp_path / "loop", tmp_path / "thread"
        Store.open(first, create=True).close()
        shutil.copytree(first, second)  # one seed: the same ETags on both
        made = []
        for root, on_loop in ((first, True), (second, False)):
            store = Store.open(root)
            client = TestClient(create_app(store, loop_puts=on_loop, **options), raise_server_exceptions=False)
            opened.append((store, client))
            made.append((client, store))
        return made[0], made[1]

    yield make
    for store, client in opened:
        client.close()
        store.close()


@pytest.fixture
def where_puts_run(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, str]]:
    """``(path, on the event loop, outcome)`` of every body the server decoded and stored, in order."""
    seen: list[tuple[str, bool, str]] = []
    original = FiletrackerApp._store_body

    def watched(self: FiletrackerApp, path: str, *args: Any, **kwargs: Any) -> Any:
        try:
            result = original(self, path, *args, **kwargs)
        except Exception as e:
            seen.append((path, on_event_loop(), type(e).__name__))
            raise
        seen.append((path, on_event_loop(), "stored"))
        return result

    monkeypatch.setattr(FiletrackerApp, "_store_body", watched)
    return seen


def test_puts_on_the_loop_answer_as_puts_in_a_thread(
    pair: Callable[..., tuple[tuple[TestClient, Store], tuple[TestClient, Store]]],
    where_puts_run: list[tuple[str, bool, str]],
) -> None:
    (loop_client, loop_store), (thread_client, thread_store) = pair()
    for request in SEQUENCE:
        assert _answer(loop_client, request) == _answer(thread_client, request), request
    assert _state(loop_store) == _state(thread_store)
    assert loop_store.read_bytes("/r.bin@1000") == RANDOM
    # the loop app stored its small contents on the loop, the other app none there
    on_loop = {name for name, loop, _ in where_puts_run if loop}
    assert "/r.bin" in on_loop and "/z.txt" in on_loop and "/plain.txt" in on_loop
    assert "/large.bin" not in on_loop  # a blob file: written in a thread
    assert sum(loop for _, loop, _ in where_puts_run) * 2 < len(where_puts_run)


def test_the_bad_uploads_are_refused_on_the_loop_too(
    pair: Callable[..., tuple[tuple[TestClient, Store], tuple[TestClient, Store]]],
    where_puts_run: list[tuple[str, bool, str]],
) -> None:
    (client, store), _ = pair()
    for request in SEQUENCE[8:14]:
        response = client.request(request[0], request[1], headers=request[2], content=request[3])
        assert response.status_code == 400, request
        assert response.headers["X-Exception"]
    refused = [(name, outcome) for name, loop, outcome in where_puts_run if loop]
    assert [name for name, _ in refused] == [
        "/bad-sha.bin", "/short.bin", "/long.bin", "/cut.bin", "/trailing.bin", "/not-gzip.bin"
    ]
    assert all(outcome == "SourceError" for _, outcome in refused)
    assert list(store.list("/")) == []


def _hold_write_lock(database: Path, seconds: float, release: threading.Event | None = None) -> threading.Thread:
    """Another connection (as another process would) holds SQLite's write lock for ``seconds``
    (or until ``release`` is set, if sooner)."""
    taken = threading.Event()
    release = release or threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(database, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            taken.set()
            release.wait(seconds)
            connection.execute("ROLLBACK")
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    return holder


@pytest.fixture
def grouped(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The names of every group the group writer stored in one transaction (``Store.put_many``), in order."""
    groups: list[list[str]] = []
    original = Store.put_many

    def watched(self: Store, items: Any, **kwargs: Any) -> Any:
        names = original(self, items, **kwargs)
        groups.append([parse_name(name).path for name in names])
        return names

    monkeypatch.setattr(Store, "put_many", watched)
    return groups


@pytest.mark.parametrize("group_puts", [True, False], ids=["grouped", "thread"])
def test_a_put_finding_the_database_locked_is_stored_later(
    tmp_path: Path, where_puts_run: list[tuple[str, bool, str]], grouped: list[list[str]], group_puts: bool,
) -> None:
    """It is stored by the group writer (:mod:`castore.server.grouping`), or without groups in a thread."""
    with Store.open(tmp_path / "s", create=True) as store, \
            TestClient(create_app(store, group_puts=group_puts)) as client:
        holder = _hold_write_lock(tmp_path / "s" / METADATA_FILE, 0.5)
        try:
            response = client.request(*_filetracker_put("/a.bin", RANDOM, V1)[:2],
                                      headers=_filetracker_put("/a.bin", RANDOM, V1)[2],
                                      content=gzip.compress(RANDOM))
        finally:
            holder.join()
        assert response.status_code == 200, response.headers.get("X-Exception")
        assert response.headers["Last-Modified"] == V1
        if group_puts:
            assert where_puts_run == [("/a.bin", True, "WouldWait")]
            assert grouped == [["/a.bin"]]
        else:
            assert where_puts_run == [("/a.bin", True, "WouldWait"), ("/a.bin", False, "stored")]
            assert grouped == []
        assert store.read_bytes("/a.bin") == RANDOM
        assert [v.version for v in store.versions("/a.bin")] == [1000]


@pytest.mark.parametrize("group_puts", [True, False], ids=["grouped", "thread"])
def test_a_put_waiting_for_this_process_s_turn_is_stored_later(
    tmp_path: Path, where_puts_run: list[tuple[str, bool, str]], grouped: list[list[str]], group_puts: bool,
) -> None:
    with Store.open(tmp_path / "s", create=True) as store, \
            TestClient(create_app(store, group_puts=group_puts)) as client:
        turn = store.metadata._write_turn
        released = threading.Event()

        def hold() -> None:
            with turn:
                released.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            threading.Timer(0.3, released.set).start()
            response = client.put("/files/a.txt" + q(V1), content=TEXT)
        finally:
            released.set()
            holder.join()
        assert response.status_code == 200
        stored_later = [] if group_puts else [("/a.txt", False, "stored")]
        assert where_puts_run == [("/a.txt", True, "WouldWait"), *stored_later]
        assert grouped == ([["/a.txt"]] if group_puts else [])
        assert store.read_bytes("/a.txt") == TEXT


def test_not_waiting_writes_nothing_when_the_lock_is_taken_and_leaves_connections_waiting(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", create=True) as store:
        metadata = store.metadata
        holder = _hold_write_lock(tmp_path / "s" / METADATA_FILE, 0.5)
        try:
            with pytest.raises(WouldWait), metadata.not_waiting():
                store.put("/a.txt", TEXT, 1000)
        finally:
            holder.join()
        assert not store.exists("/a.txt")
        with metadata.not_waiting():
            assert store.put("/a.txt", TEXT, 1000) == "/a.txt@1000"  # free now: written at once
        with metadata.write() as txn:  # the pooled connection waits for other writers again
            raw = txn._c.connection.driver_connection
            assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
        assert store.read_bytes("/a.txt") == TEXT


def test_a_body_far_larger_than_its_small_content_is_decoded_in_a_thread(
    tmp_path: Path, where_puts_run: list[tuple[str, bool, str]],
) -> None:
    """A body of 1 MiB of empty zstd frames (or gzip, or anything) declaring a tiny content:
    decoding ~100,000 frames takes ~1 s, which on the event loop stalls every other request
    of the worker; such a body goes to a thread, where it is checked as before."""
    empty = hashlib.sha256(b"").hexdigest()
    frames = zstandard.ZstdCompressor().compress(b"") * ((1000 << 10) // 9)
    with Store.open(tmp_path / "s", create=True) as store, TestClient(create_app(store)) as client:
        for name, headers in (("/sha.bin", {"SHA256-Checksum": empty}), ("/plain.bin", {})):
            response = client.put(f"/files{name}" + q(V1), content=frames,
                                  headers={"Content-Encoding": "zstd", "Logical-Size": "0", **headers})
            assert response.status_code in (200, 400), response.headers.get("X-Exception")
        assert [(name, loop) for name, loop, _ in where_puts_run] == [("/sha.bin", False), ("/plain.bin", False)]
