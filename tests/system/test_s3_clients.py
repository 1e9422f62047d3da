"""Each process has its own S3 client: a connection never crosses a ``fork``.

A client kept alive across ``fork`` shares its pooled keep-alive connections with the
child: requests of both processes then go out on one socket, and a child killed in the
middle of a PUT leaves the parent waiting out boto3's 60 s read timeout on it. moto
answers ``Connection: close`` and hides this; radosgw, like AWS, keeps connections alive.
"""

from __future__ import annotations

import multiprocessing
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from castore.blobs.s3 import S3BlobBackend, _client
from castore.keys import BlobKey
from castore.opening import open_blobs

from ..backends import MotoServer, S3Server
from ..server_process import castore_server

FORK = multiprocessing.get_context("fork")


def test_a_forked_child_makes_its_own_s3_client(s3_server: S3Server) -> None:
    backend = open_blobs(s3_server.new_bucket())
    assert isinstance(backend, S3BlobBackend)
    backend.put_bytes(BlobKey("a" * 32), b"parent")  # the parent's pool now holds a connection
    inherited = backend._client

    def child() -> None:
        made_here = _client(s3_server.endpoint, s3_server.REGION)
        shared = [name for name, client in (("the cache's", made_here), ("the backend's", backend._client))
                  if client is inherited]
        assert not shared, f"{' and '.join(shared)} client is the parent's"
        backend.put_bytes(BlobKey("b" * 32), b"child")  # and it works

    process = FORK.Process(target=child)
    process.start()
    process.join(60)
    assert process.exitcode == 0, "the child used its parent's S3 client (see its traceback above)"
    assert backend._client is inherited, "the parent keeps its own"
    assert BlobKey("b" * 32) in backend


REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.1\r\n")


class RecordingProxy:
    """A TCP proxy to an S3 server that records which requests went out on which connection."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list[list[str]] = []
        """Per connection accepted, the ``METHOD /path`` of each request sent on it."""
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                requests: list[str] = []
                self.connections.append(requests)
            threading.Thread(target=self._pump, args=(client, server, requests), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, requests: list[str] | None) -> None:
        tail = b""
        try:
            while data := source.recv(1 << 16):
                if requests is not None:
                    seen = tail + data
                    with self._lock:
                        requests.extend(f"{m[1].decode()} {m[2].decode()}" for m in REQUEST_LINE.finditer(seen))
                    tail = seen[-200:] if not seen.endswith(b"\r\n") else b"\r\n"
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@contextmanager
def recording_proxy(upstream: str) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()


def test_serve_workers_never_use_the_masters_s3_connections(s3_server: S3Server, tmp_path: Path) -> None:
    if isinstance(s3_server, MotoServer):
        pytest.skip("moto closes every connection after one answer: nothing is left to share (radosgw keeps them)")
    name = s3_server.new_bucket_name()
    with recording_proxy(s3_server.endpoint) as proxy:
        blobs = f"s3://{name}/blobs?endpoint_url={proxy.endpoint}&region={s3_server.REGION}"
        store = ("--metadata", f"sqlite:///{tmp_path / 'metadata.sqlite3'}", "--blobs", blobs)
        # the master checks the bucket (castore.location.open_parts) before it forks its workers
        with castore_server(tmp_path, "--workers", "2", "--create-bucket", store_options=store) as url:
            for i in range(8):  # large files (kept in the bucket, not inline), each on a new connection
                answer = httpx.put(f"{url}/files/big/{i}?last_modified=Thu, 01 Jan 1970 00:16:40 -0000", content=bytes([i]) * 300_000,
                                   headers={"Host": "127.0.0.1"})
                assert answer.status_code == 200, answer.text
        with proxy._lock:
            connections = [list(requests) for requests in proxy.connections]
    check = [i for i, requests in enumerate(connections) if any("castore-setup-check" in r for r in requests)]
    assert check, connections
    for i in check:
        blob_requests = [r for r in connections[i] if "/blobs/" in r and "castore-setup-check" not in r]
        assert not blob_requests, f"the master's connection {i} was used by a worker: {connections[i]}"
    assert sum(any(r.startswith("PUT") and "/blobs/" in r for r in c) for c in connections) >= 1
