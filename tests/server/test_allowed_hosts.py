"""The Host header guard (DNS rebinding): a real ``castore serve`` answers only to its own names.

Raw requests with forged ``Host`` headers go to a server on 127.0.0.1 started with the
defaults; refused ones get 421 with a one-line ``X-Exception`` before authentication and
before any handler (nothing is stored), while Filetracker 2.3.3's client and castore's
client keep working unchanged.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import filetracker.client
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from castore.client import Client
from castore.server.app import early_answers
from castore.server.hosts import ANSWERS_KEPT, AllowedHosts, default_allowed_hosts, host_name
from castore.server.serving import PerWorkerApp
from castore.server.tokens import create_token
from castore.server.upload import UploadLimits
from castore.store import Store

from ..server_process import castore_server, read_response_head
from .test_per_worker_app import _get as _asgi_get
from .test_per_worker_app import _Lifespan

Q = "last_modified=Thu,%2001%20Jan%201970%2000:16:40%20-0000"


def _request(url: str, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, without the blank line) raw; the status, headers and body."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as s:
        s.sendall(head.encode("latin-1") + b"\r\nConnection: close\r\n\r\n" + body)
        data = read_response_head(s)
        while chunk := s.recv(65536):
            data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def _get(url: str, host: str | None, path: str = "/version", version: str = "1.1") -> tuple[int, dict[str, str]]:
    lines = [f"GET {path} HTTP/{version}"] + ([f"Host: {host}"] if host is not None else [])
    status, headers, _ = _request(url, "\r\n".join(lines))
    return status, headers


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with castore_server(tmp_path_factory.mktemp("hosts") / "store") as base:
        yield base


FORGED = ["evil.example", "evil.example:9999", "127.0.0.1.evil.example", "localhost.evil.example", "EVIL.example.",
          "127.0.0.2", "0.0.0.0", "[::2]", "localhost:abc", "local host", "localhost@evil.example", ""]


@pytest.mark.parametrize("host", FORGED)
def test_forged_hosts_get_421(url: str, host: str) -> None:
    for path in ("/version", "/files/a", "/health", "/ui/", "/metrics", "/list/"):
        status, headers = _get(url, host, path)
        assert status == 421, (host, path)
        assert "does not answer to the name" in headers["x-exception"] and "--allowed-hosts" in headers["x-exception"]


@pytest.mark.parametrize("host", ["localhost", "localhost:9999", "LOCALHOST", "localhost.", "LocalHost.:1",
                                  "127.0.0.1", "127.0.0.1:{port}", "[::1]", "[::1]:{port}", "[0:0::1]:1"])
def test_the_servers_own_names_are_answered(url: str, host: str) -> None:
    assert _get(url, host.format(port=urlsplit(url).port))[0] == 200


def test_without_host_http_1_0_passes_http_1_1_does_not(url: str) -> None:
    assert _get(url, None, version="1.0")[0] == 200
    status, headers = _get(url, None)
    assert status == 400 and "Host" in headers["x-exception"]
    status, headers, _ = _request(url, "GET /version HTTP/1.1\r\nHost: localhost\r\nHost: evil.example")
    assert status == 400 and "one Host header" in headers["x-exception"]


def test_a_refused_put_stores_nothing(url: str) -> None:
    head = f"PUT /files/rebound?{Q} HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 4"
    assert _request(url, head, b"evil")[0] == 421
    head = head.replace("evil.example", "127.0.0.1")
    assert _request(url, head, b"good")[0] == 200


def test_both_clients_work_with_the_defaults(url: str, tmp_path: Path) -> None:
    local = tmp_path / "a.txt"
    local.write_bytes(b"hello\n")
    ft = filetracker.client.Client(remote_url=url, local_store=None)
    name = ft.put_file("/ft/a.txt", str(local))
    ft.get_file(name, str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_bytes() == b"hello\n"
    ours = Client(remote_url=url, local_store=None)
    name = ours.put_file("/ours/a.txt", str(local))
    assert ours.get_stream(name)[0].read() == b"hello\n"
    assert ours.put_files([("/ours/b.txt", str(local))])[0].stored  # PUT /batch/
    localhost = url.replace("127.0.0.1", "localhost")
    assert Client(remote_url=localhost, local_store=None).get_stream("/ours/a.txt")[0].read() == b"hello\n"


def test_refused_before_authentication(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        _, token = create_token(store.metadata, "admin")
    with castore_server(root) as base:
        status, headers, _ = _request(base, f"GET /files/a HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {token}")
        assert status == 421 and "www-authenticate" not in headers
        assert _get(base, "evil.example", "/health")[0] == 421
        assert _get(base, "localhost")[0] == 401  # a name of the server: on to authentication


def test_allowed_hosts_option(tmp_path: Path) -> None:
    with castore_server(tmp_path / "a", "--allowed-hosts", "files.example,127.0.0.1", "--allowed-hosts",
                        "10.0.0.0/8") as base:
        assert _get(base, "files.example:80")[0] == 200
        assert _get(base, "Files.Example.")[0] == 200
        assert _get(base, "10.1.2.3:9999")[0] == 200
        assert _get(base, "localhost")[0] == 421  # a list given replaces the defaults
        assert _get(base, "files.example.evil")[0] == 421
    with castore_server(tmp_path / "b", "--allowed-hosts", "*") as base:
        assert _get(base, "evil.example")[0] == 200
        assert _get(base, None)[0] == 200


def test_a_malformed_entry_is_bad_usage(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from castore.cli import cli

    result = CliRunner().invoke(cli, ["--root", str(tmp_path / "s"), "serve", "--init", "--allowed-hosts", "a b"])
    assert result.exit_code == 2 and "--allowed-hosts" in result.output and "'a b' is not a host name" in result.output


def test_host_names_and_defaults() -> None:
    assert host_name("LOCALHOST.:9999") == "localhost"
    assert host_name("[::1]:80") == host_name("[0::1]") == "::1"
    assert host_name("::1") is None and host_name("a:b:c") is None and host_name("[::1]x") is None
    assert host_name("127.0.0.1.") == "127.0.0.1"
    for malformed in ("*.example", "a b", "files.example/8", "::1::2"):
        with pytest.raises(ValueError):
            AllowedHosts.parse([malformed])
    assert AllowedHosts.parse(["a.example, [::1]:80", "10.0.0.0/8"]).allows("[::1]")
    assert default_allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "::1"]
    assert default_allowed_hosts("files.example", "10.0.0.5")[-2:] == ["files.example", "10.0.0.5"]
    everywhere = AllowedHosts.parse(default_allowed_hosts("0.0.0.0"))
    hostname = socket.gethostname()
    for host in (hostname, hostname.upper() + ":9999", "10.1.2.3", "[2001:db8::1]:9999", "localhost"):
        assert everywhere.allows(host), host
    assert not everywhere.allows("evil.example") and not everywhere.allows(f"{hostname}.evil.example")


def test_early_version_answers_only_allowed_hosts() -> None:
    """While a worker builds its app, ``GET /version`` from a forged Host waits for the app (which refuses it)."""
    release = threading.Event()

    def factory() -> Starlette:
        assert release.wait(10)
        return Starlette(routes=[Route("/version", lambda request: PlainTextResponse("app", status_code=421))])

    early = early_answers(read_only=False, limits=UploadLimits())
    app = PerWorkerApp(factory, early=early, on_failure=lambda e: None, early_hosts=AllowedHosts.parse(["localhost"]))

    async def get(host: str) -> int:
        return (await _asgi_get(app, "/version", [(b"host", host.encode())]))[0]

    async def scenario() -> None:
        lifespan = _Lifespan(app)
        assert await lifespan.send("startup") == "lifespan.startup.complete"
        assert await asyncio.wait_for(get("localhost:9999"), 5) == 200  # early
        waiting = asyncio.ensure_future(get("evil.example"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        release.set()
        assert await asyncio.wait_for(waiting, 10) == 421
        assert await lifespan.send("shutdown") == "lifespan.shutdown.complete"

    asyncio.run(scenario())


def test_remembered_answers_stay_right_and_bounded() -> None:
    """A server remembers the answer for each ``Host`` value it met; a scan of many values
    neither grows that memory past ANSWERS_KEPT nor changes an answer."""
    hosts = AllowedHosts.parse(["files.example", "10.0.0.0/8"])
    asked = [f"10.0.{i // 256}.{i % 256}" if i % 2 else f"name{i}.example" for i in range(3 * ANSWERS_KEPT)]
    for _ in range(2):  # the second time from what is remembered (or looked at again after a clear)
        assert [hosts.allows(h) for h in asked] == [i % 2 == 1 for i in range(len(asked))]
        assert hosts.allows("FILES.example.:8080") and not hosts.allows("files.example.evil")
        assert len(hosts._answers) <= ANSWERS_KEPT
