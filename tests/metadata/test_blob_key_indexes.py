"""Freeing a blob costs the same however many paths the store holds (revision 0008).

Deleting a ``blobs`` row makes the database check the foreign keys ``paths.blob_key``
and ``versions.blob_key``; without an index on each that check scans both tables, so
``gc`` freed each blob in time proportional to the store (0.11 s a blob at a million
paths). The test counts SQLite's virtual-machine steps of one such delete instead of
timing it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from castore.metadata.migrate import alembic_config
from castore.opening import locate, migrate, open_store

PATHS = 20_000
STEPS_PER_CALL = 100


def _fill(database: Path) -> None:
    """PATHS paths, a hundred per content, written straight into the tables (fast)."""
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT INTO blobs (key, size, stored_size, codec, data, refcount, created)"
            " VALUES (?, 1, 1, 'raw', x'00', 100, 0)",
            [(f"{i:032x}",) for i in range(PATHS // 100)],
        )
        rows = [(f"/c/p{i // 100}/{i % 100}.in", f"{i // 100:032x}") for i in range(PATHS)]
        db.executemany("INSERT INTO paths (path, version, blob_key, nversions) VALUES (?, 1, ?, 1)", rows)
        db.executemany("INSERT INTO versions (path, version, blob_key) VALUES (?, 1, ?)", rows)


def _steps_to_free_one_blob(database: Path) -> int:
    """Progress-handler calls (one per STEPS_PER_CALL VM steps) of deleting an unreferenced blob row."""
    db = sqlite3.connect(database, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("INSERT INTO blobs (key, size, stored_size, codec, data, refcount, created)"
                   " VALUES ('f' || hex(randomblob(15)), 1, 1, 'raw', x'00', 0, 0)")
        calls = 0

        def count() -> int:
            nonlocal calls
            calls += 1
            return 0

        db.set_progress_handler(count, STEPS_PER_CALL)
        db.execute("DELETE FROM blobs WHERE refcount = 0")
        db.set_progress_handler(None, STEPS_PER_CALL)
        return calls
    finally:
        db.close()


def test_freeing_a_blob_does_not_scan_the_paths(tmp_path: Path) -> None:
    root = tmp_path / "st"
    open_store(root, create=True).close()
    database = root / "metadata.sqlite3"
    _fill(database)
    # a few hundred steps with the indexes; a scan of 2 x PATHS rows takes over 2 x PATHS steps
    assert _steps_to_free_one_blob(database) * STEPS_PER_CALL < PATHS


def test_an_upgraded_store_gets_the_indexes(tmp_path: Path) -> None:
    root = tmp_path / "old"
    open_store(root, create=True).close()
    database = root / "metadata.sqlite3"
    command.downgrade(alembic_config(f"sqlite:///{database}"), "0007")
    _fill(database)
    assert _steps_to_free_one_blob(database) * STEPS_PER_CALL > 2 * PATHS  # the scan, before
    migrate(locate(root))
    assert _steps_to_free_one_blob(database) * STEPS_PER_CALL < PATHS
