"""The metadata schema as SQLAlchemy ORM models; Alembic migrations are made from these.

Tables (see ``docs/design.md``, "Metadata schema"):

* ``settings`` — the store's own config: key seed, retention, inline threshold.
* ``blobs`` — one row per distinct content: key, sizes, codec, inline bytes of small
  blobs, chunk digests, and ``refcount`` = the number of ``versions`` rows naming it.
* ``paths`` — the current version of every stored path (what reads and lists use).
* ``versions`` — every retained version of every path, the current one included.
* ``deletions`` — paths deleted while moving in from a Filetracker server
  (``castore serve --migrate-from``): the old server's copy must not come back.
* ``tokens`` — access tokens of the HTTP server, stored as SHA-256 digests.

Changing anything here needs a new Alembic revision, a bump of
:data:`castore.metadata.migrate.SCHEMA_REVISION` and a "Changes" entry in the design doc.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["PATH_LENGTH", "Base", "Blob", "Deletion", "PathEntry", "PathString", "Setting", "Token", "Version"]

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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Setting(Base):
    """One named value of the store's config."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Blob(Base):
    """One distinct content, stored once."""

    __tablename__ = "blobs"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    """Logical (original) size in bytes."""
    stored_size: Mapped[int] = mapped_column(BigInteger)
    """Size of the stored bytes (after compression, if any)."""
    codec: Mapped[str] = mapped_column(String(8))
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """The stored bytes of a small blob kept inline; NULL when the blob backend holds them."""
    refcount: Mapped[int] = mapped_column(BigInteger)
    """How many ``versions`` rows name this blob; 0 means collectable."""
    created: Mapped[int] = mapped_column(BigInteger)
    """Unix time of the first put of this content."""
    digests: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """xxh3-128 of each 1 MiB chunk of the content (:mod:`castore.digests`); NULL until
    known for a blob written before revision 0002."""
    pending_until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Unix time until which a put may be uploading these bytes (revision 0006): garbage
    collection leaves a row at refcount 0 alone before then (``docs/design.md``, "Publishing")."""


class PathEntry(Base):
    """The current version of a path."""

    __tablename__ = "paths"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's declarative hook

    path: Mapped[str] = mapped_column(PathString, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(ForeignKey("blobs.key"))
    nversions: Mapped[int] = mapped_column(Integer)
    """How many ``versions`` rows this path has (kept so retention costs no COUNT)."""


class Version(Base):
    """One retained version of a path."""

    __tablename__ = "versions"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's declarative hook

    path: Mapped[str] = mapped_column(PathString, ForeignKey("paths.path"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    blob_key: Mapped[str] = mapped_column(ForeignKey("blobs.key"))


class Deletion(Base):
    """A path deleted in castore while a Filetracker server's files were moving in.

    Versions of ``path`` on the old server up to ``version`` are dead: neither a live
    migration's fetch-on-miss nor an import may bring them back.
    """

    __tablename__ = "deletions"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's declarative hook

    path: Mapped[str] = mapped_column(PathString, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    """The version the delete carried (its time when it carried none)."""


class Token(Base):
    """An access token of the HTTP server (see :mod:`castore.tokens`); the token itself is never stored."""

    __tablename__ = "tokens"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(8))
    """``read``, ``write`` or ``admin``."""
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 of the token, as hex."""
    created: Mapped[int] = mapped_column(BigInteger)
    """Unix time the token was created."""
