"""What wide zstd frames from the old server cost a worker: ``castore serve --migrate-from`` (issue #19).

An old server on 127.0.0.1 answers every GET with a zstd frame asking for a 128 MiB
window (160 MiB of zeros, a few KiB on the wire). N clients at once ask a one-worker
``castore serve --migrate-from`` for paths it lacks; this prints their statuses and
the worker's peak RSS (``VmHWM``) before and after. Loopback only; ends by itself.

Run::

    .venv/bin/python benchmarks/migrate_memory.py --misses 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from castore.protocol import format_version
from tests.server_process import castore_server_process

SIZE = 160 << 20


def wide_frame() -> bytes:
    """SIZE zero bytes in one zstd frame whose header asks for a 128 MiB window."""
    params = zstandard.ZstdCompressionParameters(window_log=27)
    writer = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return b"".join(writer.compress(bytes(1 << 20)) for _ in range(SIZE >> 20)) + writer.flush()


def old_server(frame: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Last-Modified", format_version(1_600_000_000))
            self.send_header("Content-Encoding", "zstd")
            self.send_header("Logical-Size", str(SIZE))
            self.send_header("Content-Length", str(len(frame)))
            self.end_headers()
            self.wfile.write(frame)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def peak_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--misses", type=int, default=8)
    args = parser.parse_args()
    server = old_server(wide_frame())
    old = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with tempfile.TemporaryDirectory() as folder, \
                castore_server_process(Path(folder) / "store", "--workers", "1", "--migrate-from", old) as (url, process):
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            worker = int(children[0]) if children else process.pid
            before = peak_rss_mib(worker)
            with ThreadPoolExecutor(args.misses) as pool:
                statuses = list(pool.map(lambda i: httpx.get(f"{url}/files/wide/{i}", timeout=300).status_code,
                                         range(args.misses)))
            print(f"{args.misses} misses: statuses {sorted(set(statuses))}; worker peak RSS {before} MiB before, "
                  f"{peak_rss_mib(worker)} MiB after")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
