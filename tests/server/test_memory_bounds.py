"""Large uploads and downloads go through the server with bounded memory (peak RSS, not time)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import zstandard

from castore.client import Client
from castore.store import Store

from ..server_process import castore_server_process, free_port

MiB = 1 << 20
BODY = 600 * MiB
ALLOWED_GROWTH = 64 * MiB  # about a tenth of the body: the server streams, it does not buffer (seen: 6.5 MiB)


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def body(block: bytes, total: int) -> Iterator[bytes]:
    for i in range(total // len(block)):
        yield block[i % 7:] + block[: i % 7]  # vary the blocks a little


@pytest.mark.slow
def test_big_transfers_do_not_grow_the_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "castore", "--root", str(tmp_path / "store"), "serve", "--init",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/version", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        before = peak_rss(server.pid)
        block = os.urandom(MiB)
        with httpx.Client(base_url=url, timeout=120) as http:
            response = http.put("/files/big/raw", params={"last_modified": "Thu, 01 Jan 1970 00:16:40 -0000"},
                                content=body(block, BODY))  # chunked: no Content-Length
            assert response.status_code == 200, response.headers
            received = 0
            with http.stream("GET", "/files/big/raw") as download:
                for chunk in download.iter_raw():
                    received += len(chunk)
            assert received == BODY
        text = tmp_path / "text"
        with open(text, "wb") as f:
            f.writelines(b"%d %d\n" % (i, i * i) * 100_000 for i in range(300))  # compressible: goes up as a zstd stream
        client = Client(local_store=None, remote_url=url)
        name = client.put_file("/big/text@5", text)
        stream, _ = client.get_stream(name)
        while stream.read(MiB):
            pass
        growth = peak_rss(server.pid) - before
        print(f"peak RSS grew by {growth / MiB:.1f} MiB for {BODY // MiB} MiB up and down plus a zstd upload")
        assert growth < ALLOWED_GROWTH, f"the server grew by {growth / MiB:.0f} MiB"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


V1000 = "Thu, 01 Jan 1970 00:16:40 -0000"


def _zstd_frame(window_log: int, content: Iterator[bytes]) -> bytes:
    """A streamed zstd frame (no content size, so its header asks for the whole window)."""
    params = zstandard.ZstdCompressionParameters(window_log=window_log)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return b"".join(compressor.compress(chunk) for chunk in content) + compressor.flush()


def _gzip_bomb(total: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    return b"".join(compressor.compress(zeros) for _ in range(total // MiB)) + compressor.flush()


def _stalled(url: str, i: int, frame: bytes) -> socket.socket:
    """A zstd upload that sent its head and all but the last bytes of its body."""
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    s.sendall(f"PUT /files/stalled/{i}?last_modified=x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: zstd\r\n"
              f"Logical-Size: {16 << 10}\r\nContent-Length: {len(frame)}\r\n\r\n".encode() + frame[:-10])
    return s


@pytest.mark.slow
def test_zstd_windows_and_gzip_bombs_do_not_grow_the_server(tmp_path: Path) -> None:
    """Large zstd windows are refused, allowed ones decoded a few at a time, gzip bombs stopped."""
    root = tmp_path / "store"
    Store.open(root, create=True).close()
    huge_window = _zstd_frame(27, iter([os.urandom(16 << 10)]))  # a 16 KiB body asking for 128 MiB
    allowed = [_zstd_frame(23, (bytes([i]) * MiB for _ in range(16))) for i in range(40)]  # 8 MiB windows, full
    bomb = _gzip_bomb(256 * MiB)  # ~256 KiB that decode to 256 MiB
    with castore_server_process(root) as (url, server), httpx.Client(base_url=url, timeout=120) as http:
        for i in range(3):  # warm up: the first requests load code and fill caches
            assert http.put(f"/files/warm/{i}", params={"last_modified": V1000}, content=os.urandom(300_000)).status_code == 200
        before = peak_rss(server.pid)
        stalled = [_stalled(url, i, huge_window) for i in range(40)]
        try:
            def put(args: tuple[str, bytes, dict[str, str]]) -> int:
                path, body, headers = args
                with httpx.Client(base_url=url, timeout=120) as each:
                    return each.put(path, params={"last_modified": V1000}, content=body, headers=headers).status_code

            jobs = [(f"/files/huge/{i}", huge_window, {"Content-Encoding": "zstd", "Logical-Size": str(16 << 10)})
                    for i in range(20)]
            jobs += [(f"/files/window8/{i}", frame, {"Content-Encoding": "zstd", "Logical-Size": str(16 * MiB)})
                     for i, frame in enumerate(allowed)]
            jobs += [(f"/files/bomb/{i}", bomb, {"Content-Encoding": "gzip"}) for i in range(10)]
            with ThreadPoolExecutor(40) as pool:
                statuses = list(pool.map(put, jobs))
        finally:
            for s in stalled:
                s.close()
        growth = peak_rss(server.pid) - before
        assert statuses == [400] * 20 + [200] * 40 + [413] * 10, statuses
        assert http.get("/files/window8/7").content == bytes([7]) * (16 * MiB)
        print(f"peak RSS grew by {growth / MiB:.1f} MiB: 40 stalled and 20 refused 128 MiB-window zstd uploads, "
              f"40 concurrent 8 MiB-window zstd uploads, 10 gzip bombs (256 KiB -> 256 MiB)")
        assert growth < ALLOWED_GROWTH, f"the server grew by {growth / MiB:.0f} MiB"
