"""``castore check`` reads the tables in as few passes as it can (#22: >= 200 k paths/s).

The paths check joined a grouped ``versions`` with ``paths`` and ``versions`` again (hash
joins that spilled to disk on PostgreSQL; on SQLite a materialised group and an automatic
index), and the report's counts scanned ``paths``, ``versions`` and ``blobs`` once more after
the totals' recount had counted them. The test counts SQLite's virtual-machine steps of a
20 k-path store instead of timing the check.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event

from castore import maintenance
from castore.opening import open_store
from castore.store import Store
from tests.metadata.test_blob_key_indexes import PATHS, STEPS_PER_CALL, _fill


def _counting_steps(store: Store) -> list[int]:
    """Progress-handler calls of every connection the store opens from now on (one per STEPS_PER_CALL steps)."""
    calls = [0]

    def count() -> int:
        calls[0] += 1
        return 0

    for engine in {id(e): e for e in (store.metadata._reader, store.metadata._writer)}.values():
        event.listen(engine, "connect", lambda dbapi, _record: dbapi.set_progress_handler(count, STEPS_PER_CALL))
        engine.dispose()
    return calls


def test_check_reads_paths_and_versions_side_by_side(tmp_path: Path) -> None:
    root = tmp_path / "st"
    open_store(root, create=True).close()
    _fill(root / "metadata.sqlite3")
    with open_store(root) as store:
        steps = _counting_steps(store)
        assert list(store.metadata.path_mismatches()) == []
        # one pass over both primary keys: ~40 steps a path (the grouped join took 58)
        assert steps[0] * STEPS_PER_CALL < 50 * PATHS, steps[0] * STEPS_PER_CALL / PATHS
        steps[0] = 0
        report = maintenance.check(store)
        assert (report.paths, report.versions, report.problem_count) == (PATHS, PATHS, 0)
        # the whole check without content: ~75 steps a path (93 with the grouped join and the counts)
        assert steps[0] * STEPS_PER_CALL < 85 * PATHS, steps[0] * STEPS_PER_CALL / PATHS
