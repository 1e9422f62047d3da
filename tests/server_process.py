"""Start a real ``castore serve`` process on 127.0.0.1 for tests, and stop it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def castore_server(
    root: Path, *extra: str, port: int | None = None, store_options: Sequence[str] = (), tls_ca: Path | None = None
) -> Iterator[str]:
    """Run ``castore --root ROOT serve --init`` on loopback (a free port by default); yield its base URL.

    ``store_options`` go before ``serve``, e.g. ``("--metadata", URL, "--blobs", URL)``.
    ``tls_ca``: ``extra`` has ``--tls-cert``/``--tls-key`` of a certificate this CA signed (an ``https://`` URL).
    """
    with castore_server_process(root, *extra, port=port, store_options=store_options, tls_ca=tls_ca) as (url, _):
        yield url


@contextmanager
def castore_server_process(
    root: Path, *extra: str, port: int | None = None, store_options: Sequence[str] = (), tls_ca: Path | None = None,
    output_file: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Like :func:`castore_server`, yielding the base URL and the server's process; its output
    goes to ``output_file`` when given."""
    port = port or free_port()
    command = [sys.executable, "-m", "castore", "--root", str(root), *store_options, "serve", "--init", "--port",
               str(port), *extra]
    # Output goes to a file, not a pipe: a pipe nobody reads fills up and blocks a server that logs.
    with open(output_file, "w+b") if output_file else tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ})
        prefix = next((extra[i + 1] for i, a in enumerate(extra) if a == "--prefix"), "")
        url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}{prefix.rstrip('/')}"
        verify = ssl.create_default_context(cafile=tls_ca) if tls_ca else True
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(url + "/version", timeout=1, verify=verify).status_code in (200, 401):  # 401: tokens are on
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    raise RuntimeError(f"castore serve did not start: {output.read().decode(errors='replace')}")
                time.sleep(0.05)
            yield url, process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                raise


def wait_for(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it is true; fail with ``what`` if it is not within ``timeout`` seconds.

    The timeout only bounds a test that would otherwise hang: tests wait for an event
    this way rather than sleeping for a time they hope is long enough.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def requests_answered(url: str, method: str) -> int:
    """How many ``method`` requests this server (one worker: the counters are per worker) has finished."""
    text = httpx.get(url + "/metrics", timeout=10).text
    prefix = f'castore_requests_total{{method="{method}",'
    return sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def unread_bytes(port: int) -> list[int]:
    """Bytes waiting in the receive queue of each accepted-or-not connection to 127.0.0.1:``port``
    (from /proc/net/tcp: the server has read what a client sent once its queue is 0)."""
    queues = []
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, state, queue = fields[1], fields[3], fields[4]
            if local == f"0100007F:{port:04X}" and state == "01":  # ESTABLISHED, server side
                queues.append(int(queue.split(":")[1], 16))
    return queues


def read_response_head(s: socket.socket) -> bytes:
    """Bytes received on ``s`` up to the end of a response head (or until the server closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def on_event_loop() -> bool:
    """Whether the caller runs on an event loop (a server's handler) rather than in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
