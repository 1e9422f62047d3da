"""Client.put_files: many files over a few kept-alive connections, one result per file."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from castore.client import Client
from castore.errors import FileNotAvailable, FiletrackerError
from castore.store import Store

from ..server_process import castore_server, castore_server_process, free_port


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("put-files") / "store"
    Store.open(root, create=True).close()
    with castore_server(root) as base:
        yield base


def _files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        f = folder / f"{i}.in"
        # text, random bytes and empty files: compressed, raw and nothing
        f.write_bytes(b"" if i % 7 == 0 else os.urandom(3000 + i) if i % 2 else b"%d 1\n" % i * (500 + i))
        made.append(f)
    return made


def test_mixed_good_and_bad_files_each_get_their_result(url: str, tmp_path: Path) -> None:
    client = Client(local_store=None, remote_url=url)
    good = _files(tmp_path / "good", 3)
    (tmp_path / "a-folder").mkdir()
    client.put_file("/mixed/newer@2000", str(good[0]))
    pairs: list[tuple[str, str | os.PathLike[str]]] = [
        ("/mixed/a@1000", good[0]),
        ("/mixed/missing@1000", tmp_path / "no-such-file"),
        ("/mixed/../escape@1000", good[1]),  # an invalid name
        ("/mixed/folder@1000", tmp_path / "a-folder"),
        ("/mixed/newer@1000", good[1]),  # older than what is stored: kept, not an error
        ("/mixed/b", good[2]),  # no version: the batch's
    ]
    seen: list[str] = []
    results = client.put_files(pairs, jobs=4, on_result=lambda r: seen.append(r.name))
    assert [r.name for r in results] == [name for name, _ in pairs]
    assert sorted(seen) == sorted(name for name, _ in pairs)  # each result, as it came
    assert [r.ok for r in results] == [True, False, False, False, True, True]
    assert results[0].stored == "/mixed/a@1000" and not results[0].kept_newer
    assert isinstance(results[1].error, FiletrackerError) and "no such local file" in str(results[1].error)
    assert isinstance(results[2].error, ValueError)
    assert isinstance(results[3].error, FiletrackerError)
    assert results[4].stored == "/mixed/newer@2000" and results[4].kept_newer
    assert results[5].stored is not None and results[5].stored == results[5].wanted
    for result, (_, source) in zip(results, pairs):
        if result.ok and not result.kept_newer:
            stream, _ = client.get_stream(result.stored or "")
            assert stream.read() == Path(source).read_bytes()
    with pytest.raises(FileNotAvailable):
        client.get_stream("/mixed/missing")
    with pytest.raises(ValueError):
        client.put_files([], jobs=0)


def test_many_jobs_give_the_results_of_one(url: str, tmp_path: Path) -> None:
    client = Client(local_store=None, remote_url=url)
    files = _files(tmp_path / "pkg", 40)
    one = client.put_files([(f"/jobs1/{f.name}@1500", f) for f in files], jobs=1)
    many = client.put_files([(f"/jobs8/{f.name}@1500", f) for f in files], jobs=8)
    assert [(r.ok, r.stored and r.stored.replace("/jobs1/", "/")) for r in one] == \
        [(r.ok, r.stored and r.stored.replace("/jobs8/", "/")) for r in many]
    assert all(r.ok for r in many)
    for f in files:
        assert client.get_stream(f"/jobs8/{f.name}")[0].read() == f.read_bytes()
    assert sorted(client.list_remote_files(subpath="/jobs8")) == sorted(f.name for f in files)


def test_put_files_also_fills_the_cache(url: str, tmp_path: Path) -> None:
    client = Client(cache_dir=tmp_path / "cache", remote_url=url)
    files = _files(tmp_path / "cached", 5)
    results = client.put_files([(f"/cached/{f.name}@7", f) for f in files], jobs=3)
    assert all(r.ok for r in results)
    assert sorted(e.name for e in client.list_local_files()) == sorted(f"/cached/{f.name}@7" for f in files)


def test_a_server_that_dies_mid_batch(tmp_path: Path) -> None:
    """Files after the death get one clear error each; the file cut mid-body is not recorded."""
    root = tmp_path / "store"
    Store.open(root, create=True).close()
    small = _files(tmp_path / "small", 6)
    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(6 << 20))  # streamed in 1 MiB reads, raw
    port = free_port()
    with castore_server_process(root, "--workers", "1", port=port) as (base, process):
        client = Client(local_store=None, remote_url=base)

        def kill_once_the_large_file_starts(n: int) -> None:
            # the small files before it go in one batch (read whole); the large one streams in 1 MiB reads
            if n >= 1 << 20 and process.poll() is None and large_started:
                process.send_signal(signal.SIGKILL)
                process.wait()

        large_started = False

        def pairs() -> Iterator[tuple[str, Path]]:
            nonlocal large_started
            for f in small[:3]:
                yield f"/die/{f.name}@100", f
            large_started = True
            yield "/die/large@100", large
            for f in small[3:]:
                yield f"/die/{f.name}@100", f

        results = client.put_files(pairs(), jobs=1, progress=kill_once_the_large_file_starts)
        client.close()
    assert [r.ok for r in results] == [True] * 3 + [False] * 4
    for r in results[3:]:
        assert isinstance(r.error, FiletrackerError)
        message = str(r.error)
        assert "\n" not in message and r.name.split("@")[0] in message, message
    with castore_server(root, port=free_port()) as base:
        after = Client(local_store=None, remote_url=base)
        for f in small[:3]:
            assert after.get_stream(f"/die/{f.name}@100")[0].read() == f.read_bytes()
        for name in ["large", *(f.name for f in small[3:])]:
            with pytest.raises(FileNotAvailable):
                after.get_stream(f"/die/{name}")
