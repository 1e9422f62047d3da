"""An import of a Filetracker folder into a store whose disk fills up (#22 follow-up).

The store lies on a small tmpfs (``small_disk``, root only), the Filetracker folder
elsewhere. A full disk must end the import with one line saying so (exit 1, no
traceback), leave a store ``castore check`` finds whole (every path names a whole blob:
a put is one file, a batch of links one transaction), and a re-run once there is room
must import the rest. Two walls: the blob files (new contents), and SQLite's database
and log (contents stored already: only metadata grows).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from castore.errors import StoreFull
from castore.migration.importer import LINK_BATCH
from castore.store import Store
from tests.migration.test_migration_sources import _ft_put
from tests.server_process import castore_server
from tests.store.test_faults import _castore, _fill, _mount, _put, small_disk

__all__ = ["small_disk"]  # the fixture, used by name

FULL = "no space left on the store's disk"
VERSION = 1000


def _contents(count: int, size: int, seed: int) -> list[bytes]:
    """``count`` different contents of ``size`` random bytes (zstd cannot shrink them)."""
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(count)]


def _folder(root: Path, contents: list[bytes], paths: int) -> dict[str, bytes]:
    """A Filetracker 2.x folder of ``paths`` paths ``/p/NNNNN`` naming ``contents`` in turn (the
    first path of each is its blob's first link; links made before are kept, so a folder grows);
    returns every path with its content."""
    (root / "links").mkdir(parents=True, exist_ok=True)
    firsts = []
    for k, data in enumerate(contents):
        link = root / f"links/p/{k:05d}"
        firsts.append(link if link.is_symlink() else _ft_put(root, f"/p/{k:05d}", data, VERSION))
    for n in range(len(contents), paths):
        link = root / f"links/p/{n:05d}"
        if link.is_symlink():
            continue  # made by an earlier call
        os.symlink(os.readlink(firsts[n % len(contents)]), link)
        os.utime(link, (VERSION, VERSION), follow_symlinks=False)
    return {f"/p/{n:05d}": contents[n % len(contents)] for n in range(paths)}


def _import(root: Path, folder: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "castore", "--root", str(root), "import-filetracker", str(folder),
                           "--no-progress", *options], capture_output=True, text=True, check=False, timeout=300)


def _refused_as_full(done: subprocess.CompletedProcess[str]) -> int:
    """The import stopped with one line saying the store is full: exit 1, no traceback; how many
    versions the line says it stored."""
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"Error: {FULL}"), done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    stored = re.search(r"the import stopped after storing (\d+) versions", done.stderr)
    assert stored is not None, done.stderr
    return int(stored[1])


def _whole(root: Path, expected: dict[str, bytes]) -> set[str]:
    """Check the store after a failed import: check (with content) clean, no staged leftover, every
    path present holds its whole content; the paths present."""
    for verify in ((), ("--verify-content",)):
        done = _castore(root, "check", *verify)
        assert done.returncode == 0, (verify, done.stdout, done.stderr)
    assert list((root / "blobs" / ".staging").iterdir()) == []
    with Store.open(root, read_only=True) as store:
        present = {info.path for info in store.list("/p")}
        assert present <= set(expected)
        for path in present:
            assert store.read_bytes(path) == expected[path], path
    return present


def _everything_imported(root: Path, folder: Path, expected: dict[str, bytes]) -> None:
    done = _import(root, folder, "--verify")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    with Store.open(root, read_only=True) as store:
        assert {info.path for info in store.list("/p")} == set(expected)
        for path, data in expected.items():
            assert store.read_bytes(f"{path}@{VERSION}") == data, path
    assert _castore(root, "check", "--verify-content").returncode == 0


def _grow(disk: Path, size: str) -> None:
    _mount("-o", f"remount,size={size}", str(disk))


@pytest.mark.slow
def test_new_contents_filling_the_disk_stop_the_import_and_a_rerun_finishes(small_disk: Path, tmp_path: Path) -> None:
    """Blob files hit ENOSPC: one line, a whole store, then with room the rest."""
    root = small_disk / "store"
    Store.open(root, create=True).close()
    expected = _folder(tmp_path / "ft", _contents(40, 400_000, seed=1), paths=200)  # 16 MB on a 12 MiB disk
    stored = _refused_as_full(_import(root, tmp_path / "ft"))
    present = _whole(root, expected)
    assert 0 < len(present) == stored < len(expected)
    _grow(small_disk, "64m")
    _everything_imported(root, tmp_path / "ft", expected)


def _leave_free(disk: Path, room: int) -> None:
    """Take every free byte of ``disk`` but ``room`` (the store's reserve stays where it is)."""
    _fill(disk, "filler")
    filler = disk / "filler"
    os.truncate(filler, filler.stat().st_size - room)


def _store_with(root: Path, data: bytes) -> None:
    """A new store holding ``data`` (as ``/old``): the import's contents are stored already."""
    with Store.open(root, create=True) as store:
        store.put("/old", data, VERSION)


def _whole_batches(present: set[str], expected: dict[str, bytes]) -> None:
    """Of a one-content folder imported with ``--jobs 1``: the first path (a put), then every batch
    of :data:`LINK_BATCH` links, each all there or all absent."""
    paths = sorted(expected)
    batches = [paths[i:i + LINK_BATCH] for i in range(1, len(paths), LINK_BATCH)]
    for batch in batches:
        assert len(present.intersection(batch)) in (0, len(batch)), (batch[0], len(present.intersection(batch)))


@pytest.mark.slow
def test_links_filling_the_database_stop_the_import_in_whole_batches(small_disk: Path, tmp_path: Path) -> None:
    """Contents stored already: only SQLite's database and log grow, until SQLITE_FULL. The store
    keeps whole batches, a re-run without room stops alike (not eating the space kept for deletes),
    and a re-run with room finishes."""
    root = small_disk / "store"
    data = b"a test input stored before" * 200
    _store_with(root, data)
    expected = _folder(tmp_path / "ft", [data], paths=12_000)
    _leave_free(small_disk, 1 << 20)
    stored = _refused_as_full(_import(root, tmp_path / "ft", "--jobs", "1"))
    present = _whole(root, expected)
    assert 0 < len(present) == stored < len(expected)
    _whole_batches(present, expected)
    # no room made: stopped alike (a checkpoint of the log may have made room for a batch or two)
    stored = _refused_as_full(_import(root, tmp_path / "ft", "--jobs", "1"))
    again = _whole(root, expected)
    assert again >= present and len(again) - len(present) == stored < len(expected) - len(present)
    _whole_batches(again, expected)
    done = _castore(root, "rm", "/old")  # the reserve is still there for deletes
    assert done.returncode == 0, done.stderr
    os.unlink(small_disk / "filler")
    _everything_imported(root, tmp_path / "ft", expected)


@pytest.mark.slow
@pytest.mark.parametrize("stored", [False, True], ids=["new-contents", "contents-stored"])
def test_an_import_onto_a_full_disk_imports_nothing(small_disk: Path, tmp_path: Path, stored: bool) -> None:
    root = small_disk / "store"
    contents = _contents(3, 50_000, seed=2)
    _store_with(root, contents[0] if stored else b"unrelated")
    expected = _folder(tmp_path / "ft", contents, paths=3000)
    _fill(small_disk, "filler")
    assert _refused_as_full(_import(root, tmp_path / "ft")) == 0
    assert _whole(root, expected) == set()
    os.unlink(small_disk / "filler")
    _everything_imported(root, tmp_path / "ft", expected)


@pytest.mark.slow
def test_a_rerun_on_a_full_disk_links_nothing_into_the_space_kept_for_deletes(small_disk: Path,
                                                                              tmp_path: Path) -> None:
    """Opening a store at 100 % frees its reserve (so that deletes work); the paths a re-run finds
    imported make the rest links (Store.link_new, put_existing): those are puts too, refused."""
    root = small_disk / "store"
    data = b"a test input stored before" * 200
    _store_with(root, data)
    first = _folder(tmp_path / "ft", [data], paths=2000)
    assert _import(root, tmp_path / "ft").returncode == 0
    expected = _folder(tmp_path / "ft", [data], paths=4000)  # 2,000 more links to the same blob
    _fill(small_disk, "filler")
    assert _refused_as_full(_import(root, tmp_path / "ft")) == 0
    assert _whole(root, expected) == set(first)
    os.unlink(small_disk / "filler")
    _everything_imported(root, tmp_path / "ft", expected)


@pytest.mark.slow
def test_a_server_on_the_store_reads_during_the_import_and_answers_507_to_puts(small_disk: Path,
                                                                               tmp_path: Path) -> None:
    root = small_disk / "store"
    expected = _folder(tmp_path / "ft", _contents(40, 400_000, seed=3), paths=120)
    served = os.urandom(100_000)
    with castore_server(root) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert _put(http, "/served", served).status_code == 200
        importing = subprocess.Popen(
            [sys.executable, "-m", "castore", "--root", str(root), "import-filetracker", str(tmp_path / "ft"),
             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        reads = 0
        while importing.poll() is None:
            r = http.get("/files/served")
            assert (r.status_code, r.content == served) == (200, True), r.headers
            reads += 1
        stderr = importing.stderr.read() if importing.stderr else ""
        assert importing.returncode == 1 and stderr.startswith(f"Error: {FULL}"), stderr[-2000:]
        assert reads > 0
        for i in range(50):  # what the import gave back on its way out (its last blob, the log) fills up first
            r = _put(http, f"/more/{i}", os.urandom(400_000))
            if r.status_code != 200:
                break
        assert r.status_code == 507 and r.headers["x-exception"].startswith(FULL), (r.status_code, r.headers)
        assert http.get("/files/served").content == served
        listed = set(http.get("/list/p").text.split())
        assert 0 < len(listed) < len(expected)
        for name in sorted(listed)[:5]:
            assert http.get(f"/files/p/{name}").content == expected[f"/p/{name}"]
    _whole(root, expected)


@pytest.mark.slow
def test_a_link_on_a_full_database_is_store_full(small_disk: Path) -> None:
    """Store.put_existing (an import's link of one path) names SQLITE_FULL as puts do."""
    root = small_disk / "store"
    _store_with(root, b"a test input stored before" * 200)
    with Store.open(root) as store:
        key = store.stat("/old").key
        _leave_free(small_disk, 256 << 10)  # the reserve stays: puts are allowed until the database is full
        with pytest.raises(StoreFull):
            for n in range(100_000):
                store.put_existing(f"/linked/{n:06d}", key, VERSION)
        assert 0 < len(list(store.list("/linked"))) < 100_000
    os.unlink(small_disk / "filler")
    assert _castore(root, "check").returncode == 0


@pytest.mark.slow
def test_a_log_left_long_gives_its_room_back_before_a_write_is_refused(small_disk: Path) -> None:
    """The import's background checkpointer falling behind lets SQLite's log grow towards its 64 MiB
    backstop; on a nearly full disk a write first has the log copied back and truncated (it frees
    what the log held beyond the database's new pages), and is refused only if that gave nothing."""
    root = small_disk / "store"
    _store_with(root, b"a test input stored before" * 200)
    log = root / "metadata.sqlite3-wal"
    with Store.open(root) as store:
        key = store.stat("/old").key
        store.metadata.prepare_for_bulk_writes()
        assert store.metadata._checkpointer is not None
        store.metadata._checkpointer.close()  # behind for good: nothing copies the log back but the backstop
        n = 0
        while log.stat().st_size < 3 << 20:  # the same few pages, logged again by each transaction
            store.put_existing(f"/one/{n:06d}", key, VERSION)
            n += 1
        _leave_free(small_disk, 256 << 10)
        assert store.link_new([(f"/batch/{i:05d}", VERSION, key) for i in range(2000)]) == [True] * 2000
    assert _castore(root, "check").returncode == 0
