"""The whole-store totals kept by the write transactions (#22): usage() reads them, check recounts them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from alembic import command
from castore.cli import cli
from castore.codec import Codec
from castore.keys import BlobKey
from castore.location import locate, migrate
from castore.metadata.migrate import alembic_config
from castore.opening import open_store
from castore.store import METADATA_FILE, Store

from ..backends import PostgresCluster


def _fill(store: Store) -> None:
    store.put("/a", b"small", version=1)
    store.put("/a", b"small, again", version=2)
    store.put("/d/b", b"x" * 300_000, version=1)
    store.put("/d/c", b"small", version=7)
    store.put("/e", b"gone soon", version=1)
    store.delete("/e")


def _check(root: Path, *args: str, code: int) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--root", str(root), "--json", "check", *args])
    assert result.exit_code == code, (result.output, result.exception)
    return json.loads(result.output)  # type: ignore[no-any-return]


@pytest.mark.backends("sqlite+file", "postgresql+file")
def test_every_write_path_keeps_the_totals(store: Store) -> None:
    """put, batch, bulk_add_paths, delete, rm -r, retention, gc: the totals equal a recount after each."""
    recount = store.metadata.recount_usage
    _fill(store)
    assert store.usage() == recount()
    store.put_many([("/batch/1", 1, b"one", None), ("/batch/2", 1, b"two", None)])  # one commit for many puts
    assert store.usage() == recount()
    key = store.stat("/a").key
    with store.metadata.write() as txn:
        txn.bulk_add_paths([(f"/bulk/{i}", 1) for i in range(50)], BlobKey(key))
    assert store.usage() == recount()
    for version in range(3, 10):  # past the retention: old versions dropped
        store.put("/a", f"v{version}".encode(), version=version)
    assert store.usage() == recount()
    for info in list(store.list("/bulk/")):  # what rm -r does
        store.delete(info.path)
    assert store.usage() == recount()
    assert store.usage().unreferenced_blobs > 0
    store.collect_garbage()
    assert store.usage() == recount() and store.usage().unreferenced_blobs == 0
    big = store.stat("/d/b")
    before = store.usage()
    with store.metadata.write() as txn:  # what castore compact does when it stores a content anew
        assert txn.restore_blob(BlobKey(big.key), stored_size=big.stored_size - 100, codec=Codec(big.codec),
                                data=None)
    assert store.usage() == recount() and store.usage().stored_bytes == before.stored_bytes - 100


@pytest.mark.backends("sqlite+file")  # changes the SQLite file behind the store
def test_usage_reads_the_maintained_totals(store: Store, store_root: Path) -> None:
    """usage() does not recount: a total changed behind its back shows (check finds it, see below)."""
    _fill(store)
    with sqlite3.connect(store_root / METADATA_FILE) as db:
        db.execute("UPDATE totals SET files = files + 1000")
    assert store.usage().files == store.metadata.recount_usage().files + 1000


@pytest.mark.backends("sqlite+file")  # changes the SQLite file behind the store
def test_check_reports_and_repairs_wrong_totals(store: Store, store_root: Path) -> None:
    _fill(store)
    _check(store_root, code=0)
    with sqlite3.connect(store_root / METADATA_FILE) as db:
        db.execute("UPDATE totals SET files = files + 3, stored_bytes = stored_bytes - 10")
    found = _check(store_root, code=2)
    assert [(p["kind"], p["subject"], p["repaired"]) for p in found["problems"]] == [
        ("totals", "files", False), ("totals", "stored_bytes", False)
    ]
    assert found["problems"][0]["detail"] == "kept 6, a recount finds 3"
    repaired = _check(store_root, "--repair", code=1)
    assert repaired["repaired_count"] == 2
    assert store.usage() == store.metadata.recount_usage()
    _check(store_root, code=0)


def test_migration_counts_the_totals_of_an_existing_store(tmp_path: Path) -> None:
    root = tmp_path / "old"
    with open_store(root, create=True) as store:
        _fill(store)
        expected = store.metadata.recount_usage()
    command.downgrade(alembic_config(f"sqlite:///{root / METADATA_FILE}"), "0006")
    migrate(locate(root))
    with open_store(root) as store:
        assert store.usage() == expected


def test_postgresql_migration_counts_the_totals(postgres: PostgresCluster, tmp_path: Path) -> None:
    url = postgres.empty_database()
    blobs = (tmp_path / "blobs").as_uri()
    with open_store(metadata=url, blobs=blobs, create=True) as store:
        _fill(store)
        expected = store.metadata.recount_usage()
    config = alembic_config(url)
    command.downgrade(config, "0006")
    command.upgrade(config, "head")
    with open_store(metadata=url, blobs=blobs) as store:
        assert store.usage() == expected
        store.put("/after", b"more", version=1)
        assert store.usage() == store.metadata.recount_usage()


def test_migrate_store_keeps_the_totals_of_the_copy(tmp_path: Path) -> None:
    from castore.moving import copy_store

    with open_store(tmp_path / "source", create=True) as source:
        _fill(source)
        copy_store(source, locate(tmp_path / "copy"))
        with open_store(tmp_path / "copy") as copy:
            assert copy.usage() == copy.metadata.recount_usage()
            assert (copy.usage().files, copy.usage().versions) == (source.usage().files, source.usage().versions)


@pytest.mark.backends("sqlite+file", "postgresql+file")
def test_concurrent_writers_keep_the_totals(store: Store) -> None:
    """Writers in several threads (on PostgreSQL: several connections, spread over the totals' rows)."""
    from concurrent.futures import ThreadPoolExecutor

    def write(worker: int) -> None:
        for i in range(25):
            store.put(f"/c/{worker}/{i % 7}", b"shared %d" % (i % 3), version=i)  # shared contents, retention
            if i % 5 == 4:
                store.delete(f"/c/{worker}/{i % 7}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    store.collect_garbage()
    assert store.usage() == store.metadata.recount_usage()
