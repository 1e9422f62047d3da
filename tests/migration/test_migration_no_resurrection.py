"""No resurrection while moving in: the edges the other migration tests leave open.

The old server here is a castore server (it speaks Filetracker's protocol), so these run
without a Filetracker install; tests/compat/test_filetracker_import.py does the rest
against a real Filetracker 2.3.3.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from castore.errors import FiletrackerError, NotFound
from castore.migration import FolderV2, Importer, ServerSource
from castore.migration.importer import Outcome
from castore.migration.live import FETCH_LOCKS_VARIABLE, LiveMigration, _Guard, share_fetch_locks
from castore.protocol import format_version
from castore.store import Store
from tests.server_process import castore_server, free_port

from .test_migration_sources import _ft_put

OLD_VERSION = 1_600_000_000


@pytest.fixture(scope="module")
def old_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server holding ``/exact``, ``/raced`` and ``/later`` at OLD_VERSION."""
    with castore_server(tmp_path_factory.mktemp("old")) as url:
        for path in ("/exact", "/raced", "/later"):
            response = httpx.put(url + "/files" + path, content=b"old " + path.encode(),
                                 params={"last_modified": format_version(OLD_VERSION)})
            assert response.status_code == 200, response.text
        yield url


@pytest.fixture
def migration(old_server: str, tmp_path: Path) -> Iterator[LiveMigration]:
    with Store.open(tmp_path / "new", create=True) as store:
        live = LiveMigration(store, old_server)
        try:
            yield live
        finally:
            live.close()


def test_a_path_deleted_at_exactly_the_old_version_is_not_fetched_back(migration: LiveMigration) -> None:
    """DELETE with the old server's own version covers that version (``<=``, not ``<``)."""
    assert anyio.run(migration.delete, "/exact", OLD_VERSION) is True
    assert migration._fetch("/exact", _Guard()) is False
    assert not migration.store.exists("/exact")
    assert (migration.not_resurrected, migration.fetched) == (1, 0)
    assert migration.store.usage().unreferenced_blobs == 0  # skipped before the put, not stored and undone


def test_a_later_path_is_still_fetched(migration: LiveMigration) -> None:
    """The other side of the edge: a deletion at an older version does not hide a newer file."""
    migration.store.metadata.remember_deletion("/later", OLD_VERSION - 1)
    assert migration._fetch("/later", _Guard()) is True
    assert migration.store.read_bytes("/later") == b"old /later"
    assert (migration.not_resurrected, migration.fetched) == (0, 1)


def test_a_delete_landing_during_the_fetchs_put_leaves_the_path_deleted(
    migration: LiveMigration, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DELETE arrives after the fetch checked for deletions, before its put is stored.

    The delete finds nothing in castore yet (the put is not committed), so only the
    fetch's undo after its put can keep the path deleted.
    """
    store = migration.store
    real_put = store.put
    deletes: list[bool] = []

    def put_racing_a_delete(path: str, data: Any, version: int | None = None, **options: Any) -> str:
        deletes.append(anyio.run(migration.delete, path, None))  # now: a version later than the old one
        return real_put(path, data, version, **options)

    monkeypatch.setattr(store, "put", put_racing_a_delete)
    assert migration._fetch("/raced", _Guard()) is False
    assert deletes == [True]
    assert not store.exists("/raced")
    assert (migration.not_resurrected, migration.fetched) == (1, 0)


def test_the_importer_does_not_bring_back_a_path_deleted_at_its_version_during_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deletion remembered after the run began, at exactly the source's version, is caught after the put."""
    root = tmp_path / "ft"
    (root / "links").mkdir(parents=True)
    _ft_put(root, "/gone", b"gone", 500)
    with Store.open(tmp_path / "new", create=True) as store:
        real_put = store.put

        def put_then_deleted(path: str, data: Any, version: int | None = None, **options: Any) -> str:
            store.metadata.remember_deletion(path, 500)  # the live server's DELETE, meanwhile
            return real_put(path, data, version, **options)

        monkeypatch.setattr(store, "put", put_then_deleted)
        report = Importer(store, FolderV2(root), jobs=1).run()
        assert report.deleted_in_castore == 1 and report.imported == 0
        assert not store.exists("/gone")


# -- DELETE of a path castore does not have yet: the old server decides ---------------------

def test_deleting_a_path_neither_side_has_is_not_found_and_remembers_nothing(migration: LiveMigration) -> None:
    """The failed DELETE takes back the deletion it remembered first."""
    with pytest.raises(NotFound, match="/nowhere"):
        anyio.run(migration.delete, "/nowhere", None)
    assert migration.store.metadata.deletion("/nowhere") is None


def test_a_failed_delete_puts_back_the_deletion_remembered_before(migration: LiveMigration) -> None:
    """An earlier deletion of the path stays as it was, not dropped nor raised to the failed one's version."""
    migration.store.metadata.remember_deletion("/nowhere", OLD_VERSION)
    with pytest.raises(NotFound):
        anyio.run(migration.delete, "/nowhere", OLD_VERSION + 10)
    assert migration.store.metadata.deletion("/nowhere") == OLD_VERSION


def test_deleting_an_older_version_than_the_old_servers_deletes_nothing(migration: LiveMigration) -> None:
    """The old server's file is newer: False, and the deletion remembered before is put back as it was."""
    migration.store.metadata.remember_deletion("/later", OLD_VERSION - 5)
    assert anyio.run(migration.delete, "/later", OLD_VERSION - 1) is False
    assert migration.store.metadata.deletion("/later") == OLD_VERSION - 5
    assert migration._fetch("/later", _Guard()) is True  # the deletion is older than the old server's file
    assert migration.store.read_bytes("/later") == b"old /later"


def test_deleting_a_path_only_the_old_server_has_keeps_it_out(migration: LiveMigration) -> None:
    """The deletion is remembered at the DELETE's version; a miss answers False without fetching."""
    assert anyio.run(migration.delete, "/exact", None) is True
    assert migration.store.metadata.deletion("/exact") is not None
    assert migration.store.metadata.deletion("/exact") >= OLD_VERSION  # type: ignore[operator]
    assert anyio.run(migration.fetch, "/exact") is False
    assert not migration.store.exists("/exact")
    assert (migration.not_resurrected, migration.fetched, migration.missing) == (1, 0, 0)


def test_deleting_a_path_castore_has_deletes_it_there_and_remembers_it(migration: LiveMigration) -> None:
    """Castore's own copy goes; the old server's older copy is not brought back by a miss."""
    migration.store.put("/later", b"new", OLD_VERSION + 5)
    assert anyio.run(migration.delete, "/later", OLD_VERSION + 5) is True
    assert migration.store.metadata.deletion("/later") == OLD_VERSION + 5
    assert not migration.store.exists("/later")
    assert anyio.run(migration.fetch, "/later") is False
    assert not migration.store.exists("/later")


def test_a_miss_the_old_server_lacks_is_counted_missing(migration: LiveMigration) -> None:
    assert anyio.run(migration.fetch, "/nowhere") is False
    assert (migration.missing, migration.fetched, migration.not_resurrected) == (1, 0, 0)


def test_a_fetch_counts_the_files_and_their_bytes(migration: LiveMigration) -> None:
    assert anyio.run(migration.fetch, "/exact") is True
    assert anyio.run(migration.fetch, "/exact") is True  # castore has it now: not fetched again
    assert (migration.fetched, migration.fetched_bytes) == (1, len(b"old /exact"))
    assert anyio.run(migration.fetch, "/later") is True
    assert (migration.fetched, migration.fetched_bytes) == (2, len(b"old /exact") + len(b"old /later"))


def test_deleting_an_older_version_than_castores_keeps_castores_file(migration: LiveMigration) -> None:
    """The DELETE's version goes to castore's delete: an older one leaves the newer file in place."""
    migration.store.put("/later", b"new", OLD_VERSION + 5)
    assert anyio.run(migration.delete, "/later", OLD_VERSION + 1) is False
    assert migration.store.read_bytes("/later") == b"new"


def test_a_delete_the_old_server_cannot_answer_puts_the_deletion_back(tmp_path: Path) -> None:
    """The old server is down: the error names the path, and the deletion remembered before stands as it was."""
    with Store.open(tmp_path / "new", create=True) as store:
        live = LiveMigration(store, f"http://127.0.0.1:{free_port()}")
        try:
            store.metadata.remember_deletion("/x", OLD_VERSION)
            with pytest.raises(FiletrackerError, match="failed for /x: "):
                anyio.run(live.delete, "/x", OLD_VERSION + 10)
            assert store.metadata.deletion("/x") == OLD_VERSION
        finally:
            live.close()


def test_a_delete_cancelled_while_asking_the_old_server_puts_the_deletion_back(tmp_path: Path) -> None:
    """The request is cancelled (its client hung up) while the old server has not answered:
    the put-back runs shielded from that cancellation."""
    with socket.socket() as listener, Store.open(tmp_path / "new", create=True) as store:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        live = LiveMigration(store, f"http://127.0.0.1:{listener.getsockname()[1]}")
        store.metadata.remember_deletion("/x", OLD_VERSION)
        asked: list[socket.socket] = []

        async def delete_then_hang_up() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(live.delete, "/x", OLD_VERSION + 10)
                connection, _ = await anyio.to_thread.run_sync(listener.accept)  # the old server is asked
                asked.append(connection)
                tg.cancel_scope.cancel()

        try:
            anyio.run(delete_then_hang_up)
            assert store.metadata.deletion("/x") == OLD_VERSION
        finally:
            live.close()
            for connection in asked:
                connection.close()


def test_an_import_from_a_server_learns_each_version_and_verifies_it(old_server: str, tmp_path: Path) -> None:
    """A server's listing has no versions: each item is stamped with the one its download (or,
    on a re-run, its HEAD) told, so a deletion at that version holds and verify re-reads that version."""
    with Store.open(tmp_path / "new", create=True) as store:
        store.metadata.remember_deletion("/exact", OLD_VERSION)
        source = ServerSource(old_server)
        try:
            importer = Importer(store, source, jobs=1)
            first = importer.run()
            assert (first.imported, first.deleted_in_castore, first.problems) == (2, 1, [])
            again = Importer(store, source, jobs=1)
            second = again.run()
            assert (second.imported, second.already, second.deleted_in_castore, second.problems) == (0, 2, 1, [])
            for run in (importer, again):
                seen: list[tuple[Outcome, int]] = []
                assert run.verify(lambda outcome, size, seen=seen: seen.append((outcome, size))) == []
                assert sorted(seen) == [(Outcome.ALREADY, len(b"old /later")), (Outcome.ALREADY, len(b"old /raced"))]
                assert sorted(item.version for item in run.done) == [OLD_VERSION, OLD_VERSION]
        finally:
            source.close()
        assert not store.exists("/exact")


def test_a_merged_list_keeps_both_sides_within_the_cutoff_less_the_deleted(migration: LiveMigration) -> None:
    """Castore's and the old server's names up to the cutoff, without paths deleted in castore;
    a folder neither side has is NotFound."""
    store = migration.store
    store.put("/mine", b"mine", OLD_VERSION - 10)
    store.put("/late", b"late", OLD_VERSION + 10)
    store.metadata.remember_deletion("/later", OLD_VERSION)
    assert anyio.run(migration.list_folder, "/", OLD_VERSION + 5) == ["exact", "mine", "raced"]
    assert anyio.run(migration.list_folder, "/", OLD_VERSION - 5) == ["mine"]
    with pytest.raises(NotFound) as raised:
        anyio.run(migration.list_folder, "/nowhere/", OLD_VERSION)
    assert (raised.value.path, str(raised.value)) == ("/nowhere/", "not a folder: /nowhere/")


def test_verify_leaves_a_path_the_old_server_changed_since_the_import(tmp_path: Path) -> None:
    """The source's version moved on after the import: NEWER, not a difference."""
    with castore_server(tmp_path / "old") as url, Store.open(tmp_path / "new", create=True) as store:
        for path, version in (("/moves", OLD_VERSION), ("/stays", OLD_VERSION)):
            httpx.put(url + "/files" + path, content=b"v1", params={"last_modified": format_version(version)})
        source = ServerSource(url)
        try:
            importer = Importer(store, source, jobs=1)
            assert importer.run().imported == 2
            httpx.put(url + "/files/moves", content=b"v2", params={"last_modified": format_version(OLD_VERSION + 5)})
            seen: list[tuple[Outcome, int]] = []
            assert importer.verify(lambda outcome, size: seen.append((outcome, size))) == []
            assert sorted(seen, key=repr) == sorted([(Outcome.NEWER, 0), (Outcome.ALREADY, 2)], key=repr)
        finally:
            source.close()


def test_the_workers_share_one_unlinked_lock_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """share_fetch_locks (before the workers fork) leaves its descriptor in the environment, once;
    a migration made afterwards locks through it."""
    monkeypatch.delenv(FETCH_LOCKS_VARIABLE, raising=False)
    share_fetch_locks()
    value = os.environ[FETCH_LOCKS_VARIABLE]
    fd = int(value)
    try:
        info = os.fstat(fd)
        assert stat.S_ISREG(info.st_mode) and info.st_nlink == 0  # nothing left behind in the folder
        share_fetch_locks()
        assert os.environ[FETCH_LOCKS_VARIABLE] == value  # inherited: not made again
        with Store.open(tmp_path / "new", create=True) as store:
            live = LiveMigration(store, f"http://127.0.0.1:{free_port()}")
            try:
                assert live._across_workers == fd
                with pytest.raises(FiletrackerError, match="failed for /x: "):  # locked by its path, then asked
                    anyio.run(live.fetch, "/x")
            finally:
                live.close()
    finally:
        os.close(fd)


def test_a_call_given_up_before_its_socket_is_watched_shuts_it_at_once() -> None:
    """A socket the call opens after it was given up is shut down as it is watched."""
    a, b = socket.socketpair()
    with a, b:
        guard = _Guard()
        guard.abort()
        guard.watch(a)
        a.setblocking(False)
        assert a.recv(1) == b""  # shut: end of input at once, not "would block"


def test_the_migration_metrics_name_help_and_count_each_counter(migration: LiveMigration) -> None:
    names = ["fetched", "fetched_bytes", "missing", "not_resurrected", "future_versions", "bad_names", "busy", "gave_up"]
    for value, name in enumerate(names, start=11):
        setattr(migration, name, value)
    helps = {
        "fetched": "Paths fetched from the old server on a miss.",
        "fetched_bytes": "Logical bytes fetched on a miss.",
        "missing": "Misses the old server did not have.",
        "not_resurrected": "Misses deleted in castore, not brought back.",
        "future_versions": "Misses refused: the old server's version was beyond now + 1 day.",
        "bad_names": "Names in the old server's listings that castore's name rules refuse (left out).",
        "busy": "Calls to the old server refused with 503 (too many waiting).",
        "gave_up": "Calls to the old server given up (deadline, or the client hung up).",
    }
    expected = "".join(
        f"# HELP castore_migration_{name}_total {helps[name]}\n# TYPE castore_migration_{name}_total counter\n"
        f"castore_migration_{name}_total {value}\n" for value, name in enumerate(names, start=11))
    assert migration.render_metrics() == expected


def test_only_the_inherited_unlinked_lock_file_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable, or a descriptor of a file that still has a name: no shared lock (each worker
    then fetches on its own) rather than locking a file someone else may use."""
    from castore.migration.live import _fetch_lock_fd

    monkeypatch.delenv(FETCH_LOCKS_VARIABLE, raising=False)
    assert _fetch_lock_fd() is None
    named = tmp_path / "named"
    named.write_bytes(b"")
    fd = os.open(named, os.O_RDWR)
    try:
        monkeypatch.setenv(FETCH_LOCKS_VARIABLE, str(fd))
        assert _fetch_lock_fd() is None
        os.unlink(named)
        assert _fetch_lock_fd() == fd  # unlinked: the lock file the workers share
    finally:
        os.close(fd)
