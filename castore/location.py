"""Where a store lives, given as a folder or as URLs, and its two parts opened from there.

A store has two parts, each named by a URL:

* metadata: ``sqlite:///path/metadata.sqlite3`` (the embedded default) or
  ``postgresql+psycopg://user:password@host:port/database``;
* blobs: ``file:///path/blobs`` (the embedded default), ``s3://bucket/prefix?endpoint_url=…``
  (credentials from the standard AWS environment variables), or ``memory://`` (tests).

``root`` is the short form of the embedded default: ``root/metadata.sqlite3`` and
``root/blobs``. A URL given beside ``root`` replaces that part only.

:func:`open_parts` is the one way in: a folder or URLs -> the opened :class:`Parts`
(metadata repository, blob backend, the folder's disk-space reserve, read-only or not),
the settings checked once (:func:`check_settings`). :class:`castore.store.Store` is made
from them: :func:`castore.open_store` and ``Store.open`` are both one call to it. This
module does not import the store, so the store can (``Store.open``) without a circle.

Creating a store (``create=True``, ``castore init``) and upgrading its schema
(:func:`migrate`, ``castore migrate-schema``) are explicit and run under the database's
migration lock; plain opening only checks that the schema is the expected one, so
any number of servers can open one database at once without racing to change it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import create_engine, select

from .blobs.base import BlobBackend
from .blobs.fs import FileBlobBackend
from .blobs.memory import MemoryBlobBackend
from .codec import DEFAULT_LEVEL
from .creating import CREATION_ERRORS, create_database
from .errors import StoreNotFound
from .faults import as_store_fault, faults_named, on_read_only_filesystem
from .keys import new_seed
from .layout import BLOBS_DIR, DEFAULT_INLINE_MAX, DEFAULT_RETENTION, METADATA_FILE, SETTINGS
from .metadata.migrate import SCHEMA_REVISION, migration_lock, upgrade_schema
from .metadata.models import settings as settings_table
from .metadata.repo import MetadataRepo
from .reserve import SpaceReserve

__all__ = [
    "BLOBS_DIR",
    "METADATA_FILE",
    "Location",
    "Parts",
    "check_settings",
    "initialize",
    "locate",
    "migrate",
    "open_blobs",
    "open_parts",
    "upgrade_schema_of",
]


@dataclass(frozen=True)
class Location:
    """Where one store lives: its metadata URL and its blobs URL."""

    metadata: str
    blobs: str

    def describe(self) -> str:
        return f"metadata {_hide_password(self.metadata)}, blobs {self.blobs}"


def locate(
    root: str | os.PathLike[str] | None = None, *, metadata: str | None = None, blobs: str | None = None
) -> Location:
    """The URLs of a store given as a folder, as URLs, or as a folder with one part replaced."""
    if root is None and (metadata is None or blobs is None):
        raise ValueError("give a store folder (root), or both a metadata URL and a blobs URL")
    folder = Path(root).absolute() if root is not None else None
    if metadata is None:
        assert folder is not None
        metadata = f"sqlite:///{folder / METADATA_FILE}"
    if blobs is None:
        assert folder is not None
        blobs = (folder / BLOBS_DIR).as_uri()
    _check_metadata_url(metadata)
    _check_blobs_url(blobs)
    return Location(metadata, blobs)


@dataclass(frozen=True)
class Parts:
    """A store's two parts, opened: what :class:`castore.store.Store` is made of."""

    metadata: MetadataRepo
    blobs: BlobBackend
    reserve: SpaceReserve | None = None
    """The folder's disk-space reserve (:mod:`castore.reserve`): a writable store folder only."""
    read_only: bool = False

    def close(self) -> None:
        self.metadata.close()
        self.blobs.close()


def open_parts(
    root: str | os.PathLike[str] | None = None,
    *,
    metadata: str | None = None,
    blobs: str | None = None,
    create: bool = False,
    read_only: bool | None = None,
    settings: Mapping[str, Any],
    check_blobs: bool | None = None,
    create_bucket: bool = False,
) -> Parts:
    """Open (with ``create=True``: create, or upgrade) the store at folder ``root`` or at two URLs.

    ``settings`` (:data:`~castore.layout.SETTINGS`: ``retention``, ``inline_max``,
    ``zstd_level``) are checked first (:func:`check_settings`: TypeError for an unknown
    name, ValueError for a value out of range); a new store takes them (defaults
    otherwise), and for an existing store each one given must equal the stored value
    (ValueError otherwise: they cannot change after creation, nor be given without
    ``create``). Raises StoreNotFound when there is no store and ``create`` is false,
    and SchemaOutdated when the store needs ``castore migrate-schema``.

    ``read_only`` (a folder only): True opens it for reading, writing nothing (not even
    a lock file); None does so when the folder is on a read-only filesystem.

    ``check_blobs`` (URLs; default: when ``create``): first check that the blob storage
    takes writes (:meth:`~castore.blobs.base.BlobBackend.check_setup`: for S3, a small put,
    get and delete under the prefix), raising BlobsUnusable, which says what to do, before
    anything is created; ``create_bucket`` makes a missing S3 bucket there.
    """
    check_settings(settings)
    if root is not None and metadata is None and blobs is None:
        return _open_folder(Path(root), create, read_only, settings)
    if read_only:
        raise ValueError("read_only is for a store folder (--root), not for metadata/blobs URLs")
    where = locate(root, metadata=metadata, blobs=blobs)
    _require_create(settings, create)
    if not create:
        _require_existing(where)
    backend = open_blobs(where.blobs)
    try:
        if create if check_blobs is None else check_blobs:
            backend.check_setup(create=create_bucket)
        if create:
            initialize(where, **settings)
        repo = MetadataRepo(where.metadata)
    except BaseException:
        backend.close()
        raise
    try:
        _require_same_settings(repo, settings, f"({where.describe()})")
        return Parts(repo, backend)
    except BaseException:
        repo.close()
        backend.close()
        raise


def check_settings(settings: Mapping[str, Any]) -> None:
    """TypeError for an unknown setting name, ValueError for a value out of range."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise TypeError(f"unknown store setting(s) {', '.join(unknown)} (known: {', '.join(SETTINGS)})")
    for name, low, high in (("retention", 1, 1 << 31), ("inline_max", 0, 1 << 30), ("zstd_level", 1, 22)):
        value = settings.get(name, low)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer in {low}..{high}, not {value!r}")


def initialize(
    where: Location,
    *,
    retention: int | None = None,
    inline_max: int | None = None,
    zstd_level: int | None = None,
) -> None:
    """Create the store at ``where`` if missing (schema and settings), or upgrade its schema.

    Runs under the database's migration lock, so several processes may call it at once. A
    missing SQLite database is first made whole, or not at all, by :mod:`castore.creating`.
    """
    settings = {
        "retention": DEFAULT_RETENTION if retention is None else retention,
        "inline_max": DEFAULT_INLINE_MAX if inline_max is None else inline_max,
        "zstd_level": DEFAULT_LEVEL if zstd_level is None else zstd_level,
    }
    check_settings(settings)
    _make_sqlite_folder(where.metadata)
    _create_sqlite_database(where.metadata, settings)
    engine = create_engine(where.metadata)
    try:
        upgrade_schema(engine)  # finds the new SQLite database current: nothing to do
        with migration_lock(engine) as connection:
            present = {row.name for row in connection.execute(select(settings_table.c.name))}
            values = {"seed": str(new_seed()), **{k: str(v) for k, v in settings.items()}}
            missing = [{"name": k, "value": v} for k, v in values.items() if k not in present]
            if missing:
                connection.execute(settings_table.insert(), missing)
    finally:
        engine.dispose()


def migrate(where: Location) -> tuple[str | None, str]:
    """Upgrade an existing store's schema; return ``(revision before, revision now)``."""
    _require_existing(where)
    engine = create_engine(where.metadata)
    try:
        before = upgrade_schema(engine)
    finally:
        engine.dispose()
    return before, SCHEMA_REVISION


def upgrade_schema_of(where: Location) -> None:
    """Create or upgrade the schema at ``where`` (under the migration lock), without settings."""
    _make_sqlite_folder(where.metadata)
    engine = create_engine(where.metadata)
    try:
        upgrade_schema(engine)
    finally:
        engine.dispose()


def open_blobs(url: str) -> BlobBackend:
    """The blob backend a blobs URL names."""
    scheme = _check_blobs_url(url)
    if scheme == "file":
        return FileBlobBackend(_file_path(url))
    if scheme == "memory":
        return MemoryBlobBackend()
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=bool(parts.query)).items()}
    from .blobs.s3 import S3BlobBackend

    backend: BlobBackend = S3BlobBackend(parts.netloc, parts.path.strip("/"), **options)
    return backend


# -- private steps --------------------------------------------------------------------


def _check_metadata_url(url: str) -> None:
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
            raise ValueError(f"a SQLite metadata URL names a file: sqlite:///path/metadata.sqlite3, not {url!r}")
        return
    if scheme.split("+", 1)[0] == "postgresql":
        return
    raise ValueError(f"unsupported metadata URL {url!r}: use sqlite:///… or postgresql+psycopg://…")


def _check_blobs_url(url: str) -> str:
    scheme = url.split(":", 1)[0]
    if scheme == "file" and url.startswith("file:///"):
        return scheme
    if scheme == "memory" and url == "memory://":
        return scheme
    if scheme == "s3" and urlsplit(url).netloc:
        return scheme
    raise ValueError(f"unsupported blobs URL {url!r}: use file:///path, s3://bucket/prefix?… or memory://")


def _file_path(url: str) -> Path:
    return Path(unquote(urlsplit(url).path))


def _sqlite_file(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):].split("?", 1)[0]) if url.startswith("sqlite:///") else None


def _make_sqlite_folder(url: str) -> None:
    database = _sqlite_file(url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)


def _create_sqlite_database(url: str, settings: dict[str, int]) -> None:
    """A missing SQLite database made whole or not at all (castore.creating), without Alembic's steps.

    Any other failure leaves the database to SQLAlchemy below, which makes it or gives its usual
    error; but a full or read-only disk is raised at once (StoreFull, ReadOnlyStore): SQLAlchemy
    would write the database in place and leave it partial or empty, taken for a store next time.
    """
    database = _sqlite_file(url)
    if database is None or "?" in url or database.exists():
        return
    try:
        create_database(database, settings)
    except CREATION_ERRORS as e:
        fault = as_store_fault(e)
        if fault is not None:
            raise fault from e


def _require_existing(where: Location) -> None:
    database = _sqlite_file(where.metadata)
    if database is not None and not database.exists():
        folder = database.parent
        hint = f"castore --root {folder} init" if database.name == METADATA_FILE else "castore init"
        raise StoreNotFound(f"no castore store at {folder} (run: {hint})")


def _open_folder(root: Path, create: bool, read_only: bool | None, settings: Mapping[str, Any]) -> Parts:
    """The parts of the store in folder ``root``: SQLite metadata and a blob folder inside it.

    A writable folder keeps its disk-space reserve; opening it on a full disk (SQLite cannot
    make its shared-memory file at 100 %) frees the reserve and tries once more.
    """
    _require_create(settings, create)
    database = root / METADATA_FILE
    if not database.exists():
        if not create:
            raise StoreNotFound(f"no castore store at {root} (run: castore --root {root} init)")
        root.mkdir(parents=True, exist_ok=True)
    if read_only is None:
        read_only = database.exists() and on_read_only_filesystem(root)
    if read_only:
        return Parts(MetadataRepo(f"sqlite:///{database}", read_only=True),
                     FileBlobBackend(root / BLOBS_DIR, read_only=True), read_only=True)
    reserve = SpaceReserve(root)
    with faults_named():
        try:
            repo = _open_folder_metadata(root, database, create, settings)
        except Exception:
            if shutil.disk_usage(root).free >= reserve.size or not reserve.release():
                raise
            repo = _open_folder_metadata(root, database, create, settings)
    try:
        _require_same_settings(repo, settings, f"at {root}")
        return Parts(repo, FileBlobBackend(root / BLOBS_DIR), reserve)
    except BaseException:
        repo.close()
        raise


def _open_folder_metadata(root: Path, database: Path, create: bool, settings: Mapping[str, Any]) -> MetadataRepo:
    if create:  # create, or upgrade the schema, under the migration lock
        initialize(locate(root), **settings)
    return MetadataRepo(f"sqlite:///{database}")


def _require_create(settings: Mapping[str, Any], create: bool) -> None:
    if settings and not create:
        raise ValueError(f"store settings are chosen at creation: pass create=True with {sorted(settings)}")


def _require_same_settings(repo: MetadataRepo, wanted: Mapping[str, Any], where: str) -> None:
    """ValueError when a setting asked for differs from the existing store's (``where``: for the message)."""
    stored = repo.settings()
    differing = sorted(name for name, value in wanted.items() if name in stored and int(stored[name]) != value)
    if differing:
        kept = ", ".join(f"{name}={stored[name]}" for name in differing)
        raise ValueError(f"the store {where} already exists with {kept}; settings are chosen at creation")


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
