"""Hostile requests over raw sockets: each gets a clear 4xx, nothing changes, the worker lives.

Traversal in every encoding, invalid UTF-8, malformed versions and sizes, lying hints,
truncated and corrupt bodies, request smuggling, oversize heads and unknown methods go
to one real ``castore serve``. The store is snapshot before and after (every version of
every path, every blob file, every staging file); the server must keep its pid and
answer ``/health`` after each request.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import zstandard

from castore.store import Store

from ..server_process import castore_server_process, read_response_head

Q = "last_modified=Thu,%2001%20Jan%201970%2000:16:40%20-0000"
LATER = "last_modified=Thu,%2001%20Jan%201970%2000:33:20%20-0000"
CONTENT = b"the content of a file\n" * 50
FRAME = zstandard.ZstdCompressor(write_checksum=True).compress(CONTENT)
GZIP = gzip.compress(CONTENT)
BIG_WINDOW = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters(window_log=27))
GZIP_BOMB = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 KiB that decode to 64 MiB


def _big_window_frame() -> bytes:
    compressor = BIG_WINDOW.compressobj()  # streamed: the header asks for the 128 MiB window
    return compressor.compress(os.urandom(16 << 10)) + compressor.flush()


def put(target: str, body: bytes = b"evil", *headers: str, query: str = Q, method: str = "PUT") -> bytes:
    """A raw request with ``Content-Length`` (unless a header sets the framing)."""
    lines = [f"{method} {target}?{query} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def raw(text: str) -> bytes:
    return text.encode("latin-1")


def chunked(target: str, chunks: bytes, *headers: str) -> bytes:
    return put(target, chunks, "Transfer-Encoding: chunked", *headers)


HOSTILE: dict[str, bytes] = {
    # -- traversal and malformed paths, in every encoding --------------------------------------
    "dot-dot": put("/files/a/../b"),
    "dot-dot %2e%2e": put("/files/%2e%2e/etc/passwd"),
    "dot-dot %2E%2E": put("/files/a/%2E%2E/b"),
    "dot-dot with %2f": put("/files/a/%2e%2e%2fb"),
    "..%2f": put("/files/..%2fetc/passwd"),
    "half-encoded .%2e": put("/files/a/.%2e/b"),
    "%2f at the start": put("/files/%2fetc/passwd"),
    "dot segment": put("/files/a/./b"),
    "empty segment //": put("/files//a"),
    "empty segment a//b": put("/files/a//b"),
    "trailing slash": put("/files/a/"),
    "no path": put("/files/"),
    "encoded NUL": put("/files/a%00b"),
    "encoded newline": put("/files/a%0Ab"),
    "encoded DEL": put("/files/a%7Fb"),
    "overlong UTF-8 dot": put("/files/x/%c0%ae%c0%ae/y"),
    "invalid UTF-8": put("/files/x/%ff%fe"),
    "UTF-8 surrogate": put("/files/x/%ed%a0%80"),
    "truncated UTF-8": put("/files/x/%e2%82"),
    "double-encoded ..": put("/files/%252e%252e/etc/passwd", method="GET", query=""),
    "double-encoded / read": put("/files/a%252f..%252fb", method="GET", query=""),
    "version in URL": put("/files/a/b@5"),
    "encoded @": put("/files/a%40b"),
    "raw byte 0xff in URL": raw(f"PUT /files/\xff\xfe?{Q} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nevil"),
    "raw NUL in URL": raw(f"PUT /files/a\x00b?{Q} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nevil"),
    "segment over 255 bytes": put("/files/" + "s" * 300),
    "path over 4096 bytes": put("/files" + "/abcdefgh" * 500),
    "list with ..": put("/list/a/../..", method="GET", query=""),
    # -- malformed versions ----------------------------------------------------------------------
    "no last_modified": put("/files/v/a", query=""),
    "garbage last_modified": put("/files/v/a", query="last_modified=yesterday"),
    "last_modified before 1970": put("/files/v/a", query="last_modified=Wed,%2031%20Dec%201969%2023:59:59%20-0000"),
    "last_modified NUL": put("/files/v/a", query="last_modified=%00"),
    "last_modified year 99999": put("/files/v/a", query="last_modified=Fri,%2001%20Jan%2099999%2000:00:00%20-0000"),
    "delete with garbage version": put("/files/h/existing", b"", method="DELETE", query="last_modified=nope"),
    "delete without version": put("/files/h/existing", b"", method="DELETE", query=""),
    # -- malformed sizes -------------------------------------------------------------------------
    "Logical-Size superscript two": put("/files/s/a", b"ab", "Logical-Size: \u00b2"),
    "Logical-Size negative": put("/files/s/a", b"ab", "Logical-Size: -2"),
    "Logical-Size exponent": put("/files/s/a", b"ab", "Logical-Size: 2e0"),
    "Logical-Size plus sign": put("/files/s/a", b"ab", "Logical-Size: +2"),
    "Logical-Size 25 digits": put("/files/s/a", b"ab", "Logical-Size: " + "9" * 25),
    "Logical-Size empty": put("/files/s/a", b"ab", "Logical-Size: "),
    "Content-Length letters": raw(f"PUT /files/s/a?{Q} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\nevil"),
    "Content-Length negative": raw(f"PUT /files/s/a?{Q} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -4\r\n\r\nevil"),
    "Content-Length superscript": raw(f"PUT /files/s/a?{Q} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \xb2\r\n\r\nevil"),
    # -- lying hints -----------------------------------------------------------------------------
    "Logical-Size larger than body": put("/files/l/a", b"evil", "Logical-Size: 10"),
    "Logical-Size smaller than body": put("/files/l/a", b"evil", "Logical-Size: 2"),
    "wrong SHA256-Checksum": put("/files/l/a", b"evil", "SHA256-Checksum: " + hashlib.sha256(b"good").hexdigest()),
    "SHA256-Checksum not hex": put("/files/l/a", b"evil", "SHA256-Checksum: zz"),
    "zstd Logical-Size too large": put("/files/l/z", FRAME, "Content-Encoding: zstd", f"Logical-Size: {len(CONTENT) + 1}"),
    "zstd Logical-Size too small": put("/files/l/z", FRAME, "Content-Encoding: zstd", f"Logical-Size: {len(CONTENT) - 1}"),
    "zstd without Logical-Size": put("/files/l/z", FRAME, "Content-Encoding: zstd"),
    "gzip Logical-Size wrong": put("/files/l/g", GZIP, "Content-Encoding: gzip", f"Logical-Size: {len(CONTENT) + 7}"),
    "newer version with a lying hash": put("/files/h/existing", b"evil", "SHA256-Checksum: " + "0" * 64, query=LATER),
    # -- truncated and corrupt bodies --------------------------------------------------------------
    "zstd cut inside its checksum": put("/files/b/z", FRAME[:-2], "Content-Encoding: zstd", f"Logical-Size: {len(CONTENT)}"),
    "zstd cut mid-block": put("/files/b/z", FRAME[: len(FRAME) // 2], "Content-Encoding: zstd",
                              f"Logical-Size: {len(CONTENT)}"),
    "zstd corrupt byte": put("/files/b/z", FRAME[:20] + bytes([FRAME[20] ^ 0xFF]) + FRAME[21:],
                             "Content-Encoding: zstd", f"Logical-Size: {len(CONTENT)}"),
    "zstd with a 128 MiB window": put("/files/b/z", _big_window_frame(), "Content-Encoding: zstd",
                                      f"Logical-Size: {16 << 10}"),
    "zstd garbage": put("/files/b/z", b"not zstd at all", "Content-Encoding: zstd", "Logical-Size: 5"),
    "zstd empty body": put("/files/b/z", b"", "Content-Encoding: zstd", "Logical-Size: 5"),
    "gzip truncated": put("/files/b/g", GZIP[:-9], "Content-Encoding: gzip"),
    "gzip corrupt": put("/files/b/g", GZIP[:12] + b"\xff" * 8 + GZIP[20:], "Content-Encoding: gzip"),
    "gzip with trailing data": put("/files/b/g", GZIP + b"trailing", "Content-Encoding: gzip"),
    "gzip bomb without Logical-Size": put("/files/b/g", GZIP_BOMB, "Content-Encoding: gzip"),
    "unknown Content-Encoding": put("/files/b/x", b"evil", "Content-Encoding: br"),
    "stacked Content-Encoding": put("/files/b/x", GZIP, "Content-Encoding: gzip, zstd"),
    # -- request smuggling -------------------------------------------------------------------------
    "Content-Length with Transfer-Encoding": put("/files/m/a", b"0\r\n\r\nGET /version HTTP/1.1\r\n\r\n",
                                                 "Content-Length: 4", "Transfer-Encoding: chunked"),
    "duplicate Content-Length": put("/files/m/a", b"evil!", "Content-Length: 4", "Content-Length: 5"),
    "duplicate equal Content-Length": put("/files/m/a", b"evil", "Content-Length: 4", "Content-Length: 4"),
    "bad chunk size": chunked("/files/m/a", b"zz\r\nevil\r\n0\r\n\r\n"),
    "negative chunk size": chunked("/files/m/a", b"-4\r\nevil\r\n0\r\n\r\n"),
    "chunk size overflow": chunked("/files/m/a", b"ffffffffffffffffffff\r\nevil\r\n0\r\n\r\n"),
    "Transfer-Encoding xchunked": put("/files/m/a", b"4\r\nevil\r\n0\r\n\r\n", "Transfer-Encoding: xchunked"),
    "Transfer-Encoding chunked, identity": put("/files/m/a", b"4\r\nevil\r\n0\r\n\r\n",
                                               "Transfer-Encoding: chunked, identity"),
    "space before colon": put("/files/m/a", b"evil", "Transfer-Encoding : chunked", "Content-Length: 4"),
    "obs-fold Content-Length": raw(f"PUT /files/m/a?{Q} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length:\r\n 4\r\n\r\nevil"),
    "bare LF line ends": raw(f"PUT /files/m/a?{Q} HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 4\n\nevil"),
    "NUL in a header value": put("/files/m/a", b"evil", "X-A: a\x00b"),
    # -- oversize heads ----------------------------------------------------------------------------
    "200 KiB header": put("/files/o/a", b"evil", "X-Big: " + "a" * 200_000),
    "100 KiB URL": put("/files/o/" + "u" * 100_000),
    "5000 headers": put("/files/o/a", b"evil", *(f"X-H{i}: {i}" for i in range(5000))),
    # -- unknown and unsupported methods --------------------------------------------------------------
    "unknown method FOO": raw("FOO /files/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    "CONNECT": raw("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    "PATCH": put("/files/h/existing", method="PATCH"),
    "POST": put("/files/h/existing", method="POST"),
    "OPTIONS": raw("OPTIONS /files/h/existing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    "TRACE": raw("TRACE /files/h/existing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    "PUT on /version": put("/version"),
    "DELETE on /list": put("/list/h", b"", method="DELETE"),
    # -- ranges no byte satisfies --------------------------------------------------------------------
    "suffix range of an empty file": raw("GET /files/h/empty HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=-5\r\n\r\n"),
    "range past the end": raw("GET /files/h/large HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=300000-\r\n\r\n"),
    "HTTP/9.9": raw("GET /version HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n"),
    "not HTTP at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),  # a TLS hello
}


def _exchange(url: str, request: bytes) -> bytes:
    """Send a request as it is; return the response head (the server may refuse mid-send)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole request went out: the answer is still there to read
        data = read_response_head(s)
    return data.split(b"\r\n\r\n")[0]


def _snapshot(root: Path) -> tuple[object, ...]:
    with Store.open(root, read_only=True) as store:
        versions = sorted((i.path, i.version, i.key) for f in store.list("/") for i in store.versions(f.path))
        usage = store.usage()
    blobs = sorted(p.name for p in (root / "blobs").glob("??/??/*"))
    staging = sorted(p.name for p in (root / "blobs" / ".staging").iterdir())
    return versions, usage, blobs, staging


@pytest.mark.slow
def test_hostile_requests_change_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        store.put("/h/existing", b"original", 1000)
        store.put("/h/large", os.urandom(300_000), 1000)  # a blob file, not inline
        store.put("/h/empty", b"", 1000)
    assert len(HOSTILE) >= 50
    with castore_server_process(root) as (url, process), httpx.Client(base_url=url, timeout=10) as http:
        before = _snapshot(root)
        problems = []
        for name, request in HOSTILE.items():
            head = _exchange(url, request)
            status_line = head.split(b"\r\n")[0]
            headers = head.lower().split(b"\r\n")[1:]
            status = int(status_line.split()[1]) if status_line.startswith(b"HTTP/1.1 ") else 0
            exception = [h for h in headers if h.startswith(b"x-exception: ")]
            if not 400 <= status < 500 or not exception or len(exception[0]) < 20:
                problems.append(f"{name}: {status_line!r} {exception}")
            if process.poll() is not None or http.get("/health").status_code != 200:
                problems.append(f"{name}: the server died")
                break
        after = _snapshot(root)
        assert http.get("/files/h/existing").content == b"original"
    assert not problems, "\n".join(problems)
    assert after == before, "a hostile request changed the store"
    print(f"{len(HOSTILE)} hostile requests tried, 0 state changes, 0 worker crashes (pid {process.pid})")
