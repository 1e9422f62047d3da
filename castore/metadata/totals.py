"""The whole store's totals, kept by the database inside every write transaction (#22).

``usage()``, ``castore du`` and the web page's landing page show the store's totals: its
files, versions, logical and retained bytes, live blobs with their sizes, inline blobs,
unreferenced blobs (the fields of :class:`~castore.metadata.rows.Usage`). Counting them
costs a scan of every table (1.35 s at a million paths, growing with the store); reading
them from the ``totals`` table costs one small query whatever the store holds.

Triggers on ``paths``, ``versions`` and ``blobs`` add each change to ``totals`` in the
transaction that makes it, so every write path (a put, a batch, a bulk insert, a delete,
retention, gc, repair, import, live migration, ``migrate-store``, a change of a
content's stored bytes) keeps them right without calling anything. A content's stored
size changes through :meth:`castore.metadata.txn.WriteTxn.settle_frame` (recompressing
it, as ``castore compact`` does): the blobs trigger moves ``stored_bytes`` with it.

* SQLite: one row (``slot`` 0) and row-level triggers (SQLite has no others). One writer
  at a time: the row is never contended.
* PostgreSQL: statement-level triggers with transition tables (one change of ``totals``
  per statement, also for a bulk insert of a million rows), added to the row
  ``slot = pg_backend_pid() % SLOTS`` (made on first use by an upsert). A row lock is held
  until its transaction commits: with one row, every writer of every server would queue
  on it; with 16, concurrent writers (each on its own connection) mostly take different
  rows. A reader sums the rows.

``castore check`` recounts (:func:`recount`) and compares; ``--repair`` replaces the rows
with the recount (:func:`set_totals`). Revision 0007 installs this (:func:`install`);
changing a trigger needs a new revision that drops and makes them again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, Table, case, func, select, text

from .models import blobs, paths, totals, versions
from .rows import Usage
from .statements import INLINE_LENGTH

__all__ = ["COLUMNS", "SLOTS", "drop_blobs_column", "install", "read_totals", "recount", "set_totals", "uninstall"]

COLUMNS = ("files", "logical_bytes", "versions", "retained_bytes", "blobs", "blob_bytes", "stored_bytes",
           "inline_blobs", "unreferenced_blobs")
"""The columns of ``totals``, in the order of :class:`~castore.metadata.rows.Usage`'s fields."""

SLOTS = 16
"""PostgreSQL: how many rows concurrent writers spread their changes over."""

_SIZE_OF_KEY = 'coalesce((SELECT size FROM blobs WHERE "key" = r.blob_key), 0)'
_PARTS: dict[str, dict[str, str]] = {  # table -> column of totals -> what one row ``r`` adds to it
    "paths": {"files": "1", "logical_bytes": _SIZE_OF_KEY},
    "versions": {"versions": "1", "retained_bytes": _SIZE_OF_KEY},
    "blobs": {
        "blobs": "CASE WHEN r.refcount > 0 THEN 1 ELSE 0 END",
        "blob_bytes": "CASE WHEN r.refcount > 0 THEN r.size ELSE 0 END",
        "stored_bytes": "CASE WHEN r.refcount > 0 THEN r.stored_size ELSE 0 END",
        "inline_blobs": "CASE WHEN r.refcount > 0 AND r.data IS NOT NULL THEN 1 ELSE 0 END",
        "unreferenced_blobs": "CASE WHEN r.refcount = 0 THEN 1 ELSE 0 END",
    },
}
_CHANGES = {  # SQLite: an UPDATE that cannot change the totals fires nothing (a put's refcount + 1)
    "paths": "OLD.blob_key != NEW.blob_key",
    "versions": "OLD.blob_key != NEW.blob_key",
    "blobs": "(OLD.refcount > 0) != (NEW.refcount > 0) OR (OLD.refcount = 0) != (NEW.refcount = 0) "
             "OR OLD.size != NEW.size OR OLD.stored_size != NEW.stored_size "
             "OR (OLD.data IS NULL) != (NEW.data IS NULL)",
}


def _of(sql: str, row: str) -> str:
    return sql.replace("r.", f"{row}.")


def _sqlite_triggers() -> list[str]:
    statements = []
    for table, parts in _PARTS.items():
        def change(sign: str, row: str, parts: dict[str, str] = parts) -> str:
            return ", ".join(f"{c} = {c} {sign} ({_of(sql, row)})" for c, sql in parts.items())

        moved = ", ".join(f"{c} = {c} + ({_of(sql, 'NEW')}) - ({_of(sql, 'OLD')})" for c, sql in parts.items())
        statements += [
            (f"CREATE TRIGGER totals_{table}_insert AFTER INSERT ON {table} "
             f"BEGIN UPDATE totals SET {change('+', 'NEW')} WHERE slot = 0; END"),
            (f"CREATE TRIGGER totals_{table}_delete AFTER DELETE ON {table} "
             f"BEGIN UPDATE totals SET {change('-', 'OLD')} WHERE slot = 0; END"),
            (f"CREATE TRIGGER totals_{table}_update AFTER UPDATE ON {table} WHEN {_CHANGES[table]} "
             f"BEGIN UPDATE totals SET {moved} WHERE slot = 0; END"),
        ]
    return statements


def _postgresql_triggers() -> list[str]:
    statements = []
    for table, parts in _PARTS.items():
        columns = list(parts)
        sums = ", ".join(f"coalesce(sum({sql}), 0)" for sql in parts.values())
        declare = " ".join(f"d_{c} bigint := 0; o_{c} bigint := 0;" for c in columns)
        statements.append(f"""
CREATE FUNCTION castore_totals_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE {declare}
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    SELECT {sums} INTO {", ".join(f"d_{c}" for c in columns)} FROM new_rows r;
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    SELECT {sums} INTO {", ".join(f"o_{c}" for c in columns)} FROM old_rows r;
    {" ".join(f"d_{c} := d_{c} - o_{c};" for c in columns)}
  END IF;
  IF {" OR ".join(f"d_{c} <> 0" for c in columns)} THEN
    INSERT INTO totals (slot, {", ".join(COLUMNS)})
    VALUES (pg_backend_pid() % {SLOTS}, {", ".join(f"d_{c}" if c in parts else "0" for c in COLUMNS)})
    ON CONFLICT (slot) DO UPDATE SET {", ".join(f"{c} = totals.{c} + excluded.{c}" for c in columns)};
  END IF;
  RETURN NULL;
END $$""")
        for event, referencing in (("INSERT", "NEW TABLE AS new_rows"), ("DELETE", "OLD TABLE AS old_rows"),
                                   ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows")):
            statements.append(f"CREATE TRIGGER totals_{table}_{event.lower()} AFTER {event} ON {table} "
                              f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION castore_totals_{table}()")
    return statements


def install(connection: Connection) -> None:
    """Count the totals of what the store holds now into ``totals`` (made, empty) and make the triggers.

    On PostgreSQL the tables are locked against writes meanwhile: none may slip in between.
    """
    postgresql = connection.dialect.name == "postgresql"
    if postgresql:
        connection.execute(text("LOCK TABLE blobs, paths, versions IN SHARE MODE"))
    set_totals(connection, recount(connection))
    for statement in _postgresql_triggers() if postgresql else _sqlite_triggers():
        connection.execute(text(statement))


def uninstall(connection: Connection) -> None:
    """Drop the triggers :func:`install` made (the table is the caller's)."""
    postgresql = connection.dialect.name == "postgresql"
    for table in _PARTS:
        for event in ("insert", "delete", "update"):
            connection.execute(text(f"DROP TRIGGER totals_{table}_{event}" + (f" ON {table}" if postgresql else "")))
        if postgresql:
            connection.execute(text(f"DROP FUNCTION castore_totals_{table}()"))


def read_totals(connection: Connection) -> Usage:
    """The totals the triggers keep: one query over at most :data:`SLOTS` rows."""
    row = connection.execute(select(*(func.coalesce(func.sum(totals.c[c]), 0) for c in COLUMNS))).one()
    return Usage(*(int(n) for n in row))


def _rows_and_bytes(table: Table) -> Select[Any]:
    """How many rows ``table`` (``paths`` or ``versions``) has, and the size of the contents they
    name summed (a row naming no blob: 0 bytes), counted per content first.

    Grouped by content, then one ``blobs`` lookup per content: joining every row to ``blobs``
    looked a content up once per row, at random places of a table holding the inline
    contents (``paths`` at 10 M paths on SQLite: 21.6 s, grouped 6.7 s; ``versions``, whose
    blob-key index hands the keys over in order: 3.0 s, grouped 1.2 s).
    """
    counted = select(table.c.blob_key, func.count().label("n")).group_by(table.c.blob_key).subquery()
    return select(
        func.coalesce(func.sum(counted.c.n), 0), func.coalesce(func.sum(counted.c.n * blobs.c.size), 0)
    ).select_from(counted.outerjoin(blobs, blobs.c.key == counted.c.blob_key))


def recount(connection: Connection) -> Usage:
    """The totals counted from every row of ``paths``, ``versions`` and ``blobs`` (what check compares)."""
    c = connection
    files, logical = c.execute(_rows_and_bytes(paths)).one()
    nversions, retained = c.execute(_rows_and_bytes(versions)).one()
    live = blobs.c.refcount > 0
    nblobs, blob_bytes, stored, inline = c.execute(
        select(
            func.count(),
            func.coalesce(func.sum(blobs.c.size), 0),
            func.coalesce(func.sum(blobs.c.stored_size), 0),
            func.coalesce(func.sum(case((INLINE_LENGTH >= 0, 1), else_=0)), 0),
        ).where(live)
    ).one()
    unreferenced = c.execute(select(func.count()).where(blobs.c.refcount == 0)).scalar_one()
    counts: list[Any] = [files, logical, nversions, retained, nblobs, blob_bytes, stored, inline, unreferenced]
    return Usage(*(int(n) for n in counts))


def set_totals(connection: Connection, usage: Usage) -> None:
    """Make ``totals`` hold ``usage`` (one row, slot 0), inside the caller's transaction."""
    connection.execute(totals.delete())
    connection.execute(totals.insert().values(slot=0, **{c: getattr(usage, c) for c in COLUMNS}))


def drop_blobs_column(operations: Any, column: str) -> None:
    """A revision's downgrade: drop ``column`` of ``blobs`` (``operations``: Alembic's ``op``).

    SQLite: batch mode copies ``blobs`` into a new table and renames it, which the totals'
    triggers, naming ``blobs``, would refuse; they are dropped and made again around it.
    """
    bind = operations.get_bind()
    if bind.dialect.name != "sqlite":
        operations.drop_column("blobs", column)
        return
    uninstall(bind)
    with operations.batch_alter_table("blobs") as batch:
        batch.drop_column(column)
    install(bind)
