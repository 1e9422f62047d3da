"""``--fallback-url``: a file castore lacks is fetched from exactly that file on the old server.

A real ``castore serve --fallback-url`` on loopback redirects to an old server: a small
scripted one that records every request target it gets and answers each path with its
own bytes, and Filetracker 2.3.3's own server holding the same files (skipped when it is
not installed: ``bash benchmarks/setup_filetracker.sh``). Names hold ``?``, ``#``, ``%``, spaces, non-ASCII and a literal ``%2F``; for each,
the old server also holds a *decoy* under the path a wrongly encoded redirect would
name (``/tests/a`` for ``/tests/a?b.in``). castore's client and Filetracker 2.3.3's
client must get exactly the named file's bytes, and a file the old server does not
have must be a clean error, never a decoy's bytes.
"""

from __future__ import annotations

import email.utils
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from filetracker.client import Client as FiletrackerClient
from filetracker.client import FiletrackerError as OldClientError

from benchmarks.server import FT_VENV, filetracker_server, running
from castore.client import Client
from castore.errors import FileNotAvailable

from ..server_process import castore_server

VERSION = 1_700_000_000

NAMES = {  # a name castore lacks → the decoy a redirect built from it unencoded would reach
    "/tests/a?b.in": "/tests/a",
    "/tests/c#1.out": "/tests/c",
    "/tests/100%41.in": "/tests/100A.in",
    "/tests/x%2Fy": "/tests/x/y",
    "/tests/with space.in": None,
    "/tests/zażółć ✓.in": None,
    "/tests/%3F?%23#.in": "/tests/?",
}
MISSING = {"/tests/gone?x.in": "/tests/gone", "/tests/lost#2.out": "/tests/lost"}
"""Names the old server lacks too, beside a decoy it has."""


def _old_files() -> dict[str, bytes]:
    files = {name: f"old content of {name}".encode() for name in NAMES}
    decoys = [decoy for decoy in (*NAMES.values(), *MISSING.values()) if decoy is not None]
    files.update({decoy: f"DECOY {decoy}".encode() for decoy in decoys})
    return files


class OldServer(ThreadingHTTPServer):
    """An old Filetracker server: ``GET|HEAD /files/<path>`` from a dict; records request targets."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _OldHandler)
        self.files = files
        self.targets: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _OldHandler(BaseHTTPRequestHandler):
    server: OldServer

    def _answer(self, with_body: bool) -> None:
        self.server.targets.append(self.path)
        path = unquote(urlsplit(self.path).path).removeprefix("/files")  # as a WSGI server decodes it
        content = self.server.files.get(path)
        if content is None:
            self.send_response(404)
            self.send_header("X-Exception", "not found")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Last-Modified", email.utils.formatdate(VERSION))
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Logical-Size", str(len(content)))
        self.end_headers()
        if with_body:
            self.wfile.write(content)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def old() -> Iterator[OldServer]:
    server = OldServer(_old_files())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def filetracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Filetracker 2.3.3's server, holding the old files (put by its own client)."""
    if not (FT_VENV / "bin/filetracker-server").exists():
        pytest.skip("Filetracker's server is not installed (bash benchmarks/setup_filetracker.sh)")
    work = tmp_path_factory.mktemp("filetracker-server")
    with running(*filetracker_server(work / "data", work / "server.log")) as url:
        client = FiletrackerClient(local_store=None, remote_url=url)
        for name, content in _old_files().items():
            (work / "source").write_bytes(content)
            client.put_file(f"{name}@{VERSION}", str(work / "source"))
        yield url


@pytest.fixture(scope="module", params=["scripted old server", "Filetracker 2.3.3"])
def new(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """castore serve with ``--fallback-url`` naming the old server."""
    old_url = request.getfixturevalue("old").url if request.param == "scripted old server" \
        else request.getfixturevalue("filetracker")
    with castore_server(tmp_path_factory.mktemp("fallback") / "store", "--fallback-url", old_url) as url:
        yield url


@pytest.mark.parametrize("name", sorted(NAMES))
def test_castore_client_gets_exactly_the_named_file(new: str, old: OldServer, tmp_path: Path, name: str) -> None:
    client = Client(local_store=None, remote_url=new)
    try:
        stream, _ = client.get_stream(name)
        with stream:
            assert stream.read() == f"old content of {name}".encode()
        client.get_file(name, tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == f"old content of {name}".encode()
        assert client.file_version(name) == VERSION
    finally:
        client.close()


@pytest.mark.parametrize("name", sorted(NAMES))
def test_filetracker_client_gets_exactly_the_named_file(new: str, tmp_path: Path, name: str) -> None:
    client = FiletrackerClient(local_store=None, remote_url=new)
    client.get_file(name, str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == f"old content of {name}".encode()
    stream, _ = client.get_stream(name)
    assert bytes(stream.read()) == f"old content of {name}".encode()
    assert client.file_version(name) == VERSION


@pytest.mark.parametrize("name", sorted(MISSING))
def test_a_file_missing_on_both_is_a_clean_error(new: str, tmp_path: Path, name: str) -> None:
    client = Client(local_store=None, remote_url=new)
    try:
        with pytest.raises(FileNotAvailable):
            client.get_file(name, tmp_path / "castore-out")
    finally:
        client.close()
    assert not (tmp_path / "castore-out").exists()
    with pytest.raises(OldClientError) as info:
        FiletrackerClient(local_store=None, remote_url=new).get_file(name, str(tmp_path / "filetracker-out"))
    assert "404" in str(info.value)
    assert not (tmp_path / "filetracker-out").exists()


def test_the_redirect_names_the_path_looked_up_and_keeps_the_query(old: OldServer, tmp_path: Path) -> None:
    """An encoded ``/`` in a URL is a separator once decoded (castore looks up ``/tests/x/y``):
    the redirect names that same path. The query the client sent goes along."""
    with castore_server(tmp_path / "store", "--fallback-url", old.url) as new, httpx.Client(timeout=10) as http:
        r = http.get(f"{new}/files/tests/x%2Fy")
        assert r.status_code == 307 and r.headers["location"] == f"{old.url}/files/tests/x/y"
        query = "last_modified=Thu%2C%2001%20Jan%201970%2000%3A16%3A40%20-0000"
        r = http.get(f"{new}/files/tests/a%3Fb.in?{query}")
        assert r.status_code == 307 and r.headers["location"] == f"{old.url}/files/tests/a%3Fb.in?{query}"
        old.targets.clear()
        r = http.get(f"{new}/files/tests/a%3Fb.in?{query}", follow_redirects=True)
        assert r.content == b"old content of /tests/a?b.in"
        assert old.targets == [f"/files/tests/a%3Fb.in?{query}"]
