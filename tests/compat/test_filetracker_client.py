"""The unmodified Filetracker 2.3.3 client (from PyPI) against a real ``castore serve``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from filetracker.client import Client, FiletrackerError

from ..server_process import castore_server


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with castore_server(tmp_path_factory.mktemp("ft-compat") / "store") as base:
        yield base


@pytest.fixture
def client(url: str) -> Client:
    return Client(local_store=None, remote_url=url)


@pytest.fixture
def local(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(content: bytes, name: str = "f") -> str:
        path = tmp_path / name
        path.write_bytes(content)
        return str(path)

    return make


def test_put_get_roundtrip_compressed_and_raw(client: Client, local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    content = b"1 2 3\n" * 10_000
    for hint in (True, False):
        name = client.put_file(f"/compat/a{hint}.txt@1000", local(content), compress_hint=hint)
        assert name == f"/compat/a{hint}.txt@1000"
        out = tmp_path / f"out{hint}"
        assert client.get_file(f"/compat/a{hint}.txt", str(out)) == name
        assert out.read_bytes() == content
        stream, versioned = client.get_stream(f"/compat/a{hint}.txt")
        assert stream.read() == content and versioned == name
        assert client.file_version(f"/compat/a{hint}.txt") == 1000
        assert client.file_size(f"/compat/a{hint}.txt") == len(content)


def test_large_random_file(client: Client, local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    content = os.urandom(3 << 20)
    client.put_file("/compat/big.bin@5", local(content))
    out = tmp_path / "big.out"
    client.get_file("/compat/big.bin", str(out))
    assert out.read_bytes() == content
    assert client.file_size("/compat/big.bin") == len(content)


def test_versions_older_equal_newer(client: Client, local) -> None:  # type: ignore[no-untyped-def]
    assert client.put_file("/compat/v@2000", local(b"two")) == "/compat/v@2000"
    assert client.put_file("/compat/v@1000", local(b"one")) == "/compat/v@2000"
    assert client.get_stream("/compat/v")[0].read() == b"two"
    assert client.put_file("/compat/v@2000", local(b"TWO")) == "/compat/v@2000"
    assert client.get_stream("/compat/v")[0].read() == b"TWO"
    assert client.put_file("/compat/v@3000", local(b"three")) == "/compat/v@3000"
    assert client.file_version("/compat/v") == 3000


def test_an_older_retained_version_is_refused_as_filetracker_refuses_it(client: Client, local,  # type: ignore[no-untyped-def]
                                                                         tmp_path: Path) -> None:
    """Filetracker's protocol reads only the current version: its client keeps its own answer (issue #21)."""
    client.put_file("/compat/r@1000", local(b"one"))
    client.put_file("/compat/r@2000", local(b"two"))
    with pytest.raises(FiletrackerError, match=r"Version /compat/r@1000 not available\. Server has 2000"):
        client.get_stream("/compat/r@1000")
    with pytest.raises(FiletrackerError, match="Server has 2000"):
        client.get_file("/compat/r@1000", str(tmp_path / "out"))
    assert client.get_stream("/compat/r@2000")[0].read() == b"two"


def test_unversioned_put_uses_now(client: Client, local) -> None:  # type: ignore[no-untyped-def]
    import time

    before = int(time.time())
    name = client.put_file("/compat/now", local(b"x"))
    assert before - 2 <= int(name.rsplit("@", 1)[1]) <= int(time.time()) + 2


def test_delete_and_missing_files(client: Client, local) -> None:  # type: ignore[no-untyped-def]
    client.put_file("/compat/d@2000", local(b"x"))
    client.delete_file("/compat/d@1500")  # older: ignored, still 200
    assert client.file_version("/compat/d") == 2000
    client.delete_file("/compat/d@2000")
    for call in (
        lambda: client.file_version("/compat/d"),
        lambda: client.get_stream("/compat/d"),
        lambda: client.delete_file("/compat/d@3000"),
        lambda: client.file_size("/compat/d"),
    ):
        with pytest.raises(FiletrackerError, match="404"):
            call()


def test_list_remote_files(client: Client, local) -> None:  # type: ignore[no-untyped-def]
    client.put_file("/listing/x/a@1000", local(b"a"))
    client.put_file("/listing/x/b@3000", local(b"b"))
    client.put_file("/listing/x/sub/c@1000", local(b"c"))
    assert sorted(client.list_remote_files(subpath="/listing/x")) == ["a", "b", "sub/c"]
    assert sorted(client.list_remote_files(2000, "/listing/x")) == ["a", "sub/c"]
    assert sorted(client.list_remote_files(subpath="/listing/x", absolute_paths=True)) == [
        "listing/x/a", "listing/x/b", "listing/x/sub/c"]
    with pytest.raises(FiletrackerError):
        client.list_remote_files(subpath="/listing/nothing")


def test_cached_client(url: str, local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cached = Client(cache_dir=str(tmp_path / "cache"), remote_url=url)
    name = cached.put_file("/compat/cached@4000", local(b"cached content"), to_local_store=False)
    out = tmp_path / "c.out"
    assert cached.get_file(name, str(out)) == name
    assert out.read_bytes() == b"cached content"
    assert cached.get_file(name, str(out)).startswith("/compat/cached@4000")  # served from the cache


def test_invalid_names_are_refused_by_the_client(client: Client, local) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        client.put_file("/a/../b", local(b"x"))
