"""Background checkpoints of a served SQLite store: the log is copied back off the puts' path, nothing is lost."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from castore.metadata.checkpoint import BACKSTOP_PAGES
from castore.store import METADATA_FILE, Store


def _autocheckpoint(store: Store) -> int:
    with store.metadata._writer.connect() as c:
        return int(c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "castore-checkpoint"]


def test_puts_are_checkpointed_by_a_thread_and_read_back(tmp_path: Path) -> None:
    contents = {f"/f{i}": os.urandom(64 << 10) for i in range(80)}  # ~1,300 pages: past SQLite's default 1,000
    with Store.open(tmp_path, create=True) as store:
        assert _autocheckpoint(store) == 1000
        store.metadata.checkpoint_in_background()
        assert _autocheckpoint(store) == BACKSTOP_PAGES  # the writers no longer checkpoint every ~60 puts
        for name, data in contents.items():
            store.put(name, data, 1000)
        checkpointer = store.metadata._checkpointer
        assert checkpointer is not None and checkpointer.commits >= len(contents)
    assert not _checkpoint_threads()  # closing the store stops it
    with Store.open(tmp_path) as store:
        assert {name: store.read_bytes(name) for name in contents} == contents
    with sqlite3.connect(tmp_path / METADATA_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_thread_checkpoints_once_commits_happened(tmp_path: Path) -> None:
    with Store.open(tmp_path, create=True) as store:
        store.metadata.checkpoint_in_background()
        checkpointer = store.metadata._checkpointer
        assert checkpointer is not None
        store.put("/a", b"x" * 1000, 1000)
        for _ in range(500):  # waits for the thread, at most ~5 s; no timing is asserted
            if checkpointer.checkpoints:
                break
            threading.Event().wait(0.01)
        assert checkpointer.checkpoints >= 1


def test_read_only_stores_get_no_checkpointer(tmp_path: Path) -> None:
    Store.open(tmp_path, create=True).close()
    with Store.open(tmp_path, read_only=True) as store:
        store.metadata.checkpoint_in_background()
        assert store.metadata._checkpointer is None
        assert not _checkpoint_threads()
