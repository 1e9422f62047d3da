"""Writers of one process queued behind SQLite's busy timeout each fail within one timeout.

Another process holding the database (``castore gc``, a local ``castore put``) makes a
server's writer wait out SQLite's busy timeout. Threads queued behind it on the
process-local write turn must not wait one timeout after another (the k-th failing after
k timeouts, holding a server thread all along): found by an attack review.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from castore.metadata import engine, sqlite
from castore.store import Store

WRITERS = 8


def test_queued_writers_fail_within_one_busy_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "BUSY_TIMEOUT_MS", 1000)
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_MS", 1000)
    store = Store.open(tmp_path / "s", create=True)
    store.put("/warm", b"x", 1)
    other = sqlite3.connect(str(tmp_path / "s" / "metadata.sqlite3"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer
    results: list[tuple[str, float]] = []

    def put(i: int) -> None:
        started = time.monotonic()
        try:
            store.put(f"/f{i}", b"data %d" % i, 10)
            results.append(("stored", time.monotonic() - started))
        except OperationalError as e:
            results.append((str(e.orig), time.monotonic() - started))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.rollback()
        other.close()
    assert [r for r, _ in results] == ["database is locked"] * WRITERS
    # One timeout each (1 s), not one after another (up to 8 s): a wide margin for a busy machine.
    assert max(seconds for _, seconds in results) < WRITERS / 2
    assert store.put("/after", b"y", 1) == "/after@1"  # the turn is free again
    assert [info.path for info in store.list("/")] == ["/after", "/warm"]
    store.close()
