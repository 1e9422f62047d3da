"""castore's client against the original Filetracker 2.3.3 server: the drop-in works both ways.

Needs Filetracker's server in ``.venv-filetracker`` (``bash benchmarks/setup_filetracker.sh``,
which ``scripts/test.sh`` runs); skipped when it is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.server import FT_VENV, filetracker_server, running
from castore.client import Client
from castore.errors import FileNotAvailable, FiletrackerError

pytestmark = pytest.mark.skipif(
    not (FT_VENV / "bin/filetracker-server").exists(),
    reason="Filetracker's server is not installed (bash benchmarks/setup_filetracker.sh)",
)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("filetracker-server")
    with running(*filetracker_server(work / "data", work / "server.log")) as base:
        yield base


@pytest.fixture
def client(url: str, tmp_path: Path) -> Client:
    return Client(cache_dir=tmp_path / "cache", remote_url=url)


@pytest.mark.parametrize("kind", ["small text", "large text", "large random", "empty"])
def test_put_get_roundtrip(client: Client, tmp_path: Path, kind: str) -> None:
    content = {"small text": b"1 2 3\n" * 1000, "large text": b"4 5 6\n" * 600_000,
               "large random": os.urandom(3 << 20), "empty": b""}[kind]
    assert client.remote_store is not None and not client.remote_store.is_castore()  # type: ignore[attr-defined]
    source = tmp_path / "source"
    source.write_bytes(content)
    path = f"/castore-client/{kind.replace(' ', '-')}"
    assert client.put_file(f"{path}@1000", source) == f"{path}@1000"
    out = tmp_path / "out"
    assert client.get_file(path, out, add_to_cache=False) == f"{path}@1000"
    assert out.read_bytes() == content
    stream, name = client.get_stream(path)
    assert stream.read() == content and name == f"{path}@1000"
    assert client.file_size(path) == len(content) and client.file_version(path) == 1000


def test_versions_listing_and_deletes(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"two")
    assert client.put_file("/cc/v@2000", source) == "/cc/v@2000"
    source.write_bytes(b"one")
    assert client.put_file("/cc/v@1000", source) == "/cc/v@2000"  # older: ignored by the server
    assert client.get_stream("/cc/v")[0].read() == b"two"
    assert client.list_remote_files(subpath="/cc") == ["v"]
    client.delete_file("/cc/v@2000")
    with pytest.raises(FileNotAvailable) as info:
        client.file_version("/cc/v")
    assert "404" in str(info.value)
    with pytest.raises(FiletrackerError):
        client.list_remote_files(subpath="/cc/nothing")


def test_an_older_version_from_filetracker_says_what_the_server_has(client: Client, tmp_path: Path) -> None:
    """Filetracker's server keeps only the current version and ignores castore's ``?version=``: the
    client sees another version come back and says so, as Filetracker's client does (issue #21)."""
    source = tmp_path / "source"
    for version in (1000, 2000):
        source.write_bytes(b"%d" % version)
        client.put_file(f"/cc/old@{version}", source)
    with pytest.raises(FileNotAvailable, match="Version 1000 of /cc/old not available. Server has 2000"):
        client.get_file("/cc/old@1000", tmp_path / "out")
    with pytest.raises(FileNotAvailable, match="Server has 2000"):
        client.get_stream("/cc/old@1000")
    assert not (tmp_path / "out").exists()
    assert client.get_stream("/cc/old@2000")[0].read() == b"2000"


def test_put_files_sends_no_batch_to_filetracker(url: str, tmp_path: Path) -> None:
    """No batch to a server that does not advertise one; one that is tried anyway falls back file by file."""
    from castore.batch import BatchLimits
    from castore.client.remote import Remote

    sources = []
    for i in range(5):
        source = tmp_path / f"{i}.in"
        source.write_bytes(b"%d\n" % i * 100)
        sources.append(source)
    for forced in (False, True):
        remote = Remote(url)
        assert remote.batch_limits() is None
        if forced:
            remote._batch = BatchLimits()  # as if it had said it takes batches: PUT /batch/ is refused
        client = Client(local_store=None, remote_store=remote)
        results = client.put_files([(f"/cc/batch{forced}/{s.name}@1000", s) for s in sources])
        assert all(r.ok and r.stored == r.wanted for r in results), [r.error for r in results]
        for s in sources:
            assert client.get_stream(f"/cc/batch{forced}/{s.name}")[0].read() == s.read_bytes()
