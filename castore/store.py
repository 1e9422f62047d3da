"""The store: Filetracker semantics over a blob backend and a metadata database.

Every public method checks its input first (nothing is changed by a bad name),
then does its I/O in small private steps. The rules live here and in the put's
steps (:mod:`castore.putting`, mixed into :class:`Store`), and only there:

* ``put`` with a version older than the current one is ignored and returns the
  current versioned name; an equal version replaces the content; no version means
  "now" (Unix seconds).
* ``delete`` with a version removes the path (and its history) only when that
  version is not older than the current one.
* the last ``retention`` versions of each path stay readable as ``path@version``.

A store is made of its two opened parts (:meth:`Store.of`); :meth:`Store.open` and
:func:`castore.open_store` open them (:func:`castore.location.open_parts`).
``docs/design.md`` explains why the order of steps keeps the store consistent when
a process is killed at any point, and when several processes share one store.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Self, Unpack

from . import compacting, maintenance
from .blobs.base import BlobBackend
from .codec import Codec
from .compacting import CompactOptions, CompactReport
from .digests import content_digest
from .errors import (
    CorruptBlob,
    IntegrityError,
    InvalidVersion,
    MissingBlob,
    NotFound,
    ReadOnlyStore,
    StoreFull,
    StoreNotFound,
    VersionNotFound,
)
from .faults import faults_named, is_disk_full
from .ingest import Ingest, Source
from .keys import BlobKey, Hasher, KeyFunction, etag, frame_name, xxh3_key
from .layout import BLOBS_DIR, DEFAULT_INLINE_MAX, DEFAULT_RETENTION, METADATA_FILE, SETTINGS
from .location import Parts, open_parts
from .metadata.repo import MetadataRepo
from .metadata.report import DedupReport
from .metadata.rows import BlobRow, Entry, Usage
from .names import check_prefix, check_version, child_range, parse_name, versioned_name
from .putting import PutSteps
from .reading import BlobReader
from .reserve import SpaceReserve

__all__ = [
    "BLOBS_DIR",
    "DEFAULT_INLINE_MAX",
    "DEFAULT_RETENTION",
    "METADATA_FILE",
    "SETTINGS",
    "DigestReport",
    "FileInfo",
    "GcReport",
    "Store",
]

@dataclass(frozen=True)
class FileInfo:
    """One version of one stored file."""

    path: str
    version: int
    size: int
    key: BlobKey
    stored_size: int
    codec: str
    digest: str | None = None
    """The content digest (:func:`castore.digests.content_digest`), when known."""

    @property
    def name(self) -> str:
        """The versioned name, ``path@version``."""
        return versioned_name(self.path, self.version)

    @classmethod
    def of(cls, entry: Entry) -> FileInfo:
        blob = entry.blob
        digest = None if blob.digests is None else content_digest(blob.digests)
        return cls(entry.path, entry.version, blob.size, blob.key, blob.stored_size, blob.codec.value, digest)


@dataclass(frozen=True)
class GcReport:
    """What a garbage collection removed."""

    blobs: int
    stored_bytes: int
    staging_files: int
    metadata_bytes_reclaimed: int = 0
    """Free pages of the metadata file given back to the filesystem (``castore/metadata/space.py``)."""


@dataclass(frozen=True)
class DigestReport:
    """What :meth:`Store.add_missing_digests` did: digests added, and blobs that failed verification."""

    added: int
    damaged: list[str]


class Store(PutSteps):
    """A content-addressed, deduplicating file store with Filetracker names and versions."""

    def __init__(
        self,
        metadata: MetadataRepo,
        blobs: BlobBackend,
        *,
        clock: Callable[[], float] = time.time,
        key_function: KeyFunction = xxh3_key,
        reserve: SpaceReserve | None = None,
        read_only: bool = False,
    ) -> None:
        settings = metadata.settings()
        if "seed" not in settings:
            raise StoreNotFound(f"the metadata at {metadata.where} has no castore store (run castore init)")
        self.metadata = metadata
        self.blobs = blobs
        self.clock = clock
        self.seed = int(settings["seed"])
        self.retention = int(settings["retention"])
        self.key_function = key_function
        self._ingest = Ingest(
            self.seed,
            blobs,
            inline_max=int(settings["inline_max"]),
            level=int(settings["zstd_level"]),
            key_function=key_function,
        )
        self.read_only = read_only
        """True when opened read-only: reads work, every write raises ReadOnlyStore."""
        self._last_reference: tuple[BlobKey, bytes, bytes] | None = None
        """The last delta reference read: key, chunk digests, content (see :meth:`reference_content`)."""
        self.reserve = reserve
        """Space kept aside so that deletes work on a full disk (``castore/reserve.py``), made here."""
        if reserve is not None:
            reserve.ensure()

    # -- opening ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        create: bool = False,
        *,
        clock: Callable[[], float] = time.time,
        read_only: bool | None = None,
        key_function: KeyFunction = xxh3_key,
        **settings: Any,
    ) -> Store:
        """Open the store in folder ``root``: the short spelling of :func:`castore.open_store` (``root``).

        With ``create=True`` a missing store is made with the given ``settings``
        (:data:`SETTINGS`: ``retention``, ``inline_max``, ``zstd_level``); an existing
        store keeps its own, and a setting that differs from it raises ValueError rather
        than being ignored. An unknown setting (a typo such as ``retension``) raises
        TypeError. With ``create`` an older store's schema is upgraded; without, it raises
        SchemaOutdated (run ``castore migrate-schema``).

        ``read_only``: True opens the store for reading only (nothing is written, not
        even a lock file); None (the default) does so when ``root`` is on a read-only
        filesystem.

        ``key_function`` is for tests (see :mod:`castore.keys`); a store must always be
        opened with the same one.
        """
        parts = open_parts(root, create=create, read_only=read_only, settings=settings)
        return cls.of(parts, clock=clock, key_function=key_function)

    @classmethod
    def of(cls, parts: Parts, *, clock: Callable[[], float] = time.time, key_function: KeyFunction = xxh3_key) -> Store:
        """The store made of opened parts (:func:`castore.location.open_parts`); they are closed if it cannot be."""
        try:
            return cls(parts.metadata, parts.blobs, clock=clock, key_function=key_function, reserve=parts.reserve,
                       read_only=parts.read_only)
        except BaseException:
            parts.close()
            raise

    def settings(self) -> dict[str, int]:
        """The store's settings chosen at creation: ``retention``, ``inline_max``, ``zstd_level``."""
        return {"retention": self.retention, "inline_max": self._ingest.inline_max, "zstd_level": self._ingest.level}

    def close(self) -> None:
        self.metadata.close()
        self.blobs.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------

    def put(
        self,
        name: str,
        source: Source,
        version: int | None = None,
        *,
        expected_size: int | None = None,
    ) -> str:
        """Store ``source`` under ``name``; return the versioned name now current.

        ``name`` may carry ``@version``, or ``version`` may be given (not both with
        different values); without either the version is the current Unix time. An
        older version than the current one is ignored: the current name is returned
        and the source is not read. A name is a file or a folder, never both: a new path
        that is a folder of the store, or below a file, raises PathConflict (nothing stored).
        """
        path, version = self._put_target(name, version)
        self._check_room()
        with faults_named():
            return self._put(path, version, source, expected_size)

    def put_zstd(
        self, name: str, frame: BinaryIO, version: int | None = None, *, size: int, max_window: int | None = None
    ) -> str:
        """Store a content given as a zstd frame decoding to ``size`` bytes; like :meth:`put`.

        The frame is decoded to be hashed and checked (SourceError, storing nothing, if
        it does not decode to exactly ``size`` bytes, or asks for a window above
        ``max_window``) and kept as the stored bytes, so a content a client compressed
        is not compressed again.
        """
        path, version = self._put_target(name, version)
        self._check_room()
        with faults_named():
            return self._put_zstd(path, version, frame, size, max_window)

    def put_existing(self, name: str, key: BlobKey, version: int | None = None) -> str | None:
        """Point ``name`` at the content already stored under ``key``, without reading it.

        For imports that know two paths share one content (Filetracker's link targets).
        Returns the versioned name now current, like :meth:`put`, or None when no live
        blob has that key (then the caller must :meth:`put` the bytes). Refused like a put
        (StoreFull) while the space kept for deletes is in use.
        """
        path, version = self._put_target(name, version)
        self._check_room()
        with faults_named():
            return self._put_existing(path, version, key)

    def put_many(
        self, items: Sequence[tuple[str, int | None, bytes, int | None]], *, max_window: int | None = None
    ) -> builtins.list[str]:
        """Store small contents as :meth:`put` would, one after another, with one commit; the names now current.

        Each item is ``(name, version, data, zstd_size)``: ``data`` is the content, or,
        when ``zstd_size`` is given, zstd frame(s) decoding to that many bytes (kept as
        the stored bytes, as by :meth:`put_zstd`). Every content must fit inline in its
        metadata row (``inline_max``): ValueError otherwise, before anything is stored.
        Names are checked and contents hashed and compressed first, outside any
        transaction (a bad item stores nothing); then the puts are recorded in order, on
        SQLite in one transaction (:meth:`MetadataRepo.batch`: a later error stores none
        of them), elsewhere each with its own commit. For :mod:`castore.batch`.
        """
        targets = [self._put_target(name, version) for name, version, _, _ in items]
        self._check_room()
        with faults_named():
            return self._put_many(items, targets, max_window)

    def link_new(self, links: Sequence[tuple[str, int, BlobKey]]) -> builtins.list[bool]:
        """:meth:`put_existing` of many new paths in one transaction; whether each was linked.

        Each of ``links`` is ``(name, version, key)``: a name not stored yet, with no file
        or folder in its way, is pointed at the live blob ``key``; any other (stored
        already, in the way, or its blob gone) is left for :meth:`put_existing` or
        :meth:`put` one by one. For an import's links (:mod:`castore.migration.importer`):
        a path-per-transaction import queued on SQLite's write lock.
        """
        rows = [(*self._put_target(name, version), key) for name, version, key in links]
        self._check_room()

        def link() -> builtins.list[bool]:
            with self.metadata.write() as txn:
                return txn.link_new_paths(rows)

        with faults_named():
            linked: builtins.list[bool] = self._retrying(link)
        return linked

    def delete(self, name: str, version: int | None = None) -> bool:
        """Remove ``name`` with its whole history; return False when ignored.

        With a version (in the name or as ``version``) the path is removed only if
        that version is not older than the current one. Raises NotFound when the
        path is not stored.
        """
        path, version = self._name_and_version(name, version)
        self._check_writable()
        deleted: bool = self._with_reserve(lambda: self._retrying(lambda: self._delete(path, version)))
        return deleted

    def _delete(self, path: str, version: int | None) -> bool:
        with self.metadata.write() as txn:
            current = txn.current(path)
            if current is None:
                raise NotFound(path)
            if version is not None and version < current.version:
                return False
            self._release(txn, txn.drop_path(path))
        return True

    def _with_reserve(self, operation: Callable[[], Any]) -> Any:
        """Run a space-freeing ``operation``; on a full disk, free the reserve and run it again."""
        with faults_named():
            try:
                return operation()
            except Exception as e:
                if self.reserve is None or not is_disk_full(e):
                    raise
                self.reserve.release()  # if still there: _make_room may have lent it already
            try:
                return operation()
            finally:
                self.reserve.ensure()  # back as soon as there is room (after gc, usually)

    def _check_room(self) -> None:
        """Refuse a put while the space kept for deletes is in use (the disk was full)."""
        if self.reserve is not None and not self.reserve.ensure() and self.reserve.short_of_space():
            raise StoreFull(
                "no space left on the store's disk (the space kept for deletes is in use: delete, then castore gc)"
            )

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStore("the store is open read-only: it can be listed and read, not changed")

    # -- reading ------------------------------------------------------------------

    def open_file(self, name: str) -> BlobReader:
        """A binary stream of the content of ``name`` (current version, or any retained ``@version``).

        A version the path does not retain raises VersionNotFound, naming the retained
        ones; a path that does not exist, NotFound. Every chunk is verified before it is read out (CorruptBlob otherwise). A blob
        written before chunk digests existed is verified whole first, once.
        """
        entry = self._entry(name)
        try:
            return self.open_entry(entry)
        except MissingBlob:
            # A concurrent delete and garbage collection may have removed it since
            # the lookup: look again, and report what is true now.
            again = self._entry(name)
            if again.blob.key == entry.blob.key:
                raise
            return self.open_entry(again)

    def lookup(self, name: str) -> Entry:
        """The metadata of ``name`` (current version, or ``@version``); NotFound if absent."""
        return self._entry(name)

    def open_entry(self, entry: Entry) -> BlobReader:
        """A verified reader of an entry from :meth:`lookup` (see :meth:`open_file`)."""
        if entry.blob.digests is None:
            entry = dataclasses.replace(entry, blob=self._add_digests(entry.blob, entry.path))
        return self._reader(entry)

    def etag(self, key: BlobKey) -> str:
        """An HTTP ETag for a blob: a keyed one-way function of its key (the key stays secret)."""
        return etag(self.seed, key)

    def read_bytes(self, name: str) -> bytes:
        """The whole content of ``name``."""
        with self.open_file(name) as reader:
            return reader.read()

    def stat(self, name: str) -> FileInfo:
        """What is stored under ``name`` (current version, or ``@version``)."""
        return FileInfo.of(self._entry(name))

    def exists(self, name: str) -> bool:
        """True when ``name`` (or that version of it) is stored."""
        try:
            self._entry(name)
        except NotFound:
            return False
        return True

    def versions(self, name: str) -> list[FileInfo]:
        """Every retained version of a path, newest first; NotFound if none."""
        path, _ = self._name_and_version(name, None)
        history = self.metadata.history(path)
        if not history:
            raise NotFound(path)
        return [FileInfo.of(entry) for entry in history]

    def list(self, prefix: str = "/", *, max_version: int | None = None) -> Iterator[FileInfo]:
        """Current files below directory ``prefix``, in path order.

        ``max_version`` keeps only files whose current version is not newer.
        """
        _, low, high = self._listed_range(prefix, max_version)
        for entry in self.metadata.list(low, high, max_version):
            yield FileInfo.of(entry)

    @staticmethod
    def _listed_range(prefix: str, max_version: int | None) -> tuple[str, str, str]:
        """A listing's checked folder (ending with ``/``) and its path range; ``max_version`` checked."""
        directory = check_prefix(prefix)
        if max_version is not None:
            check_version(max_version)
        low, high = child_range(directory)
        return directory, low, high

    def list_folder(self, folder: str, *, max_version: int | None = None) -> builtins.list[str]:
        """Paths of the current files below ``folder``, relative to it (Filetracker's list).

        Raises NotFound when ``folder`` holds no file at all (it is not a folder here),
        whatever ``max_version`` filters out; the root ``/`` is always a folder.
        """
        return builtins.list(self.iter_folder(folder, max_version=max_version))

    def iter_folder(self, folder: str, *, max_version: int | None = None) -> Iterator[str]:
        """:meth:`list_folder` a page at a time: memory holds one page, however large the folder.

        Raises NotFound here, before any name is yielded (a server answers 400 before its body).
        """
        directory, low, high = self._listed_range(folder, max_version)
        if directory != "/" and not self.metadata.any_path(low, high):
            raise NotFound(folder, f"not a folder: {folder}")
        return (path[len(directory):] for path in self.metadata.paths(low, high, max_version))

    def children(
        self, folder: str = "/", *, after: str | None = None, limit: int = 1000
    ) -> builtins.list[tuple[str, FileInfo | None]]:
        """Up to ``limit`` names directly below ``folder``, in name order, resuming after ``after``.

        Each is ``(name, info)``: a file with its current version, or ``("sub/", None)``
        for a subfolder. Unlike :meth:`list`, the cost does not grow with the files
        below the subfolders.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        low, high = child_range(check_prefix(folder))
        found = self.metadata.children(low, high, after=after, limit=limit)
        return [(child.name, None if child.entry is None else FileInfo.of(child.entry)) for child in found]

    def same_content(self, name: str, *, limit: int = 20) -> builtins.list[str]:
        """Up to ``limit`` other retained versions (``path@version``) with the content of ``name``."""
        entry = self._entry(name)
        found = self.metadata.paths_naming(entry.blob.key, limit=limit + 1)
        others = [versioned_name(p, v) for p, v in found if (p, v) != (entry.path, entry.version)]
        return others[:limit]

    def usage(self) -> Usage:
        """Logical bytes (current and retained), stored bytes, blob counts, dedup ratio."""
        return self.metadata.usage()

    def overhead(self) -> dict[str, int | None]:
        """What the store takes on disk beyond its stored bytes, in bytes (``castore du``).

        ``tables``: the metadata file less the inline contents and free pages (paths,
        versions, indexes, page fill; None off SQLite); ``free_pages``: free pages of the
        file (None off SQLite), ``incremental``: 1 when they are given back after compact
        and gc; ``file_slack``: blob files rounded up to 4 KiB blocks (an estimate);
        ``reserve``: the space reserve file; ``total``: their sum.
        """
        space = self.metadata.space()
        tables = None
        if space.database_bytes is not None and space.free_bytes is not None:
            tables = space.database_bytes - space.free_bytes - space.inline_bytes
        reserve = self.reserve.size if self.reserve is not None else 0
        parts = (tables or 0, space.free_bytes or 0, space.file_slack_bytes, reserve)
        return {"tables": tables, "free_pages": space.free_bytes,
                "incremental": None if space.incremental is None else int(space.incremental),
                "file_slack": space.file_slack_bytes, "reserve": reserve, "total": sum(parts)}

    def dedup_report(self, prefix: str = "/", *, depth: int = 1, top: int = 10) -> DedupReport:
        """Which groups below folder ``prefix`` share which stored bytes.

        Paths are grouped by their first ``depth`` segments below ``prefix``; each group
        says what deleting it would free and what it shares with paths outside it, and
        the ``top`` most shared contents are listed with the groups naming them
        (definitions in :mod:`castore.metadata.report`).
        """
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative integer, not {depth!r}")
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise ValueError(f"top must be a non-negative integer, not {top!r}")
        low, high = child_range(check_prefix(prefix))
        return self.metadata.dedup_report(low, high, depth=depth, top=top)

    # -- maintenance ---------------------------------------------------------------

    def collect_garbage(
        self, *, staging_grace: float = 3600.0, batch: int = 500, on_batch: Callable[[int, int], None] | None = None
    ) -> GcReport:
        """Remove blobs no version references, and staging files older than the grace.

        Safe while other processes put and delete: a blob is forgotten only in a
        transaction that sees it unreferenced (``docs/design.md``, "Garbage collection").
        A staging file a live writer holds is never removed, whatever the grace.
        Works ``batch`` blobs per transaction (memory holds one batch); ``on_batch(blobs,
        bytes)`` is told what each batch removed (a progress bar).
        """
        self._check_writable()
        report: GcReport = self._with_reserve(lambda: self._collect(staging_grace, batch, on_batch))
        return report

    def _collect(self, staging_grace: float, batch: int, on_batch: Callable[[int, int], None] | None) -> GcReport:
        removed = freed = 0
        while True:
            counted, found = self._retrying(lambda: self._collect_batch(batch))
            removed += counted[0]
            freed += counted[1]
            if on_batch is not None:
                on_batch(*counted)
            if found < batch and not counted[0]:
                break  # else once more: a content kept only for a delta removed now is collectable
        staging = self.blobs.sweep_staging(self.clock() - staging_grace)
        return GcReport(removed, freed, staging, self.metadata.reclaim_free_pages())

    def add_missing_digests(self, *, batch: int = 100) -> DigestReport:
        """Verify every live blob that has no chunk digests yet (written before 0002) and record them.

        Blobs that fail verification are listed in the report and left as they are.
        Safe while the store is in use; ``castore check --repair`` calls it.
        """
        added, damaged, after = 0, [], ""
        while rows := self.metadata.blobs_without_digests(after, batch):
            for blob in rows:
                after = blob.key
                try:
                    self._add_digests(blob, f"blob {blob.key}")
                    added += 1
                except IntegrityError as e:
                    message = str(e)  # "blob <key>: the stored content ...", or a MissingBlob's
                    damaged.append(message if message.startswith(f"blob {blob.key}:") else f"blob {blob.key}: {message}")
        return DigestReport(added, damaged)

    def _collect_batch(self, batch: int) -> tuple[tuple[int, int], int]:
        """One transaction of garbage collection: ``((blobs removed, bytes freed), candidates seen)``."""
        removed = freed = 0
        with self.metadata.write() as txn:
            candidates = txn.unreferenced_blobs(batch, int(self.clock()))
            for key, inline, stored_size, frame in candidates:
                # The row goes first: a file is deleted only once the database agreed
                # (still unreferenced, no lease); if the commit then fails, a row at 0
                # without its file is allowed (a reviving put leases it and publishes).
                if not txn.forget_blob(key):
                    continue
                if not inline:
                    self.blobs.delete(frame_name(key, frame))
                removed += 1
                freed += stored_size
        return (removed, freed), len(candidates)

    def compact(self, **options: Unpack[CompactOptions]) -> CompactReport:
        """Recompress stored contents at a higher zstd level where it pays, oldest first (:func:`castore.compacting.compact`).

        Safe while other processes read, put, delete and collect; continues where the last
        run stopped. ``level`` (19), ``min_age`` (seconds: fresh contents are left alone),
        ``limit`` (contents) and ``budget`` (seconds) cut it into slices.
        """
        self._check_writable()
        return compacting.compact(self, **options)

    def check(self) -> builtins.list[str]:
        """Verify every referenced blob's content and the reference counts; return the problems.

        Changes nothing. ``castore check`` (:func:`castore.maintenance.check`) has the
        counts, the lost paths and the repairs.
        """
        return [str(problem) for problem in maintenance.check(self, verify_content=True).problems]

    # -- private steps ---------------------------------------------------------------

    def _put_target(self, name: str, version: int | None) -> tuple[str, int]:
        """The path and version a put writes (now, without one); refuses on a read-only store."""
        path, given = self._name_and_version(name, version)
        self._check_writable()
        return path, int(self.clock()) if given is None else given

    def _name_and_version(self, name: str, version: int | None) -> tuple[str, int | None]:
        parsed = parse_name(name)
        if version is not None:
            check_version(version)
            if parsed.version is not None and parsed.version != version:
                raise InvalidVersion(f"{name!r} names version {parsed.version}, but version={version} was given")
            return parsed.path, version
        return parsed.path, parsed.version

    def _entry(self, name: str) -> Entry:
        path, version = self._name_and_version(name, None)
        entry = self.metadata.entry(path, version)
        if entry is not None:
            return entry
        if version is not None:
            retained = [e.version for e in self.metadata.history(path)]
            if retained:
                raise VersionNotFound(path, version, retained)
        raise NotFound(path)

    def _stored_bytes(self, blob: BlobRow) -> BinaryIO:
        """The stored bytes of a blob: its inline row data, or its backend file."""
        return io.BytesIO(blob.data) if blob.data is not None else self.blobs.open(frame_name(blob.key, blob.frame))

    def _reader(self, entry: Entry) -> BlobReader:
        return self.open_blob(entry.blob, versioned_name(entry.path, entry.version), entry.version)

    def open_blob(self, blob: BlobRow, name: str, version: int = 0) -> BlobReader:
        """A verifying reader of one blob row's content (``name`` is for error messages).

        A file missing because ``castore compact`` switched the content to another frame
        after ``blob`` was read is read as the row is now (same content: same chunk digests).
        """
        try:
            stored = self._stored_bytes(blob)
        except MissingBlob:
            now = self.metadata.dedup_candidate(blob.key)
            if now is None or (now.blob.size, now.blob.digests) != (blob.size, blob.digests) or (
                now.blob.frame, now.blob.data is None) == (blob.frame, True):
                raise
            blob = now.blob
            stored = self._stored_bytes(blob)
        try:
            # a zdelta frame without a reference is damage too (CorruptBlob, not a decoder's ValueError)
            needs = blob.base is not None or blob.codec is Codec.ZSTD_DELTA
            reference = self._reference_content(blob, name) if needs else None
        except BaseException:
            stored.close()
            raise
        return BlobReader(
            stored,
            codec=blob.codec,
            reference=reference,
            key=blob.key,
            size=blob.size,
            stored_size=blob.stored_size,
            digests=blob.digests,
            name=name,
            version=version,
            key_hasher=lambda: Hasher(self.seed, self.key_function),
            refetch=None if blob.data is not None else lambda: self._refetch(frame_name(blob.key, blob.frame)),
        )

    def _reference_content(self, delta: BlobRow, name: str) -> bytes:
        """The content a delta frame decodes against, read verified (its own chunk digests).

        The reference is never itself a delta (``WriteTxn.settle_frame``) and gc keeps it
        while a row names it; one missing or not fit to be a reference is damage. Read
        through :meth:`reference_content`, which keeps the last one.
        """
        found = self.metadata.dedup_candidate(delta.base) if delta.base is not None else None
        if found is None or found.blob.base is not None or found.blob.digests is None:
            problem = "is missing" if found is None else "is no content to decode against"
            raise CorruptBlob(f"{name}: the reference {delta.base} of its delta frame {problem}")
        return self.reference_content(found.blob, f"{name} (its reference {delta.base})")

    def reference_content(self, reference: BlobRow, name: str) -> bytes:
        """The whole content of ``reference`` (a delta frame's, or one compact makes a delta
        against), read verified; the last one read is kept with the chunk digests it matched,
        so that the deltas of one reference, read or made one after another, read it once
        (at most ``compacting.MAX_REFERENCE``, 32 MiB; dropped before another is read, so
        that two are never held for this)."""
        last = self._last_reference  # one tuple, read once: threads may replace it meanwhile
        if last is not None and (last[0], last[1]) == (reference.key, reference.digests):
            return last[2]  # the tail-changed inputs of one test folder share a reference: read once
        self._last_reference = None
        with self.open_blob(reference, name) as reader:
            content = reader.readall()
        if reference.digests is not None:
            self._last_reference = (reference.key, reference.digests, content)
        return content

    def _refetch(self, key: BlobKey) -> BinaryIO | None:
        """The stored bytes of ``key`` again, past the backend's local copy (None when it keeps none)."""
        return self.blobs.open(key) if self.blobs.refresh(key) else None

    def _add_digests(self, blob: BlobRow, name: str) -> BlobRow:
        """Read a blob without digests whole, check it against its key, and record its digests."""
        with self.open_blob(blob, name, 0) as reader:
            for _ in reader.chunks():
                pass
            digests = reader.computed_digests
        assert digests is not None
        if not self.read_only:  # a read-only store verifies the same way, it just cannot remember
            self.metadata.set_digests(blob.key, blob.size, digests)
        return dataclasses.replace(blob, digests=digests)
