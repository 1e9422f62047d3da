"""What misses on a hanging old server cost everyone else: ``castore serve --migrate-from`` (issue #19).

An old server on 127.0.0.1 accepts every request and never answers. A one-worker
``castore serve --migrate-from`` gets N GETs of paths it lacks (each one a fetch from
the old server, left hanging), then this measures the latency of ``/health``, a small
GET and a 3 MiB GET of files castore has, one after the other, each given up after
``--give-up`` seconds. Everything runs on loopback; the run ends by itself.

Run::

    .venv/bin/python benchmarks/migrate_stall.py --misses 45 200   # extra castore serve options after --
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from castore.protocol import format_version
from tests.server_process import castore_server


def hanging_server(stop: threading.Event) -> str:
    """A server that accepts connections and never answers; at ``stop`` it closes them all."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            readable, _, _ = select.select([listener], [], [], 0.1)
            if readable:
                held.append(listener.accept()[0])
        listener.close()  # what waits in the backlog is refused from now on
        for s in held:
            s.close()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def timed(call: httpx.Client, url: str, give_up: float) -> str:
    started = time.perf_counter()
    try:
        response = call.get(url, timeout=give_up)
        return f"{(time.perf_counter() - started) * 1000:.0f} ms ({response.status_code})"
    except httpx.TimeoutException:
        return f"> {give_up:g} s (gave up)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--misses", type=int, nargs="+", default=[45, 200])
    parser.add_argument("--give-up", type=float, default=30.0)
    parser.add_argument("serve_options", nargs="*")
    args = parser.parse_args()
    big = bytes(range(256)) * (3 * 4096)
    for misses in args.misses:
        stop = threading.Event()
        old = hanging_server(stop)
        try:
            with tempfile.TemporaryDirectory() as folder, \
                    castore_server(Path(folder) / "store", "--workers", "1", "--migrate-from", old,
                                   *args.serve_options) as url:
                print(f"{misses} hanging misses: {measure(url, misses, big, args.give_up)}", flush=True)
                stop.set()  # the old server hangs up: the fetches end, and castore stops at once
        finally:
            stop.set()


def measure(url: str, misses: int, big: bytes, give_up: float) -> str:
    """Send ``misses`` GETs of missing paths, then time the requests of other clients."""
    version = {"last_modified": format_version(1_600_000_000)}
    with httpx.Client() as http:
        http.put(url + "/files/small", content=b"small", params=version).raise_for_status()
        http.put(url + "/files/big", content=big, params=version).raise_for_status()
        sockets = []
        try:
            for i in range(misses):
                s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
                s.sendall(f"GET /files/missing/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                sockets.append(s)
            time.sleep(1)  # let the misses reach the server
            figures = {what: timed(http, url + path, give_up)
                       for what, path in (("/health", "/health"), ("small GET", "/files/small"),
                                          ("3 MiB GET", "/files/big"))}
            answered = [s for s in sockets if select.select([s], [], [], 0)[0]]
            busy = sum(1 for s in answered if s.recv(12).startswith(b"HTTP/1.1 503"))
        finally:
            for s in sockets:
                s.close()
    return ", ".join(f"{k} {v}" for k, v in figures.items()) + f"; misses answered 503 at once: {busy}"


if __name__ == "__main__":
    main()
