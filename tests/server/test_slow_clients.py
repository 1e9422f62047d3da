"""Idle and slow clients hold no worker thread: everyone else is still answered at once.

Each test runs a real ``castore serve`` (one worker) and holds many uploads open over
raw sockets: each sent its request head and part of its body, then nothing more.
Other clients then PUT, GET, DELETE, list and ask for health with a one-second
timeout: each answer must come before it (behaviour, not a measured speed: before
bodies were received on the event loop, 40 such uploads stalled every PUT for good).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from castore.store import Store

from ..server_process import castore_server, read_response_head, unread_bytes, wait_for

IDLE_UPLOADS = 200
ANSWER_WITHIN = 10.0
"""Seconds: the httpx timeout of every other client's request. A stalled server would hold them until
the idle uploads' ``--body-timeout`` (300 s); 1 s was too tight for a 3 MiB put at load 15-20 (a clean-clone
run beside other jobs timed out), and 10 s still tells a stall from a busy machine."""
V1000 = "Thu, 01 Jan 1970 00:16:40 -0000"
QUERY = "last_modified=Thu,%2001%20Jan%201970%2000:16:40%20-0000"


def _idle_upload(url: str, i: int) -> socket.socket:
    """A connection that sent a PUT's head and part of its body, and then stopped."""
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = f"PUT /files/idle/{i}?{QUERY} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    kind = i % 4
    if kind == 0:  # chunked: no size known, streamed
        s.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n10000\r\n".encode() + os.urandom(3000))
    elif kind == 1:  # large Content-Length: spooled
        s.sendall(f"{head}Content-Length: {8 << 20}\r\n\r\n".encode() + os.urandom(70_000))
    elif kind == 2:  # small Content-Length: kept in memory
        s.sendall(f"{head}Content-Length: 5000\r\n\r\n".encode() + os.urandom(1000))
    else:  # a zstd body with its Logical-Size, cut mid-frame
        s.sendall(f"{head}Content-Length: 90000\r\nContent-Encoding: zstd\r\nLogical-Size: 100000\r\n\r\n".encode()
                  + b"\x28\xb5\x2f\xfd" + os.urandom(500))
    return s


@contextmanager
def _held(url: str, count: int) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        for i in range(count):
            sockets.append(_idle_upload(url, i))
        yield sockets
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_idle_uploads_do_not_stall_other_clients(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root, create=True).close()
    big = os.urandom(3 << 20)  # stored as a blob file: its GET reads in a worker thread
    with castore_server(root, "--body-timeout", "300") as url, _held(url, IDLE_UPLOADS):
        port = int(urlsplit(url).port or 0)
        wait_for(lambda: (queues := unread_bytes(port)) and len(queues) >= IDLE_UPLOADS and not any(queues),
                 "the server reads every idle upload's head and first bytes", timeout=60)
        answered = 0
        with httpx.Client(base_url=url, timeout=ANSWER_WITHIN) as http:
            version = {"last_modified": V1000}
            for round_ in range(5):
                path = f"/files/busy/{round_}"
                requests: list[tuple[str, str, dict[str, Any]]] = [
                    ("PUT", path, {"params": version, "content": b"small %d" % round_}),
                    ("PUT", path + ".big", {"params": version, "content": big}),
                    ("PUT", path + ".chunked", {"params": version, "content": iter([b"a" * 70_000, b"b" * 70_000])}),
                    ("GET", path, {}),
                    ("GET", path + ".big", {}),
                    ("HEAD", path + ".chunked", {}),
                    ("GET", "/list/busy", {}),
                    ("GET", "/health", {}),
                    ("GET", "/metrics", {}),
                    ("DELETE", path, {"params": version}),
                ]
                for method, target, options in requests:
                    response = http.request(method, target, **options)  # a timeout here fails the test
                    assert response.status_code == 200, (method, target, response.headers)
                    answered += 1
            assert http.get("/files/busy/0.big").content == big
        print(f"{IDLE_UPLOADS} idle uploads held open; {answered} other requests answered within "
              f"{ANSWER_WITHIN:g} s each")
    with Store.open(root) as store:
        assert not [info.path for info in store.list("/idle")]  # no idle upload was stored
    assert list((root / "blobs" / ".staging").iterdir()) == []


def _response_head(s: socket.socket) -> bytes:
    s.settimeout(30)
    return read_response_head(s)


@pytest.mark.parametrize("kind", [0, 1, 2, 3], ids=["chunked", "large", "small", "zstd"])
def test_an_upload_that_stops_sending_gets_408_and_stores_nothing(tmp_path: Path, kind: int) -> None:
    root = tmp_path / "store"
    Store.open(root, create=True).close()
    with castore_server(root, "--body-timeout", "1") as url, _held(url, 4) as sockets:
        head = _response_head(sockets[kind])
        assert head.startswith(b"HTTP/1.1 408"), head[:200]
        assert b"x-exception: no part of the body came for 1 s" in head.lower()
        assert httpx.get(url + "/list/", timeout=5).text == ""
    assert list((root / "blobs" / ".staging").iterdir()) == []


def test_a_slow_request_head_gets_408(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root, create=True).close()
    with castore_server(root, "--header-timeout", "1") as url:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as silent, \
                socket.create_connection((parts.hostname, parts.port), timeout=10) as partial:
            partial.sendall(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            for s in (silent, partial):
                head = _response_head(s)
                assert head.startswith(b"HTTP/1.1 408"), head[:200]
                assert b"x-exception: the request line and headers did not come within 1 s" in head.lower()
        assert httpx.get(url + "/version", timeout=5).status_code == 200
