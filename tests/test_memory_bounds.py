"""Large uploads and downloads go through the server with bounded memory (peak RSS, not time)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from castore.client import Client

from .server_process import free_port

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
