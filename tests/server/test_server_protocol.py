"""The HTTP protocol over raw requests (httpx and plain sockets) to a real ``castore serve``."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import zstandard

from castore.store import Store

from ..server_process import castore_server, read_response_head, requests_answered, wait_for

V1000 = "Thu, 01 Jan 1970 00:16:40 -0000"
V2000 = "Thu, 01 Jan 1970 00:33:20 -0000"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("protocol") / "store"


@pytest.fixture(scope="module")
def url(root: Path) -> Iterator[str]:
    with castore_server(root, "--gzip") as base:
        yield base


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


def put(http: httpx.Client, path: str, body: bytes, when: str = V1000, **headers: str) -> httpx.Response:
    return http.put(f"/files{path}", params={"last_modified": when}, content=body, headers=headers)


def raw_request(url: str, request: bytes, *, close_write: bool = False) -> bytes:
    """Send bytes as they are (no client-side URL clean-up); return the response head."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(request)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        data = read_response_head(s)
    return data


def test_version_endpoint(http: httpx.Client) -> None:
    for path in ("/version", "/version/"):
        assert http.get(path).json()["protocol_versions"] == [2]


def test_put_get_head_with_headers(http: httpx.Client) -> None:
    r = put(http, "/p/a.txt", b"hello world\n")
    assert r.status_code == 200 and r.headers["last-modified"] == V1000
    r = http.get("/files/p/a.txt", headers={"Accept-Encoding": "identity"})
    assert r.content == b"hello world\n"
    assert r.headers["last-modified"] == V1000 and r.headers["logical-size"] == "12"
    assert r.headers["content-length"] == "12" and "content-encoding" not in r.headers
    head = http.head("/files/p/a.txt")
    assert head.headers["content-length"] == "12" and head.content == b""
    assert http.get("/files/p/missing").status_code == 404


def test_version_rules_over_http(http: httpx.Client) -> None:
    put(http, "/p/v", b"two", V2000)
    assert put(http, "/p/v", b"one", V1000).headers["last-modified"] == V2000
    assert http.get("/files/p/v").content == b"two"
    assert http.delete("/files/p/v", params={"last_modified": V1000}).status_code == 200
    assert http.get("/files/p/v").content == b"two"
    assert http.delete("/files/p/v", params={"last_modified": V2000}).status_code == 200
    assert http.get("/files/p/v").status_code == 404
    assert http.delete("/files/p/v", params={"last_modified": V2000}).status_code == 404


def test_a_retained_version_by_query(http: httpx.Client) -> None:
    """castore's ``?version=N`` (issue #21): GET and HEAD of a retained version; a 404 naming the retained ones."""
    put(http, "/p/old", b"one", V1000)
    put(http, "/p/old", b"two" * 100_000, V2000)  # a blob file: streamed
    older = http.get("/files/p/old", params={"version": "1000"})
    assert older.content == b"one" and older.headers["last-modified"] == V1000
    assert http.get("/files/p/old", params={"version": "2000"}).content == b"two" * 100_000
    assert http.get("/files/p/old").content == b"two" * 100_000  # without it: the current version, as ever
    head = http.head("/files/p/old", params={"version": "1000"})
    assert head.status_code == 200 and head.headers["content-length"] == "3" and head.headers["last-modified"] == V1000
    for method in ("GET", "HEAD"):
        missing = http.request(method, "/files/p/old", params={"version": "1500"})
        assert missing.status_code == 404, method
        assert missing.headers["x-exception"] == "version 1500 of /p/old is not retained; retained versions: 2000, 1000"
        assert missing.headers["castore-retained-versions"] == "2000, 1000"
    gone = http.get("/files/p/never", params={"version": "5"})
    assert gone.status_code == 404 and "castore-retained-versions" not in gone.headers
    for bad in ("abc", "-1", "+5", "1.5", "", "9" * 30, "1,2"):
        assert http.get("/files/p/old", params={"version": bad}).status_code == 400, bad


def test_gzip_upload_with_hints(http: httpx.Client, root: Path) -> None:
    content = b"1 2 3 4 5\n" * 5000
    digest = hashlib.sha256(content).hexdigest()
    r = put(http, "/p/gz", gzip.compress(content), **{"Content-Encoding": "gzip", "SHA256-Checksum": digest,
                                                     "Logical-Size": str(len(content))})
    assert r.status_code == 200
    assert http.get("/files/p/gz", headers={"Accept-Encoding": "identity"}).content == content


def test_zstd_upload_whole_and_chunked(http: httpx.Client) -> None:
    content = b"6 7 8 9\n" * 50_000
    size = {"Logical-Size": str(len(content))}
    frame = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(content)
    r = put(http, "/p/zst", frame, **{"Content-Encoding": "zstd", **size})
    assert r.status_code == 200
    assert http.get("/files/p/zst", headers={"Accept-Encoding": "identity"}).content == content
    pieces = [frame[i:i + 1000] for i in range(0, len(frame), 1000)]
    r = http.put("/files/p/zst-chunked", params={"last_modified": V2000}, content=iter(pieces),
                 headers={"Content-Encoding": "zstd", **size})
    assert r.status_code == 200 and http.get("/files/p/zst-chunked").content == content


@pytest.mark.parametrize(
    "case, expected",
    [("truncated", "truncated"), ("no size", "Logical-Size"), ("garbage after", "cannot be decoded"),
     ("corrupt", "cannot be decoded"), ("bigger than said", "more than")],
)
def test_bad_zstd_bodies_store_nothing(http: httpx.Client, case: str, expected: str) -> None:
    content = b"1 2 3\n" * 100_000
    frame = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(content)
    headers = {"Content-Encoding": "zstd", "Logical-Size": str(len(content))}
    if case == "truncated":
        frame = frame[:-10]
    elif case == "no size":
        del headers["Logical-Size"]
    elif case == "garbage after":
        frame += b"garbage!"
    elif case == "corrupt":
        frame = frame[:len(frame) // 2] + bytes([frame[len(frame) // 2] ^ 0xFF]) + frame[len(frame) // 2 + 1:]
    else:
        headers["Logical-Size"] = str(len(content) - 1)
    r = put(http, f"/p/zst-bad-{case}", frame, **headers)
    assert r.status_code == 400 and expected in r.headers["x-exception"], r.headers.get("x-exception")
    assert http.get(f"/files/p/zst-bad-{case}").status_code == 404


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_a_compression_bomb_is_stopped_by_its_logical_size(http: httpx.Client, encoding: str) -> None:
    zeros = b"\0" * (256 << 20)
    body = zstandard.ZstdCompressor(level=3).compress(zeros) if encoding == "zstd" else gzip.compress(zeros, 9)
    assert len(body) < 300_000
    r = put(http, f"/p/bomb-{encoding}", body, **{"Content-Encoding": encoding, "Logical-Size": "1000"})
    assert r.status_code == 400 and "more than" in r.headers["x-exception"], r.headers["x-exception"]
    assert http.get("/version").status_code == 200


def test_gzip_body_with_trailing_data_is_refused(http: httpx.Client) -> None:
    r = put(http, "/p/gz-trailing", gzip.compress(b"abc") + b"junk", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "after its end" in r.headers["x-exception"]
    r = put(http, "/p/gz-cut", gzip.compress(b"abc" * 1000)[:-6], **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "truncated" in r.headers["x-exception"]


def test_lying_hints_are_refused_and_store_nothing(http: httpx.Client) -> None:
    evil = gzip.compress(b"EVIL\n")
    real = hashlib.sha256(b"hello world\n").hexdigest()
    r = put(http, "/p/evil", evil, **{"Content-Encoding": "gzip", "SHA256-Checksum": real})
    assert r.status_code == 400 and "SHA256" in r.headers["x-exception"]
    r = put(http, "/p/evil", b"12345", **{"Logical-Size": "6"})
    assert r.status_code == 400
    assert http.get("/files/p/evil").status_code == 404


def test_bad_requests(http: httpx.Client, url: str) -> None:
    assert http.put("/files/p/x", content=b"x").status_code == 400  # no last_modified
    assert put(http, "/p/x", b"x", "not a date").status_code == 400
    assert http.delete("/files/p/x").status_code == 400
    assert put(http, "/p/x@5", b"x").status_code == 400  # versions go in last_modified
    assert http.post("/files/p/x", content=b"x").status_code == 405
    assert http.get("/nothing/here").status_code == 404
    assert put(http, "/p/x", b"x", **{"Content-Encoding": "br"}).status_code == 415
    r = put(http, "/p/x", b"not gzip at all", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "\n" not in r.headers["x-exception"]
    assert http.get("/files/p/x").status_code == 404


@pytest.mark.parametrize(
    "target",
    ["/files/a/../b", "/files/%2e%2e/etc/passwd", "/files/a/%2E%2E/b", "/files//a", "/files/a//b",
     "/files/a%00b", "/files/a/./b", "/files/a%0Ab", "/files/"],
)
def test_traversal_and_malformed_paths(url: str, http: httpx.Client, target: str) -> None:
    request = (f"PUT {target}?last_modified=Thu,%2001%20Jan%201970%2000:16:40%20-0000 HTTP/1.1\r\n"
               "Host: 127.0.0.1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil").encode()
    head = raw_request(url, request)
    assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.1 404")), head[:100]
    assert b"x-exception" in head.lower()
    assert "evil" not in http.get("/list/").text


def test_truncated_body_stores_nothing(tmp_path: Path) -> None:
    """A body cut short by the client: the server ends the request (counted in its metrics),
    and nothing is stored. One worker of its own, so that its counters are the whole server's."""
    request = (b"PUT /files/p/truncated?last_modified=Thu,%2001%20Jan%201970%2000:16:40%20-0000 HTTP/1.1\r\n"
               b"Host: 127.0.0.1\r\nContent-Length: 300000\r\n\r\n") + os.urandom(150_000)
    with castore_server(tmp_path / "store", "--workers", "1") as url:
        raw_request(url, request, close_write=True)
        wait_for(lambda: requests_answered(url, "PUT") == 1, "the server ends the truncated PUT")
        assert httpx.get(url + "/files/p/truncated").status_code == 404
        assert httpx.get(url + "/list/").text == ""


def test_huge_header_is_refused_and_server_lives(url: str, http: httpx.Client) -> None:
    request = b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    try:
        head = raw_request(url, request)
        assert head.startswith(b"HTTP/1.1 431"), head[:100]
    except ConnectionError:
        pass  # the refusal can be lost when the close resets the connection before it is read
    assert http.get("/version", headers={"X-Fine": "b" * 30_000}).status_code == 200  # below the limit
    assert http.get("/version").status_code == 200


def test_header_limit_counts_the_head_only(http: httpx.Client) -> None:
    body = os.urandom(300_000)  # sent with its head in one write: the body does not count
    assert put(http, "/p/after-head", body, **{"X-Pad": "c" * 60_000}).status_code == 200
    assert http.get("/files/p/after-head").content == body


def test_content_negotiation(http: httpx.Client) -> None:
    text = b"".join(b"%d %d\n" % (i, i * i) for i in range(150_000))  # > 1 MiB: streamed
    put(http, "/neg/text", text)
    r = http.get("/files/neg/text", headers={"Accept-Encoding": "zstd"})
    assert r.headers["content-encoding"] == "zstd" and int(r.headers["content-length"]) < len(text)
    assert r.content == text  # httpx decodes zstd itself; the frame was sent as stored
    r = http.get("/files/neg/text", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.content == text  # httpx decodes gzip
    r = http.get("/files/neg/text", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers and r.content == text
    head = http.head("/files/neg/text", headers={"Accept-Encoding": "gzip"})
    assert head.headers["content-length"] == str(len(text)) == head.headers["logical-size"]
    noise = os.urandom(200_000)
    put(http, "/neg/noise", noise)
    r = http.get("/files/neg/noise", headers={"Accept-Encoding": "gzip, zstd"})
    assert "content-encoding" not in r.headers and r.content == noise  # incompressible: sent as is


def test_range_requests(http: httpx.Client) -> None:
    content = bytes(range(256)) * 1000
    put(http, "/r/f", content)
    r = http.get("/files/r/f", headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == content[1000:2000]
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(content)}"
    assert http.get("/files/r/f", headers={"Range": "bytes=-10"}).content == content[-10:]
    assert http.get("/files/r/f", headers={"Range": "bytes=255990-"}).content == content[255990:]
    assert http.get("/files/r/f", headers={"Range": f"bytes={len(content)}-"}).status_code == 416


def test_list_endpoint(http: httpx.Client) -> None:
    put(http, "/l/d/a", b"a", V1000)
    put(http, "/l/d/b", b"b", V2000)
    put(http, "/l/d/e/c", b"c", V1000)
    assert sorted(http.get("/list/l/d").text.splitlines()) == ["a", "b", "e/c"]
    assert sorted(http.get("/list/l/d/", params={"last_modified": V1000}).text.splitlines()) == ["a", "e/c"]
    assert http.get("/list/l/nothing").status_code == 400
    assert http.get("/list/l/d/a").status_code == 400  # a file, not a folder
    assert "l/d/a" in http.get("/list/").text.splitlines()


def test_dedup_over_http(http: httpx.Client, root: Path) -> None:
    content = os.urandom(1 << 20)
    for i in range(5):
        put(http, f"/dedup/{i}", content)
    with Store.open(root) as store:
        keys = {store.stat(f"/dedup/{i}").key for i in range(5)}
        assert len(keys) == 1
        assert store.metadata.refcount(keys.pop()) == 5


def test_health_and_metrics(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    text = http.get("/metrics").text
    assert 'castore_requests_total{method="PUT",status="200"}' in text
    assert "castore_request_duration_seconds_bucket" in text and "castore_stored_bytes" in text


def test_prefix_and_fallback(tmp_path: Path, url: str, http: httpx.Client) -> None:
    put(http, "/old/only-here", b"from the old server")
    with (
        castore_server(tmp_path / "new", "--prefix", "/ft", "--fallback-url", url) as new,
        httpx.Client(base_url=new, timeout=10) as client,
    ):
        assert client.get("/version").status_code == 200
        r = client.get("/files/old/only-here")
        assert r.status_code == 307 and r.headers["location"] == f"{url}/files/old/only-here"
        assert client.get("/files/old/only-here", follow_redirects=True).content == b"from the old server"
        assert put(client, "/new/f", b"x").status_code == 200
        assert client.get("/files/new/f").content == b"x"
        text = b"1 2 3 4 5 6 7 8 9\n" * 200_000
        assert put(client, "/new/text", text).status_code == 200
        r = client.get("/files/new/text", headers={"Accept-Encoding": "gzip"})  # no --gzip here
        assert "content-encoding" not in r.headers and r.content == text
