"""TLS end to end: ``castore serve --tls-cert/--tls-key`` and every client over ``https://``.

A throw-away CA signs a certificate for ``127.0.0.1`` (IP SAN) and ``localhost``
(:mod:`tests.tls_certs`); a real ``castore serve`` serves HTTPS with it, with one worker
(uvicorn) and with two (gunicorn). castore's ``Client``, the ``castore`` command, the Django
factory and Filetracker 2.3.3's own client (``requests``, given the CA with
``REQUESTS_CA_BUNDLE``) store and read files through it. A certificate from another CA, one
for another host name, ``http://`` to the TLS port and ``https://`` to a plain port are each
refused with one clear line (the command exits 9); nothing turns verification off.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from filetracker.client import Client as FiletrackerClient
from filetracker.client import FiletrackerError as OldClientError

from castore.cli import cli
from castore.client import Client
from castore.client.remote import Remote
from castore.errors import FiletrackerError

from ..server_process import castore_server, castore_server_process, free_port
from ..tls_certs import Pki, make_pki

VERSION = 1_700_000_000
EXIT_NETWORK = 9


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _serve_tls(folders: pytest.TempPathFactory, cert: Path, key: Path, ca: Path) -> Iterator[str]:
    """``https://127.0.0.1:PORT`` of a one-worker ``castore serve --tls-cert CERT --tls-key KEY``."""
    with castore_server(folders.mktemp("store"), "--workers", "1", "--tls-cert", str(cert), "--tls-key", str(key),
                        tls_ca=ca) as url:
        yield url


@pytest.fixture(scope="module")
def tls_url(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server with the trusted CA's certificate for 127.0.0.1 and localhost."""
    yield from _serve_tls(tmp_path_factory, pki.cert, pki.key, pki.ca)


@pytest.fixture(scope="module")
def plain_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with castore_server(tmp_path_factory.mktemp("plain-store"), "--workers", "1") as url:
        yield url


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "a.in"
    path.write_bytes(b"over TLS\n" * 1000)
    return path


def _round_trip(client: Client, source: Path, name: str, tmp_path: Path) -> None:
    stored = client.put_file(f"{name}@{VERSION}", str(source))
    assert stored.endswith(f"@{VERSION}")
    client.get_file(name, str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == source.read_bytes()


# -- castore's client ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_castore_client_over_https_with_a_ca_bundle(tls_url: str, pki: Pki, source: Path, tmp_path: Path,
                                                     host: str) -> None:
    url = tls_url.replace("127.0.0.1", host)
    client = Client(local_store=None, remote_url=url, ca_bundle=str(pki.ca))
    _round_trip(client, source, f"/client/{host}.in", tmp_path)
    assert client.remote_store.is_castore()  # type: ignore[union-attr]
    client.close()


def test_ca_bundle_from_the_environment(tls_url: str, pki: Pki, source: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTORE_CA_BUNDLE", str(pki.ca))
    _round_trip(Client(local_store=None, remote_url=tls_url), source, "/client/env.in", tmp_path)


def test_pooled_tls_connections_are_reused(tls_url: str, pki: Pki, source: Path) -> None:
    """A kept-alive TLS connection goes back to the pool and serves the next request: one
    handshake, not one per request."""
    remote = Remote(tls_url, ca_bundle=str(pki.ca))
    remote.put("/client/reuse.in", source, VERSION)
    first = remote._pool._idle[-1]
    for _ in range(3):
        remote.stat("/client/reuse.in")
        assert remote._pool._idle == [first]
    remote.close()


def test_the_systems_cas_do_not_trust_a_private_ca(tls_url: str, source: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification is on by default: without the CA bundle the certificate is refused."""
    monkeypatch.delenv("CASTORE_CA_BUNDLE", raising=False)
    with pytest.raises(FiletrackerError) as caught:
        Client(local_store=None, remote_url=tls_url).put_file(f"/refused@{VERSION}", str(source))
    assert caught.value.status is None
    assert "certificate is refused" in caught.value.reason and "--ca-bundle" in caught.value.reason  # type: ignore[operator]


def test_a_missing_ca_bundle_is_a_one_line_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^CA bundle .*nothing\.pem: No such file or directory$"):
        Remote("https://127.0.0.1:1", ca_bundle=str(tmp_path / "nothing.pem"))
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"^CA bundle .*empty\.pem: "):
        Remote("https://127.0.0.1:1", ca_bundle=str(tmp_path / "empty.pem"))


# -- refused: another CA, another host name, the wrong scheme -----------------------------------------


@pytest.fixture(scope="module")
def other_ca_url(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose certificate another CA signed."""
    yield from _serve_tls(tmp_path_factory, pki.other_cert, pki.other_key, pki.other_ca)


@pytest.fixture(scope="module")
def wrong_name_url(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("wrong-name-store")
    port = free_port()
    command = [sys.executable, "-m", "castore", "--root", str(root), "serve", "--init", "--port", str(port),
               "--workers", "1", "--tls-cert", str(pki.wrong_name_cert), "--tls-key", str(pki.wrong_name_key)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"https://127.0.0.1:{port}"
        _wait_listening(port)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def _wait_listening(port: int) -> None:
    import socket

    from ..server_process import wait_for

    def accepts() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(accepts, f"nothing listens on {port}")


def _refusal(url: str, pki: Pki, source: Path) -> str:
    with pytest.raises(FiletrackerError) as caught:
        Client(local_store=None, remote_url=url, ca_bundle=str(pki.ca)).put_file(f"/x@{VERSION}", str(source))
    assert caught.value.status is None and caught.value.reason is not None
    return caught.value.reason


def test_a_certificate_from_another_ca_is_refused(other_ca_url: str, pki: Pki, source: Path) -> None:
    reason = _refusal(other_ca_url, pki, source)
    assert reason.startswith("TLS: the server's certificate is refused (certificate verify failed: unable to get "
                             "local issuer certificate)"), reason


def test_a_certificate_for_another_host_name_is_refused(wrong_name_url: str, pki: Pki, source: Path) -> None:
    reason = _refusal(wrong_name_url, pki, source)
    assert "certificate verify failed: IP address mismatch" in reason, reason
    reason = _refusal(wrong_name_url.replace("127.0.0.1", "localhost"), pki, source)
    assert "certificate verify failed: Hostname mismatch" in reason, reason


def test_https_to_a_plain_port_fails_clearly(plain_url: str, pki: Pki, source: Path) -> None:
    reason = _refusal(plain_url.replace("http://", "https://"), pki, source)
    assert reason.startswith("TLS handshake failed (") and reason.endswith("): is the server https://?"), reason


def test_http_to_a_tls_port_fails_clearly(tls_url: str, pki: Pki, source: Path) -> None:
    reason = _refusal(tls_url.replace("https://", "http://"), pki, source)
    assert reason == "Remote end closed connection without response: is the server https://?", reason


# -- the command line ------------------------------------------------------------------------------


def test_cli_put_and_cat_over_https(tls_url: str, pki: Pki, source: Path) -> None:
    runner = CliRunner()
    base = ["--url", tls_url, "--ca-bundle", str(pki.ca)]
    assert runner.invoke(cli, [*base, "put", str(source), "/cli/a.in"]).exit_code == 0
    result = runner.invoke(cli, [*base, "cat", "/cli/a.in"])
    assert result.exit_code == 0 and result.stdout_bytes == source.read_bytes()
    result = runner.invoke(cli, ["--url", tls_url, "cat", "/cli/a.in"], env={"CASTORE_CA_BUNDLE": str(pki.ca)})
    assert result.exit_code == 0 and result.stdout_bytes == source.read_bytes()


def test_cli_refuses_an_untrusted_certificate_in_one_line(other_ca_url: str, pki: Pki, source: Path) -> None:
    result = CliRunner().invoke(cli, ["--url", other_ca_url, "--ca-bundle", str(pki.ca), "put", str(source), "/cli/b.in"])
    assert result.exit_code == EXIT_NETWORK
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: no answer from {other_ca_url}: TLS: the server's "
                                                   "certificate is refused (certificate verify failed"), lines


def test_cli_a_missing_ca_bundle_is_a_usage_error(tls_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--url", tls_url, "--ca-bundle", str(tmp_path / "none.pem"), "ls", "/"])
    assert result.exit_code == 2 and "none.pem: No such file or directory" in result.stderr


# -- Filetracker 2.3.3's own client and the Django factory ------------------------------------------


def test_filetracker_client_over_https(tls_url: str, pki: Pki, source: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
    client = FiletrackerClient(local_store=None, remote_url=tls_url)
    client.put_file(f"/ft/a.in@{VERSION}", str(source), compress_hint=False)
    client.get_file("/ft/a.in", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == source.read_bytes()
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(OldClientError, match="CERTIFICATE_VERIFY_FAILED"):
        FiletrackerClient(local_store=None, remote_url=tls_url).get_file("/ft/a.in", str(tmp_path / "again"))


def test_django_remote_factory_over_https(tls_url: str, pki: Pki, source: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from django_bridge.client import remote_storage_factory

    monkeypatch.delenv("CASTORE_CA_BUNDLE", raising=False)
    with override_settings(FILETRACKER_URL=tls_url, FILETRACKER_CACHE_ROOT=str(tmp_path / "cache"),
                           FILETRACKER_CA_BUNDLE=str(pki.ca)):
        _round_trip(remote_storage_factory(), source, "/django/a.in", tmp_path)
    with override_settings(FILETRACKER_URL=tls_url, FILETRACKER_CACHE_ROOT=str(tmp_path / "cache2")):
        monkeypatch.setenv("CASTORE_CA_BUNDLE", str(pki.ca))  # the setting's default
        _round_trip(remote_storage_factory(), source, "/django/b.in", tmp_path)
        monkeypatch.delenv("CASTORE_CA_BUNDLE")
        with pytest.raises(FiletrackerError, match="certificate verify failed"):
            remote_storage_factory().get_file("/django/b.in", str(tmp_path / "refused"))
    with override_settings(FILETRACKER_URL=tls_url, FILETRACKER_CACHE_ROOT=str(tmp_path / "cache3"),
                           FILETRACKER_CA_BUNDLE=str(tmp_path / "none.pem")), \
            pytest.raises(ImproperlyConfigured, match=r"FILETRACKER_CA_BUNDLE.*none\.pem: No such file"):
        remote_storage_factory()


# -- castore serve ---------------------------------------------------------------------------------


def test_serve_with_two_workers_serves_https_and_says_so(pki: Pki, source: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with castore_server_process(tmp_path / "store", "--workers", "2", "--tls-cert", str(pki.cert), "--tls-key",
                                str(pki.key), tls_ca=pki.ca, output_file=log) as (url, _):
        client = Client(local_store=None, remote_url=url, ca_bundle=str(pki.ca))
        for i in range(4):  # new connections, spread over the workers
            _round_trip(client, source, f"/two/{i}.in", tmp_path)
            client.close()
        plain = url.replace("https://", "http://")
        with pytest.raises(FiletrackerError):
            Client(local_store=None, remote_url=plain).put_file(f"/plain@{VERSION}", str(source))
    first = log.read_text().splitlines()[0]
    assert f" at {url} (2 workers, " in first, first


def _serve_fails(root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "castore", "--root", str(root), "serve", "--init", "--port", str(free_port()),
               "--workers", "1", *options]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60, env={**os.environ})


@pytest.mark.parametrize("case, code, message", [
    ("missing cert", 7, r"^Error: --tls-cert \S+nothing\.pem: No such file or directory$"),
    ("missing key", 7, r"^Error: --tls-key \S+nothing\.key: No such file or directory$"),
    ("mismatched", 2, (r"^Error: --tls-cert \S+server\.pem with --tls-key \S+other-server\.key: cannot be used "
                       r"\(key values mismatch\); is the key the certificate's, both in PEM\?$")),
    ("not PEM", 2, r"^Error: --tls-cert \S+ca\.key-not\.txt with --tls-key \S+: cannot be used"),
    ("cert alone", 2, r"^Error: --tls-cert and --tls-key go together$"),
])
def test_serve_refuses_a_bad_certificate_or_key_in_one_line(pki: Pki, tmp_path: Path, case: str, code: int,
                                                            message: str) -> None:
    (tmp_path / "ca.key-not.txt").write_text("hello\n")
    options = {
        "missing cert": ["--tls-cert", str(tmp_path / "nothing.pem"), "--tls-key", str(pki.key)],
        "missing key": ["--tls-cert", str(pki.cert), "--tls-key", str(tmp_path / "nothing.key")],
        "mismatched": ["--tls-cert", str(pki.cert), "--tls-key", str(pki.other_key)],
        "not PEM": ["--tls-cert", str(tmp_path / "ca.key-not.txt"), "--tls-key", str(pki.key)],
        "cert alone": ["--tls-cert", str(pki.cert)],
    }[case]
    result = _serve_fails(tmp_path / "store", *options)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(message, lines[0]), lines[0]


# -- an old server over https: import, fallback redirect, live migration ----------------------------


@pytest.fixture
def old_file(tls_url: str, pki: Pki, source: Path) -> str:
    """A file stored only in the TLS server (the "old server" of these tests)."""
    Client(local_store=None, remote_url=tls_url, ca_bundle=str(pki.ca)).put_file(f"/old/a.in@{VERSION}", str(source))
    return "/old/a.in"


def test_import_from_an_https_server(tls_url: str, pki: Pki, old_file: str, source: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    root = ["--root", str(tmp_path / "new")]
    assert runner.invoke(cli, [*root, "init"]).exit_code == 0
    result = runner.invoke(cli, [*root, "--ca-bundle", str(pki.ca), "import-filetracker", "--url", tls_url])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*root, "cat", old_file])
    assert result.exit_code == 0 and result.stdout_bytes == source.read_bytes()
    result = runner.invoke(cli, [*root, "import-filetracker", "--url", tls_url], env={"CASTORE_CA_BUNDLE": ""})
    assert result.exit_code == EXIT_NETWORK and "certificate is refused" in result.stderr, result.output


def test_a_fallback_redirect_to_an_https_server_is_followed(tls_url: str, pki: Pki, old_file: str, source: Path,
                                                            tmp_path: Path) -> None:
    with castore_server(tmp_path / "new", "--workers", "1", "--fallback-url", tls_url) as url:
        client = Client(local_store=None, remote_url=url, ca_bundle=str(pki.ca))
        client.get_file(old_file, str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == source.read_bytes()


def test_live_migration_from_an_https_server(tls_url: str, pki: Pki, old_file: str, source: Path,
                                             tmp_path: Path) -> None:
    with castore_server(tmp_path / "new", "--workers", "1", "--migrate-from", tls_url,
                        store_options=("--ca-bundle", str(pki.ca))) as url:
        Client(local_store=None, remote_url=url).get_file(old_file, str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == source.read_bytes()
    result = CliRunner().invoke(cli, ["--root", str(tmp_path / "new"), "cat", old_file])
    assert result.stdout_bytes == source.read_bytes()  # moved in
