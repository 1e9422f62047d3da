"""compact's next contents cost the same however many contents the store holds (#23).

``castore compact`` and every slice of ``serve --compact-when-idle`` ask for the next
contents after a cursor, oldest first. Without an index on ``(created, key)`` each
request scanned and sorted every blob. The test counts SQLite's virtual-machine steps
instead of timing it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine

from castore.metadata import compaction
from castore.opening import open_store
from castore.store import METADATA_FILE

STEPS_PER_CALL = 100


def _store_with(root: Path, contents: int) -> Path:
    open_store(root, create=True).close()
    database = root / METADATA_FILE
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT INTO blobs (key, size, stored_size, codec, data, refcount, created, digests)"
            " VALUES (?, 1, 1, 'raw', x'00', 1, ?, x'00')",
            [(f"{i:032x}", 1000 + i) for i in range(contents)],
        )
    return database


def _steps_for_the_next_contents(database: Path, contents: int) -> int:
    """Progress-handler calls of fetching 100 contents after a cursor halfway through."""
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as c:
            calls = 0

            def count() -> int:
                nonlocal calls
                calls += 1
                return 0

            raw = c.connection.driver_connection
            assert raw is not None
            raw.set_progress_handler(count, STEPS_PER_CALL)
            half = contents // 2
            rows = compaction.candidates(c, (1000 + half, f"{half:032x}"), created_before=2**40, limit=100)
            raw.set_progress_handler(None, STEPS_PER_CALL)
            assert [row.key for row, _ in rows] == [f"{i:032x}" for i in range(half + 1, half + 101)]
            return calls
    finally:
        engine.dispose()


def test_the_next_contents_do_not_scan_the_store(tmp_path: Path) -> None:
    small = _steps_for_the_next_contents(_store_with(tmp_path / "small", 2_000), 2_000)
    large = _steps_for_the_next_contents(_store_with(tmp_path / "large", 40_000), 40_000)
    assert large < 2 * small + 10, (small, large)
