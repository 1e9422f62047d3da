"""The lean path for ``/files/`` answers exactly as the general Starlette path does.

Two copies of one store (same seed, so the same ETags) are served by ``create_app``
with and without the lean path; the same requests, in the same order, must get the
same status, headers and body from both: successes, every kind of error, tokens,
read-only stores, and an unexpected exception inside a handler.
"""

from __future__ import annotations

import base64
import gzip
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from starlette.testclient import TestClient

from castore.server.app import create_app
from castore.server.config import ServerConfig
from castore.server.tokens import create_token
from castore.store import Store

from ..server_process import on_event_loop

V1 = "Thu, 01 Jan 1970 00:16:40 -0000"
V2 = "Thu, 01 Jan 1970 00:33:20 -0000"
V0 = "Thu, 01 Jan 1970 00:00:10 -0000"
TEXT = b"1 2 3 4 5 6 7 8 9 10\n" * 400

Request = tuple[str, str, dict[str, str], bytes]


def _answer(client: TestClient, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    method, url, headers, body = request
    response = client.request(method, url, headers=headers, content=body or None)
    return response.status_code, sorted(response.headers.multi_items()), response.content


def _copies(tmp_path: Path, prepare: Callable[[Store], Any] = lambda store: None) -> tuple[Path, Path]:
    first, second = tmp_path / "lean", tmp_path / "general"
    with Store.open(first, create=True) as store:
        store.put("/a.txt", TEXT, 1000)
        store.put("/dir/random.bin", bytes(range(256)) * 300, 1000)
        prepare(store)
    shutil.copytree(first, second)
    return first, second


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Callable[..., tuple[TestClient, TestClient]]]:
    opened: list[Any] = []

    def make(prepare: Callable[[Store], Any] = lambda store: None, *, read_only: bool = False,
             **options: Any) -> tuple[TestClient, TestClient]:
        lean_root, general_root = _copies(tmp_path, prepare)
        pair = []
        for root, lean in ((lean_root, True), (general_root, False)):
            store = Store.open(root, read_only=read_only)
            client = TestClient(create_app(store, ServerConfig(**options), lean=lean), raise_server_exceptions=False)
            opened.append((store, client))
            pair.append(client)
        return pair[0], pair[1]

    yield make
    for store, client in opened:
        client.close()
        store.close()


def _same(lean: TestClient, general: TestClient, requests: list[Request]) -> None:
    for request in requests:
        assert _answer(lean, request) == _answer(general, request), request


def q(version: str) -> str:
    return "?last_modified=" + version.replace(" ", "%20")


SEQUENCE: list[Request] = [
    ("GET", "/files/a.txt", {}, b""),
    ("GET", "/files/a.txt", {"Accept-Encoding": "zstd"}, b""),
    ("GET", "/files/a.txt", {"Range": "bytes=2-9"}, b""),
    ("GET", "/files/a.txt", {"Range": "bytes=900000-"}, b""),
    ("HEAD", "/files/a.txt", {}, b""),
    ("GET", "/files/a.txt", {"If-None-Match": "*"}, b""),
    ("HEAD", "/files/a.txt", {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, b""),
    ("GET", "/files/a.txt", {"If-Match": '"other"'}, b""),
    ("GET", "/files/a.txt", {"Range": "bytes=2-9", "If-Range": '"other"'}, b""),
    ("GET", "/files/dir/random.bin", {}, b""),
    ("GET", "/files/a.txt@1000", {}, b""),
    ("GET", "/files/a.txt@5", {}, b""),
    ("GET", "/files/missing", {}, b""),
    ("HEAD", "/files/missing", {}, b""),
    ("GET", "/files/", {}, b""),
    ("GET", "/files/a/../b", {}, b""),
    ("GET", "/files/%0Aa", {}, b""),
    ("GET", "/files/%ff", {}, b""),
    ("POST", "/files/a.txt", {}, b"x"),
    ("PUT", "/files/b" + q(V1), {}, b"new content"),
    ("GET", "/files/b", {}, b""),
    ("PUT", "/files/b" + q(V0), {}, b"older, ignored"),
    ("PUT", "/files/b" + q(V2), {"Content-Encoding": "gzip", "Logical-Size": str(len(TEXT))}, gzip.compress(TEXT)),
    ("PUT", "/files/c" + q(V1), {"Content-Encoding": "zstd", "Logical-Size": str(len(TEXT))},
     zstandard.ZstdCompressor().compress(TEXT)),
    ("PUT", "/files/c" + q(V1), {"Content-Encoding": "zstd"}, zstandard.ZstdCompressor().compress(TEXT)),
    ("PUT", "/files/c" + q(V1), {"Content-Encoding": "br"}, b"x"),
    ("PUT", "/files/c" + q(V1), {"SHA256-Checksum": "00" * 32}, b"x"),
    ("PUT", "/files/c?last_modified=yesterday", {}, b"x"),
    ("PUT", "/files/c" + q(V1), {"Logical-Size": "12"}, b"x"),
    ("PUT", "/files/c" + q(V1), {"Logical-Size": "-1"}, b"x"),
    ("PUT", "/files/" + q(V1), {}, b"x"),
    ("DELETE", "/files/b" + q(V0), {}, b""),
    ("DELETE", "/files/b" + q(V2), {}, b""),
    ("DELETE", "/files/b", {}, b""),
    ("GET", "/files/b", {}, b""),
    ("GET", "/version", {}, b""),
    ("GET", "/list/dir", {}, b""),
]


def test_the_lean_path_answers_as_the_general_one(clients: Callable[..., tuple[TestClient, TestClient]]) -> None:
    _same(*clients(), SEQUENCE)


def test_the_lean_path_answers_as_the_general_one_below_a_prefix(
    clients: Callable[..., tuple[TestClient, TestClient]],
) -> None:
    prefixed = [(m, "/ft" + url, h, b) for m, url, h, b in SEQUENCE] + [("GET", "/files/a.txt", {}, b"")]
    _same(*clients(prefix="/ft"), prefixed)


def test_tokens_are_checked_the_same_way(clients: Callable[..., tuple[TestClient, TestClient]]) -> None:
    made: dict[str, str] = {}

    def tokens(store: Store) -> None:
        made["read"] = create_token(store.metadata, "read", "r")[1]
        made["write"] = create_token(store.metadata, "write", "w")[1]

    lean, general = clients(tokens)
    basic = "Basic " + base64.b64encode(f"any:{made['write']}".encode()).decode()
    _same(lean, general, [
        ("GET", "/files/a.txt", {}, b""),
        ("GET", "/files/a.txt", {"Authorization": "Bearer wrong"}, b""),
        ("GET", "/files/a.txt", {"Authorization": "Basic !!"}, b""),
        ("GET", "/files/a.txt", {"Authorization": f"Bearer {made['read']}"}, b""),
        ("PUT", "/files/b" + q(V1), {"Authorization": f"Bearer {made['read']}"}, b"x"),
        ("DELETE", "/files/a.txt", {"Authorization": f"Bearer {made['read']}"}, b""),
        ("PUT", "/files/b" + q(V1), {"Authorization": basic}, b"x"),
        ("GET", "/files/b", {"Authorization": f"Bearer {made['read']}"}, b""),
    ])


def test_a_read_only_store_refuses_writes_the_same_way(clients: Callable[..., tuple[TestClient, TestClient]]) -> None:
    _same(*clients(read_only=True), [
        ("PUT", "/files/b" + q(V1), {}, b"x"),
        ("DELETE", "/files/a.txt", {}, b""),
        ("GET", "/files/a.txt", {}, b""),
    ])


def test_an_unexpected_error_is_a_one_line_500_on_both(
    clients: Callable[..., tuple[TestClient, TestClient]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    lean, general = clients()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug with /secret/details")

    monkeypatch.setattr(Store, "lookup", broken)
    monkeypatch.setattr(Store, "put", broken)
    requests: list[Request] = [("GET", "/files/a.txt", {}, b""), ("PUT", "/files/b" + q(V1), {}, b"x")]
    _same(lean, general, requests)
    status, _headers, body = _answer(lean, requests[0])
    assert (status, body) == (500, b"internal error: RuntimeError\n")
    with pytest.raises(RuntimeError, match="a bug"):  # re-raised for the server to log, like Starlette's
        TestClient(lean.app).get("/files/a.txt")


def test_reads_wait_on_the_event_loop_only_for_local_metadata(
    store: Store, store_backend: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lookup on PostgreSQL is a network round trip: it runs in a thread, never on the loop."""
    store.put("/a.txt", TEXT, 1000)
    where: list[bool] = []
    entry = Store._entry  # what every lookup and open_file reads the metadata with

    def watched(self: Store, name: str) -> Any:
        where.append(on_event_loop())
        return entry(self, name)

    monkeypatch.setattr(Store, "_entry", watched)
    with TestClient(create_app(store)) as client:
        assert client.get("/files/a.txt").content == TEXT
        assert client.head("/files/a.txt").headers["Logical-Size"] == str(len(TEXT))
        assert client.get("/files/missing").status_code == 404
    assert where
    assert set(where) == ({True} if store_backend.startswith("sqlite") else {False})
