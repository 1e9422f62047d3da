"""A server that answers every request at once and stores nothing: a client's own ceiling.

Used by ``benchmarks/server.py`` (the Filetracker client's ceiling) and
``benchmarks/client.py`` (castore's client CPU per request). It runs in a spawned process
on 127.0.0.1 so that the client measured has the calling process to itself.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["null_server"]


def _serve(port: int, body_size: int) -> None:
    """Answer each request with 200; a GET of a file gets ``body_size`` random bytes."""
    import os

    body = os.urandom(body_size)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if head.startswith(b"GET /version"):
                payload = b'{"protocol_versions": [2], "castore": "null"}'
            elif head.startswith(b"GET "):
                payload = body
            else:
                payload = b""
            writer.write(b"HTTP/1.1 200 OK\r\nLast-Modified: Thu, 01 Jan 1970 00:16:40 -0000\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
            await writer.drain()
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def null_server(body_size: int = 0) -> Iterator[str]:
    """The URL of a running null server, stopped on exit."""
    port = _free_port()
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, body_size), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.join()
