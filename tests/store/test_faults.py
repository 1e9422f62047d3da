"""Faults of the disk under a store: full, read-only, and gc racing a live upload.

The disk-full and read-only tests mount a small tmpfs (or a read-only bind mount) and so
need root; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from castore.errors import ReadOnlyStore, StoreFull
from castore.reserve import RESERVE_FILE
from castore.store import Store

from ..server_process import castore_server

V1000 = "Thu, 01 Jan 1970 00:16:40 -0000"


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount ({' '.join(args)}): {done.stderr.strip() or 'needs root'}")


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs: fills up in a second."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount("-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk))
    try:
        yield disk
    finally:
        _umount(disk)


def _fill(folder: Path, name: str) -> None:
    """Take every free byte of the filesystem holding ``folder``."""
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0


def _castore(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "castore", "--root", str(root), *args],
                          capture_output=True, text=True, check=False, timeout=60)


def _put(http: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return http.put(f"/files{path}", params={"last_modified": V1000}, content=body)


@pytest.mark.slow
def test_a_full_disk_answers_507_and_deletes_still_work(small_disk: Path) -> None:
    root = small_disk / "store"
    Store.open(root, create=True).close()
    assert (root / RESERVE_FILE).is_file()
    stored = {}
    with castore_server(root) as url, httpx.Client(base_url=url, timeout=30) as http:
        # blob files until ENOSPC
        for i in range(100):
            body = os.urandom(400_000)
            r = _put(http, f"/big/{i}", body)
            if r.status_code != 200:
                break
            stored[f"/big/{i}"] = body
        assert r.status_code == 507, (r.status_code, r.headers)
        assert r.headers["x-exception"].startswith("no space left on the store's disk"), r.headers["x-exception"]
        failed_big = f"/big/{i}"
        # then every last byte, and small (inline, SQLite-only) puts until SQLITE_FULL (each full log is
        # copied back and truncated first, PutSteps._make_room: how many fit varies with its size)
        _fill(small_disk, "filler")
        for j in range(5000):
            r = _put(http, f"/small/{j}", os.urandom(2000))
            if r.status_code != 200:
                break
            stored[f"/small/{j}"] = r.request.content
        assert r.status_code == 507, (r.status_code, r.headers)
        assert "no space left" in r.headers["x-exception"] and "\n" not in r.headers["x-exception"]
        failed_small = f"/small/{j}"
        # nothing half-written is visible
        for path in (failed_big, failed_small):
            assert http.head(f"/files{path}").status_code == 404
        assert sorted(http.get("/list/").text.split()) == sorted(p[1:] for p in stored)
        assert list((root / "blobs" / ".staging").iterdir()) == []
        # delete works at 100 %, over HTTP and with the CLI (a second process opening the store)
        assert http.delete("/files/big/0", params={"last_modified": V1000}).status_code == 200
        done = _castore(root, "rm", "/big/1")
        assert done.returncode == 0, done.stderr
        done = _castore(root, "gc")
        assert done.returncode == 0, done.stderr
        for path in ("/big/0", "/big/1"):
            assert http.head(f"/files{path}").status_code == 404
            del stored[path]
        # the store works again once space is freed
        os.unlink(small_disk / "filler")
        r = _put(http, failed_big, b"after the disk was freed" * 1000)
        assert r.status_code == 200, r.headers
        for path, body in list(stored.items())[:5] + list(stored.items())[-3:]:
            assert http.get(f"/files{path}").content == body
    assert _castore(root, "check").returncode == 0


@pytest.mark.slow
def test_a_full_disk_can_be_opened_and_emptied_after_a_restart(small_disk: Path) -> None:
    root = small_disk / "store"
    with Store.open(root, create=True) as store:
        for i in range(5):
            store.put(f"/f/{i}", os.urandom(300_000), 1000)
        store.put("/inline", b"x" * 100, 1000)
    _fill(small_disk, "filler")  # the reserve is still there; SQLite has no -shm file now
    done = _castore(root, "put", "-", "/another")
    assert done.returncode != 0 and "no space left on the store's disk" in done.stderr, done.stderr
    done = _castore(root, "rm", "/f/0")
    assert done.returncode == 0, done.stderr
    done = _castore(root, "gc")
    assert done.returncode == 0, done.stderr
    with Store.open(root) as store:
        assert [i.path for i in store.list("/")] == ["/f/1", "/f/2", "/f/3", "/f/4", "/inline"]
        with pytest.raises(StoreFull):
            store.put("/too-much", os.urandom(600_000), 1000)
        os.unlink(small_disk / "filler")
        store.put("/fine", os.urandom(600_000), 1000)
    assert _castore(root, "check").returncode == 0


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """A store with two files, seen through a read-only bind mount."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    source = tmp_path / "source"
    with Store.open(source / "store", create=True) as store:
        store.put("/a/small", b"small", 1000)
        store.put("/a/large", bytes(range(256)) * 2000, 1000)
    view = tmp_path / "view"
    view.mkdir()
    _mount("--bind", str(source), str(view))
    try:
        _mount("-o", "remount,bind,ro", str(view))
        yield view / "store"
    finally:
        _umount(view)


def _reads_work(http: httpx.Client) -> None:
    assert http.get("/files/a/small").content == b"small"
    assert http.get("/files/a/large").content == bytes(range(256)) * 2000
    assert http.get("/files/a/large", headers={"Range": "bytes=10-19"}).content == bytes(range(10, 20))
    assert http.head("/files/a/small").status_code == 200
    assert http.get("/list/a").text.split() == ["large", "small"]
    assert http.get("/health").status_code == 200


def _writes_refused(http: httpx.Client) -> None:
    for r in (_put(http, "/a/new", b"new"), http.delete("/files/a/small", params={"last_modified": V1000})):
        assert r.status_code == 403, r.headers
        assert "read-only" in r.headers["x-exception"]


@pytest.mark.slow
def test_a_store_on_a_read_only_filesystem_is_served_for_reading(read_only_store: Path) -> None:
    with castore_server(read_only_store) as url, httpx.Client(base_url=url, timeout=10) as http:
        _reads_work(http)
        _writes_refused(http)
        _reads_work(http)
    done = _castore(read_only_store, "ls", "/a")
    assert done.returncode == 0 and "/a/large" in done.stdout, done.stderr
    assert _castore(read_only_store, "cat", "/a/small").stdout == "small"
    done = _castore(read_only_store, "rm", "/a/small")
    assert done.returncode != 0 and "read-only" in done.stderr, done.stderr
    with Store.open(read_only_store) as store, pytest.raises(ReadOnlyStore):
        store.collect_garbage()


def _files(root: Path) -> list[tuple[str, int, int]]:
    """Every file of a store with its size and modification time, but SQLite's -wal and -shm
    (a read-only connection makes them to read alongside writers)."""
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
                  if p.is_file() and not p.name.endswith(("-wal", "-shm")))


def test_serve_read_only_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        store.put("/a/small", b"small", 1000)
        store.put("/a/large", bytes(range(256)) * 2000, 1000)
    before = _files(root)
    with castore_server(root, "--read-only") as url, httpx.Client(base_url=url, timeout=10) as http:
        _reads_work(http)
        _writes_refused(http)
        with Store.open(root) as writer:  # another process may still write: the server sees it
            writer.put("/a/new", b"seen", 1000)
            assert http.get("/files/a/new").content == b"seen"
            writer.delete("/a/new")
            before = _files(root)
    assert _files(root) == before


class _HeldSource:
    """A binary stream that stops in the middle until released (an upload still arriving)."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self._parts = [first, rest]
        self.waiting = threading.Event()
        self.release = threading.Event()

    def read(self, size: int = -1) -> bytes:
        if len(self._parts) == 1:
            self.waiting.set()
            assert self.release.wait(60)
        return self._parts.pop(0) if self._parts else b""

    def seekable(self) -> bool:
        return False


def test_gc_with_no_grace_keeps_a_live_upload(tmp_path: Path) -> None:
    root = tmp_path / "store"
    first, rest = os.urandom(3 << 20), os.urandom(2 << 20)
    source = _HeldSource(first, rest)
    result: dict[str, Any] = {}
    with Store.open(root, create=True) as store:
        writer = threading.Thread(target=lambda: result.update(name=store.put("/live", source, 1000)))
        writer.start()
        assert source.waiting.wait(30)
        staging = list((root / "blobs" / ".staging").iterdir())
        assert len(staging) == 1  # the live upload's file
        done = _castore(root, "gc", "--staging-grace", "0")
        assert done.returncode == 0, done.stderr
        assert "0 staging files" in done.stdout
        assert list((root / "blobs" / ".staging").iterdir()) == staging
        source.release.set()
        writer.join(60)
        assert result["name"] == "/live@1000"
        assert store.read_bytes("/live") == first + rest
        # a staging file no one holds (a crashed writer's) still goes
        (root / "blobs" / ".staging" / "tmp-crashed").write_bytes(b"left behind")
        assert store.collect_garbage(staging_grace=0).staging_files == 1


def test_gc_looping_with_no_grace_during_http_uploads(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root, create=True).close()
    bodies = [os.urandom(12 << 20) for _ in range(3)]
    stop = threading.Event()
    swept: list[int] = []

    def collect() -> None:
        with Store.open(root) as store:
            while not stop.is_set():
                swept.append(store.collect_garbage(staging_grace=0).staging_files)

    with castore_server(root) as url, httpx.Client(base_url=url, timeout=60) as http:
        collector = threading.Thread(target=collect)
        collector.start()
        try:
            for i, body in enumerate(bodies):
                assert _put(http, f"/up/{i}", body).status_code == 200
        finally:
            stop.set()
            collector.join(60)
        for i, body in enumerate(bodies):
            assert http.get(f"/files/up/{i}").content == body
    # gc ran throughout; a file it took between a writer's mkstemp and its lock is one the
    # writer never wrote into (it sees its name gone and makes another), so every upload
    # above succeeded whole: without the staging locks they fail mid-write.
    assert len(swept) > 1


@pytest.mark.parametrize("room", [0, 32 * 1024])
@pytest.mark.parametrize("command", [["init"], ["serve", "--init", "--port", "1"]])
def test_a_store_that_cannot_be_made_on_a_full_disk_leaves_no_database(small_disk: Path, room: int,
                                                                        command: list[str]) -> None:
    # the database is made whole or not at all (castore.creating): a full disk must not leave a partial
    # or empty metadata.sqlite3 behind, made by a second attempt that writes in place (the next open
    # would take it for a store); ``room``: bytes left free, less than a new database takes
    _fill(small_disk, "filler")
    filler = small_disk / "filler"
    os.truncate(filler, filler.stat().st_size - room)
    root = small_disk / "store"
    done = _castore(root, *command)
    assert done.returncode != 0
    assert "no space left on the store's disk" in done.stderr, done.stderr
    assert not (root / "metadata.sqlite3").exists(), (root / "metadata.sqlite3").stat()
    os.unlink(filler)
    done = _castore(root, "init", "--retention", "3")
    assert done.returncode == 0, done.stderr
    assert _castore(root, "check").returncode == 0
