"""The hot reads' own SQLite connections (``castore.metadata.sqlite.SqliteReads``, issue #22).

Each caches up to ``POINT_READ_CACHE_KIB`` of pages (SQLite's default 2 MiB no longer held
the upper B-tree pages at 10 M paths); so that those caches do not pile up after a burst
of concurrent reads, at most ``MAX_IDLE_READS`` connections wait between reads.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from castore.metadata import sqlite as fast
from castore.metadata.statements import SELECT_CURRENT_ENTRY
from castore.opening import open_store


def _reads(tmp_path: Path) -> fast.SqliteReads:
    store = open_store(tmp_path / "st", create=True)
    store.put("/a", b"a", version=1)
    reads = store.metadata._fast_reads
    assert reads is not None
    return reads


def test_a_point_read_connection_caches_more_than_sqlites_default(tmp_path: Path) -> None:
    reads = _reads(tmp_path)
    assert reads.first(SELECT_CURRENT_ENTRY, {"p": "/a"}) is not None
    (connection,) = reads._idle
    assert connection.execute("PRAGMA cache_size").fetchone() == (-fast.POINT_READ_CACHE_KIB,)
    assert fast.POINT_READ_CACHE_KIB > 2000  # SQLite's default: -2000


def test_at_most_a_few_connections_wait_after_a_burst_of_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _reads(tmp_path)
    burst = fast.MAX_IDLE_READS + 3
    made: list[sqlite3.Connection] = list(reads._idle)  # those the put left idle are taken first
    new = reads._new

    def counted() -> sqlite3.Connection:
        made.append(new())
        return made[-1]

    monkeypatch.setattr(reads, "_new", counted)
    # every reader takes a connection before any gives one back: a burst of `burst` at once
    taken = threading.Barrier(burst)
    original = fast.SqliteReads._give_back

    def give_back_after_all_took(self: fast.SqliteReads, connection: sqlite3.Connection) -> None:
        taken.wait(timeout=30)
        original(self, connection)

    monkeypatch.setattr(fast.SqliteReads, "_give_back", give_back_after_all_took)
    rows: list[object] = []
    threads = [threading.Thread(target=lambda: rows.append(reads.first(SELECT_CURRENT_ENTRY, {"p": "/a"})))
               for _ in range(burst)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(rows) == burst and all(row is not None for row in rows)
    assert len(made) == burst
    assert len(reads._idle) == fast.MAX_IDLE_READS
    closed = [c for c in made if c not in reads._idle]
    assert len(closed) == burst - fast.MAX_IDLE_READS
    for connection in closed:
        with pytest.raises(sqlite3.ProgrammingError):
            connection.execute("select 1")
    for connection in reads._idle:  # those kept still answer
        assert connection.execute("select 1").fetchone() == (1,)
