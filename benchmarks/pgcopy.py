"""Many new paths written into a PostgreSQL store with COPY: the scale benchmark's 10 M-path build (#22).

``WriteTxn.bulk_add_paths`` writes multi-row INSERTs; on PostgreSQL that built 3 of the
~5 GB of a 10 M-path store in 80 minutes. :func:`copy_paths` makes the same rows as
calls of ``bulk_add_paths`` would (each path one version; each blob's ``refcount`` the
number of ``versions`` rows naming it; the whole-store totals) in one transaction:

1. set aside what costs per row and can be made again in one pass: the totals'
   statement triggers (:func:`castore.metadata.totals.uninstall`; their transition
   tables hold every row, and each row's blob size is looked up), the foreign keys of
   ``paths`` and ``versions`` (a lookup and a row lock in ``blobs``/``paths`` per row) and
   their secondary indexes, as the models have them (since revision 0011 only
   ``versions``' reference to ``blobs`` and ``ix_versions_blob_key``: ``paths.blob_key``
   has neither). The primary keys stay: they check that every path is new.
2. ``COPY paths`` and ``COPY versions`` (psycopg 3's ``cursor.copy``), in the order given.
3. make the indexes and foreign keys again from the models' tables
   (:mod:`castore.metadata.models`: the same statements the schema's revisions made; a
   foreign key is checked against every row as it is added), set every blob's
   ``refcount`` in one ``UPDATE … FROM (SELECT blob_key, count(*) …)``, and make the
   triggers again, which recounts the totals (:func:`castore.metadata.totals.install`).
4. after the commit, ``VACUUM (ANALYZE)`` of the three tables: the planner's statistics,
   and the visibility map autovacuum would otherwise write during the measurements.

Where the time of 1 M paths went (2026-12-07, load 3-4, the same 10 k contents put first in
60-90 s): the INSERTs 322 s; COPY with everything in place 43 s; with the triggers set
aside 31 s; also the ``blob_key`` indexes 39 s (the foreign keys' per-row checks dominate);
also the foreign keys 18 s, 12-15 s with 512 MB for the index builds, 13 s with the
``VACUUM`` (0.7 s). Then the Python side (making and formatting the rows, ~4 µs a row) is
most of it (``benchmarks/README.md``, "Ten million paths (PostgreSQL …)", has the table).
Dropping the primary keys too saved ~2 s but made them by sorting, a fifth smaller than
the B-trees the INSERTs grow (402 against 503 MB): not the store the normal code makes, so
they stay.

Nothing else may write to the store meanwhile (the tables are locked until the commit).
``tests/system/test_benchmark_scale.py`` builds a store both ways and compares every
row, the schema and ``castore check``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, Table, create_engine, func, select, text, update
from sqlalchemy.schema import AddConstraint, DropConstraint

from castore.keys import BlobKey
from castore.metadata import totals
from castore.metadata.models import blobs, paths, versions

__all__ = ["copy_paths"]

Rows = Iterable[tuple[BlobKey, list[tuple[str, int]]]]
"""``(key, [(path, version), ...])``: new paths, each with one version naming the live blob ``key``."""

_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
"""COPY's text format: these characters of a value are written escaped."""

_MAINTENANCE_MEMORY = "512MB"
"""For this transaction's index builds and foreign-key checks (the server's default: 64 MB)."""


def copy_paths(url: str, rows: Callable[[], Rows]) -> dict[str, float]:
    """Add the paths ``rows()`` yields (called twice: once per table) to the PostgreSQL store at ``url``.

    Returns the seconds of each step, named ``build_<step>_s``.
    """
    steps: dict[str, float] = {}
    began = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal began
        now = time.perf_counter()
        steps[f"build_{step}_s"] = now - began
        began = now

    engine = create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(text(f"SET LOCAL maintenance_work_mem = '{_MAINTENANCE_MEMORY}'"))
            keys, indexes = _set_aside(c)
            lap("set_aside")
            _copy(c, paths, (f"{p.translate(_ESCAPE)}\t{v}\t{key}\t1\n" for key, part in rows() for p, v in part))
            lap("copy_paths")
            _copy(c, versions, (f"{p.translate(_ESCAPE)}\t{v}\t{key}\n" for key, part in rows() for p, v in part))
            lap("copy_versions")
            for index in indexes:
                index.create(c)
            lap("indexes")
            for key in keys:
                c.execute(AddConstraint(key))
            lap("foreign_keys")
            counted = select(versions.c.blob_key, func.count().label("n")).group_by(versions.c.blob_key).subquery()
            c.execute(update(blobs).where(blobs.c.key == counted.c.blob_key).values(refcount=counted.c.n))
            lap("refcounts")
            totals.install(c)
            lap("totals")
        lap("commit")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM (ANALYZE) paths, versions, blobs"))
        lap("vacuum_analyze")
    finally:
        engine.dispose()
    return steps


def _set_aside(c: Connection) -> tuple[list[Any], list[Any]]:
    """Drop the totals' triggers, and the foreign keys and secondary indexes of ``paths`` and
    ``versions``; the keys and indexes dropped, to be made again."""
    totals.uninstall(c)
    keys = [key for table in (versions, paths) for key in sorted(table.foreign_key_constraints, key=_name)]
    indexes = [index for table in (paths, versions) for index in sorted(table.indexes, key=_name)]
    for key in keys:
        c.execute(DropConstraint(key))
    for index in indexes:
        index.drop(c)
    return keys, indexes


def _name(item: Any) -> str:
    return str(item.name)


def _copy(c: Connection, table: Table, lines: Iterable[str]) -> None:
    """``COPY table FROM STDIN`` of ``lines``: rows in COPY's text format (values in the table's
    column order, tab-separated, a path's special characters escaped with :data:`_ESCAPE`)."""
    columns = ", ".join(column.name for column in table.columns)
    driver = c.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
        lines = iter(lines)
        while block := "".join(itertools.islice(lines, 10_000)):
            copy.write(block)
