"""The importer writes the links of contents already stored many paths per transaction (#22).

A re-uploaded package is mostly paths naming contents castore holds already: each such
path is a link, and a link per transaction made the import queue on SQLite's write lock
(~300 paths/s). The rules of a one-by-one import hold inside a batch: an older version
never overwrites a newer one, a path deleted in castore is not brought back, one bad path
is one problem, and a kill leaves every batch whole or absent.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from castore.migration import FolderV2, Importer
from castore.migration.importer import LINK_BATCH
from castore.store import Store
from tests.migration.test_migration_sources import _ft_put


def _shared_folder(root: Path, count: int, *, contents: int = 3, version: int = 1000) -> None:
    """``count`` links under ``/p/`` naming ``contents`` blobs in turn (the first of each is a put)."""
    (root / "links").mkdir(parents=True, exist_ok=True)
    firsts = [_ft_put(root, f"/p/{k:05d}", b"content %d" % k * 100, version) for k in range(contents)]
    for n in range(contents, count):
        link = root / f"links/p/{n:05d}"
        os.symlink(os.readlink(firsts[n % contents]), link)
        os.utime(link, (version, version), follow_symlinks=False)


def _commits(store: Store) -> list[int]:
    counted = [0]

    def count(*_: object) -> None:
        counted[0] += 1

    event.listen(store.metadata._writer, "commit", count)
    return counted


def test_links_are_written_many_paths_per_transaction(tmp_path: Path, store: Store) -> None:
    """600 paths of 3 contents: 3 puts and 597 links; the links take a few commits, not 597."""
    _shared_folder(tmp_path / "ft", 600)
    commits = _commits(store)
    report = Importer(store, FolderV2(tmp_path / "ft"), jobs=1).run()  # with more, two may put one content
    assert (report.imported, report.linked, report.problems) == (600, 597, [])
    if store.metadata.where.startswith("sqlite"):
        assert commits[0] < 600 // LINK_BATCH + 60, commits[0]
    assert all(store.read_bytes(f"/p/{n:05d}@1000") == b"content %d" % (n % 3) * 100 for n in range(600))
    assert store.check() == []


def test_a_batch_keeps_newer_versions_deletions_and_reports_a_path_in_the_way(tmp_path: Path, store: Store) -> None:
    """Within batches: castore's newer version stays, a deleted path stays deleted, a name that is a
    folder in castore is one problem, castore's same version is already there; the rest is linked."""
    _shared_folder(tmp_path / "ft", 300, contents=1)
    store.put("/p/00010", b"castore's", 2000)
    store.put("/p/00011", b"old", 10)
    store.put("/p/00012/below", b"a file below", 10)
    store.put("/p/00013", b"content 0" * 100, 1000)
    store.metadata.remember_deletion("/p/00014", 1000)
    report = Importer(store, FolderV2(tmp_path / "ft"), jobs=1).run()
    assert (report.imported, report.newer_in_castore, report.deleted_in_castore, report.already) == (296, 1, 1, 1)
    assert [p.where.rsplit("/", 1)[-1] for p in report.problems] == ["00012"]
    assert store.read_bytes("/p/00010") == b"castore's"
    assert [info.version for info in store.versions("/p/00011")] == [1000, 10]
    assert not store.exists("/p/00014") and store.read_bytes("/p/00012/below") == b"a file below"
    assert store.check() == []


def test_a_deletion_remembered_while_a_batch_is_written_is_applied_after_it(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live server's DELETE landing during the run: the linked path is deleted again right after."""
    _shared_folder(tmp_path / "ft", 300, contents=1)
    importer = Importer(store, FolderV2(tmp_path / "ft"), jobs=1)
    link_new = store.link_new

    def delete_meanwhile(links: Any) -> list[bool]:
        linked = link_new(links)
        if any(path == "/p/00200" for path, _, _ in links):  # while the batch holding it is written
            store.metadata.remember_deletion("/p/00200", 1000)
        return linked

    monkeypatch.setattr(store, "link_new", delete_meanwhile)
    report = importer.run()
    assert (report.imported, report.deleted_in_castore, report.problems) == (299, 1, [])
    assert not store.exists("/p/00200")


def _paths(root: Path) -> int:
    with sqlite3.connect(root / "metadata.sqlite3", timeout=30) as db:
        return int(db.execute("SELECT count(*) FROM paths").fetchone()[0])


def test_a_kill_9_leaves_whole_batches_and_a_rerun_finishes(tmp_path: Path) -> None:
    """Killed while writing links: every path stored is whole (check is clean), and a re-run
    imports exactly what is left."""
    count = 6 * LINK_BATCH
    _shared_folder(tmp_path / "ft", count, contents=2)
    root = tmp_path / "castore"
    Store.open(root, create=True).close()
    process = subprocess.Popen(
        [sys.executable, "-m", "castore", "--root", str(root), "import-filetracker", str(tmp_path / "ft")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    while process.poll() is None and _paths(root) < 3:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _paths(root)
    with Store.open(root) as store:
        assert store.check() == []
        report = Importer(store, FolderV2(tmp_path / "ft")).run()
        assert (report.already, report.imported, report.problems) == (before, count - before, [])
        digest = {k: hashlib.sha256(b"content %d" % k * 100).digest() for k in range(2)}
        assert all(hashlib.sha256(store.read_bytes(f"/p/{n:05d}")).digest() == digest[n % 2] for n in range(count))
        assert store.check() == []


def test_link_new_links_only_new_paths_to_live_blobs(store: Store) -> None:
    """Stored already, in the way of a file, or a blob gone: left (False), its reference given back."""
    store.put("/a", b"x" * 300, 5)
    store.put("/b/c", b"y" * 300, 5)
    store.put("/gone", b"z" * 300, 5)
    key, gone = store.stat("/a").key, store.stat("/gone").key
    store.delete("/gone")
    store.collect_garbage()
    linked = store.link_new([("/n1", 7, key), ("/a", 9, key), ("/b", 7, key), ("/a/below", 7, key), ("/n2", 7, gone)])
    assert linked == [True, False, False, False, False]
    assert store.read_bytes("/n1@7") == b"x" * 300 and store.metadata.refcount(key) == 2
    assert not store.exists("/n2") and store.stat("/a").version == 5
    assert store.check() == []


def test_link_new_checks_the_new_paths_against_each_other(store: Store) -> None:
    """Inserted together at the end: a path below one added before, a folder of one, a repeat are left."""
    store.put("/a", b"x" * 300, 5)
    key = store.stat("/a").key
    rows = [("/m", 7, key), ("/m/x", 7, key), ("/q/r", 7, key), ("/q", 7, key), ("/m", 8, key), ("/s", 7, key)]
    assert store.link_new(rows) == [True, False, True, False, False, True]
    assert [store.stat(p).version for p in ("/m", "/q/r", "/s")] == [7, 7, 7]
    assert not store.exists("/m/x") and store.metadata.refcount(key) == 4
    assert store.check() == []


def test_a_batch_of_links_is_a_few_statements_on_postgresql(tmp_path: Path, store: Store) -> None:
    """PostgreSQL answers each statement in a round trip: a batch of links is written by a few
    statements for all its paths (it was five a path, and a look-up a content: ~500 paths/s)."""
    if not store.metadata.where.startswith("postgresql"):
        pytest.skip("SQLite's statements are local calls, not round trips")
    _shared_folder(tmp_path / "ft", 600, contents=3)
    statements = [0]

    def count(*_: object) -> None:
        statements[0] += 1

    engines = {id(e): e for e in (store.metadata._reader, store.metadata._writer)}.values()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    report = Importer(store, FolderV2(tmp_path / "ft"), jobs=1).run()
    assert (report.imported, report.linked, report.problems) == (600, 597, [])
    assert statements[0] < 150, statements[0]  # 3 puts of ~15, then ~10 for the batch of links
    assert store.check() == []


def test_link_new_leaves_a_blob_at_refcount_0_not_yet_collected(store: Store) -> None:
    """A blob whose last path was deleted may be half collected: a batch never links to it."""
    store.put("/z", b"z" * 300, 5)
    key = store.stat("/z").key
    store.delete("/z")
    assert store.metadata.refcount(key) == 0
    assert store.link_new([("/n", 7, key)]) == [False]
    assert not store.exists("/n") and store.metadata.refcount(key) == 0
    assert store.check() == []


@pytest.mark.backends("sqlite+file")
def test_an_import_writes_its_batches_with_room_for_their_pages(tmp_path: Path, store: Store) -> None:
    """The import's writer connections cache up to BULK_WRITE_CACHE_KIB (a batch of links dirties
    thousands of pages in a large store: in SQLite's default 2 MiB they spilled into the log
    mid-transaction), and the log is checkpointed in a thread, not inside the batches' commits."""
    from castore.metadata.sqlite import BULK_WRITE_CACHE_KIB

    sizes: list[int] = []

    def cache_size(connection: Any, *_: object) -> None:
        sizes.append(connection.connection.driver_connection.execute("PRAGMA cache_size").fetchone()[0])

    event.listen(store.metadata._writer, "commit", cache_size)
    with store.metadata.write():
        pass
    assert sizes == [-2000]  # SQLite's default, before the import
    _shared_folder(tmp_path / "ft", 300)
    report = Importer(store, FolderV2(tmp_path / "ft"), jobs=2).run()
    assert (report.imported, report.problems) == (300, [])
    assert set(sizes[1:]) == {-BULK_WRITE_CACHE_KIB}, sizes
    assert store.metadata._checkpointer is not None
    listeners = len(store.metadata._writer.pool.dispatch.connect)
    Importer(store, FolderV2(tmp_path / "ft"), jobs=1).run()  # again: nothing more is set up
    assert len(store.metadata._writer.pool.dispatch.connect) == listeners
    assert store.read_bytes("/p/00299") == b"content 2" * 100 and store.check() == []


def test_bulk_writes_change_nothing_on_a_read_only_store_or_postgresql(tmp_path: Path, store: Store) -> None:
    from castore.opening import open_store

    store.put("/a", b"a", version=1)
    store.metadata.prepare_for_bulk_writes()
    store.put("/b", b"b", version=1)  # writes go on
    assert store.read_bytes("/b") == b"b"
    if not store.metadata.where.startswith("sqlite"):
        assert store.metadata._checkpointer is None
        return
    root = Path(store.metadata.where.removeprefix("sqlite:///")).parent
    with open_store(root, read_only=True) as readonly:
        readonly.metadata.prepare_for_bulk_writes()
        assert readonly.metadata._checkpointer is None
        assert readonly.read_bytes("/a") == b"a"
