"""The metadata schema as SQLAlchemy Core tables; Alembic migrations are made from these.

Tables (see ``docs/design.md``, "Metadata schema"):

* ``settings`` — the store's own config: key seed, retention, inline threshold.
* ``blobs`` — one row per distinct content: key, sizes, codec, inline bytes of small
  blobs, chunk digests, and ``refcount`` = the number of ``versions`` rows naming it.
* ``paths`` — the current version of every stored path (what reads and lists use).
* ``versions`` — every retained version of every path, the current one included.
* ``deletions`` — paths deleted while moving in from a Filetracker server
  (``castore serve --migrate-from``): the old server's copy must not come back.
* ``tokens`` — access tokens of the HTTP server, stored as SHA-256 digests.
* ``totals`` — the whole store's totals (what ``usage()`` shows), kept by triggers on
  ``paths``, ``versions`` and ``blobs`` inside every write transaction (revision 0007).

``versions.blob_key`` is indexed (revision 0008): deleting a collected ``blobs`` row makes
the database check its foreign key, which scanned the table for every blob freed without
the index. ``paths.blob_key`` repeats the current version's key, with neither a foreign key
nor an index since revision 0011: the ``versions`` row keeps the blob, and an index by
content key cost every put and imported link a write at a random place of a large store.

Core ``Table`` objects rather than ORM declarative classes: nothing in castore maps rows
to objects, and ``sqlalchemy.orm`` alone costs ~0.1 s of every server's and command's
start-up.

Changing anything here needs a new Alembic revision, a bump of
:data:`castore.metadata.migrate.SCHEMA_REVISION` and a "Changes" entry in the design doc.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    literal_column,
    text,
)

from ..digests import DIGEST_SIZE

__all__ = [
    "HEAD",
    "PATH_LENGTH",
    "PathString",
    "blobs",
    "deletions",
    "metadata",
    "paths",
    "settings",
    "tokens",
    "totals",
    "versions",
]

PATH_LENGTH = 4096

PathString = String(PATH_LENGTH).with_variant(String(PATH_LENGTH, collation="C"), "postgresql")
"""A path column: compared byte by byte on every database, so range scans list in byte order.

SQLite's default BINARY collation already compares UTF-8 bytes; PostgreSQL's default
collation follows the locale, hence ``COLLATE "C"`` there (revision 0006)."""

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)
"""Every table of the schema (Alembic's ``target_metadata``)."""

settings = Table(
    "settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
"""One named value of the store's config per row."""

blobs = Table(
    "blobs",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("size", BigInteger, nullable=False, doc="Logical (original) size in bytes."),
    Column("stored_size", BigInteger, nullable=False, doc="Size of the stored bytes (after compression, if any)."),
    Column("codec", String(8), nullable=False),
    Column("data", LargeBinary, nullable=True,
           doc="The stored bytes of a small blob kept inline; NULL when the blob backend holds them."),
    Column("refcount", BigInteger, nullable=False,
           doc="How many ``versions`` rows name this blob; 0 means collectable."),
    Column("created", BigInteger, nullable=False, doc="Unix time of the first put of this content."),
    Column("digests", LargeBinary, nullable=True,
           doc="xxh3-128 of each 1 MiB chunk of the content (:mod:`castore.digests`); NULL until known "
               "for a blob written before revision 0002."),
    Column("pending_until", BigInteger, nullable=True,
           doc="Unix time until which a put may be uploading these bytes (revision 0006): garbage "
               "collection leaves a row at refcount 0 alone before then (``docs/design.md``, \"Publishing\")."),
    Column("frame", Integer, nullable=False, server_default=text("0"),
           doc="Which frame of the content the blob backend holds (revision 0009): 0 is the one a put "
               "wrote, under the key; ``castore compact`` writes another under ``<key>.<frame>`` "
               "(:func:`castore.keys.frame_name`). Ignored while the bytes are inline."),
    Column("base", String(32), nullable=True,
           doc="For a delta frame (codec ``zdelta``, revision 0010): the key of the content it was "
               "compressed against, which must stay stored while this row names it; NULL otherwise."),
    Index("ix_blobs_created_key", "created", "key"),  # castore compact's order (revision 0009)
    Index("ix_blobs_base", "base"),  # gc: is a content some delta's reference? (revision 0010)
)
"""One distinct content, stored once."""
HEAD = func.substr(blobs.c.digests, literal_column("1"), literal_column(str(DIGEST_SIZE)))
"""A content's first chunk digest: contents sharing it are compact's delta candidates (``castore.compacting``).

Constants, not bound parameters, so that a query's expression is the index's (SQLite and
PostgreSQL match an index expression textually)."""
Index("ix_blobs_head", HEAD)  # revision 0010: a lookup, not a scan, per content compacted

paths = Table(
    "paths",
    metadata,
    Column("path", PathString, primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("blob_key", String(32), nullable=False,
           doc="The current version's content, as its ``versions`` row names it (revision 0011: no foreign "
               "key or index of its own; that row's keep the blob)."),
    Column("nversions", Integer, nullable=False,
           doc="How many ``versions`` rows this path has (kept so retention costs no COUNT)."),
    sqlite_with_rowid=False,
)
"""The current version of a path."""

versions = Table(
    "versions",
    metadata,
    Column("path", PathString, ForeignKey("paths.path"), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("blob_key", ForeignKey("blobs.key"), nullable=False, index=True),
    sqlite_with_rowid=False,
)
"""One retained version of a path."""

deletions = Table(
    "deletions",
    metadata,
    Column("path", PathString, primary_key=True),
    Column("version", BigInteger, nullable=False, doc="The version the delete carried (its time when it carried none)."),
    sqlite_with_rowid=False,
)
"""A path deleted in castore while a Filetracker server's files were moving in.

Versions of ``path`` on the old server up to ``version`` are dead: neither a live
migration's fetch-on-miss nor an import may bring them back. Retention: one row per path
deleted while ``castore serve --migrate-from`` runs (a later delete of the path replaces
it), kept until ``castore migrate finish`` drops them all.
"""

tokens = Table(
    "tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(8), nullable=False, doc="``read``, ``write`` or ``admin``."),
    Column("digest", String(64), unique=True, nullable=False, doc="SHA-256 of the token, as hex."),
    Column("created", BigInteger, nullable=False, doc="Unix time the token was created."),
)
"""An access token of the HTTP server (see :mod:`castore.server.tokens`); the token itself is never stored."""

totals = Table(
    "totals",
    metadata,
    Column("slot", Integer, primary_key=True, autoincrement=False,
           doc="SQLite: always 0. PostgreSQL: ``pg_backend_pid() % 16`` of the writer (spreads the row locks)."),
    *(Column(name, BigInteger, nullable=False) for name in (
        "files", "logical_bytes", "versions", "retained_bytes", "blobs", "blob_bytes", "stored_bytes",
        "inline_blobs", "unreferenced_blobs")),
)
"""The store's totals, the sum of its rows: the fields of :class:`castore.metadata.rows.Usage`.

Nothing in Python writes them but ``castore check --repair``: triggers made by revision
0007 (``alembic/versions/step06_rev0007_totals.py``) add each statement's change to them
in the statement's own transaction, whichever code path made it.
"""
