"""``castore check``: find what is wrong with a store and, with ``repair``, fix what can be fixed.

The check walks the metadata in pages (``MetadataRepo.SCAN_PAGE`` rows per query,
inline bytes only in small pages), so its memory does not grow with the number of
paths; only what it finds is kept, and at most :data:`MAX_LISTED` items of each list.

What it looks at, in this order:

1. **Reference counts**: each blob's ``refcount`` against the ``versions`` rows naming
   it (invariant 2), and ``versions`` rows naming a key without a blob row. Repair
   recounts inside a write transaction, so no put or delete slips in between.
2. **Paths**: each ``paths`` row has its ``versions`` row naming the same blob
   (invariant 1) and the right ``nversions``. Repair recounts ``nversions``.
   **Totals**: the whole-store totals the write transactions keep
   (:mod:`castore.metadata.totals`) against a recount of every row. Repair recounts
   inside a write transaction and keeps the recount.
3. **Blobs**: every referenced blob has its bytes (inline, or a backend file of the
   recorded stored size); ``verify_content`` also decodes every blob and checks its
   length and key. A blob whose bytes are missing or wrong is *lost*: the paths naming
   it are listed, never dropped — someone may still restore the file.
4. **Orphan files**: backend files no blob row knows (a put killed between publishing
   and committing). Repair removes those older than ``grace`` seconds, deciding inside a
   write transaction (on SQLite no put can be between its publish and its commit then;
   the grace covers databases without a single writer lock).
5. With repair: staging files older than ``grace`` are removed, and missing chunk
   digests are added.

A metadata read error is an error (the exception propagates), never evidence that
something is unreferenced: nothing is deleted on doubt.

Exit status (:attr:`CheckReport.exit_code`): 0 clean, 1 every problem found was
repaired, 2 damage remains. Orphan and staging files are garbage, not damage: they are
counted (and removed by repair) but do not change the status.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .codec import Codec
from .errors import MissingBlob
from .keys import BlobKey, frame_name
from .metadata.rows import BlobState, Usage
from .names import versioned_name
from .sizes import IO_BUFFER

if TYPE_CHECKING:
    from .blobs.base import BlobBackend
    from .metadata.repo import MetadataRepo
    from .metadata.rows import BlobRow
    from .reading import BlobReader

__all__ = [
    "DEFAULT_GRACE",
    "EXIT_CLEAN",
    "EXIT_DAMAGED",
    "EXIT_REPAIRED",
    "MAX_LISTED",
    "CheckProblem",
    "CheckProgress",
    "CheckReport",
    "CheckedStore",
    "DigestsAdded",
    "check",
]

EXIT_CLEAN = 0
EXIT_REPAIRED = 1
EXIT_DAMAGED = 2
DEFAULT_GRACE = 3600.0
"""Seconds an orphan or staging file must be old before repair removes it."""
MAX_LISTED = 10_000
"""At most this many problems and lost names are kept in a report (all are counted)."""
_DAMAGED = re.compile(r"blob (\S+?):")


@dataclass(frozen=True)
class CheckProblem:
    """One thing found wrong. ``kind`` is one of:

    ``refcount`` (a blob's reference count is wrong), ``dangling`` (versions name a key
    with no blob row), ``path`` (a paths row disagrees with its versions rows),
    ``totals`` (a kept whole-store total, named by ``subject``, is not what a recount finds),
    ``missing`` (a referenced blob has no bytes), ``corrupt`` (its bytes are wrong).
    """

    kind: str
    subject: str
    """The blob key or the path concerned."""
    detail: str
    repaired: bool = False

    def __str__(self) -> str:
        return f"{self.subject}: {self.detail}" + (" (repaired)" if self.repaired else "")


class CheckedStore(Protocol):
    """What the check needs of a store: :class:`castore.store.Store` has it.

    A protocol rather than the store's class: the store calls the check (``Store.check``),
    so this module does not import it, not even for its types.
    """

    @property
    def metadata(self) -> MetadataRepo: ...

    @property
    def blobs(self) -> BlobBackend: ...

    def open_blob(self, blob: BlobRow, name: str, version: int = 0) -> BlobReader: ...

    def add_missing_digests(self, *, batch: int = 100) -> DigestsAdded: ...


class DigestsAdded(Protocol):
    """What :meth:`CheckedStore.add_missing_digests` reports (:class:`castore.store.DigestReport`)."""

    @property
    def added(self) -> int: ...

    @property
    def damaged(self) -> list[str]: ...


class CheckProgress(Protocol):
    """What a progress display gets from :func:`check` while it reads blobs."""

    def start(self, blobs: int, logical_bytes: int) -> None:
        """The blob pass begins: how many referenced blobs, and their logical bytes."""

    def advance(self, blobs: int, logical_bytes: int) -> None:
        """``blobs`` more blobs checked, ``logical_bytes`` more bytes decoded and verified."""


@dataclass
class CheckReport:
    """What :func:`check` found and did."""

    repair: bool
    verify_content: bool
    paths: int = 0
    versions: int = 0
    blobs: int = 0
    """Referenced blobs checked."""
    unreferenced_blobs: int = 0
    """Blob rows at refcount 0 (``castore gc`` collects them)."""
    stored_bytes_checked: int = 0
    """Stored bytes found present with their recorded size."""
    verified_bytes: int = 0
    """Logical bytes decoded and checked against their keys (``verify_content``)."""
    seconds: float = 0.0
    blob_seconds: float = 0.0
    """Time spent reading blobs (the verify rate is measured over it)."""
    problems: list[CheckProblem] = field(default_factory=list)
    problem_count: int = 0
    repaired_count: int = 0
    lost: list[str] = field(default_factory=list)
    """Versioned names whose blob is missing or corrupt (kept in the store)."""
    lost_count: int = 0
    orphan_files: int = 0
    """Backend files no row knows."""
    orphan_files_removed: int = 0
    staging_files_removed: int | None = None
    """None without repair (staging files are not counted then)."""
    digests_added: int | None = None
    """Chunk digests added by repair; None when not run."""

    def add(self, problem: CheckProblem) -> None:
        self.problem_count += 1
        self.repaired_count += problem.repaired
        if len(self.problems) < MAX_LISTED:
            self.problems.append(problem)

    def add_lost(self, name: str) -> None:
        self.lost_count += 1
        if len(self.lost) < MAX_LISTED:
            self.lost.append(name)

    @property
    def damage_remains(self) -> bool:
        return self.repaired_count < self.problem_count

    @property
    def exit_code(self) -> int:
        """0 clean, 1 every problem repaired, 2 damage remains."""
        if self.damage_remains:
            return EXIT_DAMAGED
        return EXIT_REPAIRED if self.problem_count else EXIT_CLEAN

    @property
    def verify_rate(self) -> float:
        """Verified bytes per second (0 when nothing was verified)."""
        return self.verified_bytes / self.blob_seconds if self.blob_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (``castore check --json``)."""
        return {
            "repair": self.repair,
            "verify_content": self.verify_content,
            "paths": self.paths,
            "versions": self.versions,
            "blobs": self.blobs,
            "unreferenced_blobs": self.unreferenced_blobs,
            "stored_bytes_checked": self.stored_bytes_checked,
            "verified_bytes": self.verified_bytes,
            "seconds": round(self.seconds, 3),
            "blob_seconds": round(self.blob_seconds, 3),
            "verify_bytes_per_second": round(self.verify_rate),
            "problem_count": self.problem_count,
            "repaired_count": self.repaired_count,
            "problems": [
                {"kind": p.kind, "subject": p.subject, "detail": p.detail, "repaired": p.repaired}
                for p in self.problems
            ],
            "lost_count": self.lost_count,
            "lost": self.lost,
            "orphan_files": self.orphan_files,
            "orphan_files_removed": self.orphan_files_removed,
            "staging_files_removed": self.staging_files_removed,
            "digests_added": self.digests_added,
            "exit_code": self.exit_code,
        }


def check(
    store: CheckedStore,
    *,
    verify_content: bool = False,
    repair: bool = False,
    grace: float = DEFAULT_GRACE,
    progress: CheckProgress | None = None,
) -> CheckReport:
    """Check ``store`` (see the module docstring); with ``repair``, fix what can be fixed."""
    if grace < 0:
        raise ValueError("the grace period cannot be negative")
    return _Checker(store, verify_content=verify_content, repair=repair, grace=grace, progress=progress).run()


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Checker:
    def __init__(
        self, store: CheckedStore, *, verify_content: bool, repair: bool, grace: float, progress: CheckProgress | None
    ) -> None:
        self.store = store
        self.metadata = store.metadata
        self.verify = verify_content
        self.repair = repair
        self.grace = grace
        self.progress = progress
        self.report = CheckReport(repair=repair, verify_content=verify_content)
        self.lost_keys: set[BlobKey] = set()

    def run(self) -> CheckReport:
        started = time.monotonic()
        self._refcounts()
        self._paths()
        counted = self._totals()
        self.report.paths, self.report.versions = counted.files, counted.versions
        self.report.unreferenced_blobs = counted.unreferenced_blobs
        if self.progress is not None:
            self.progress.start(counted.blobs, counted.blob_bytes if self.verify else 0)
        blobs_started = time.monotonic()
        self._blobs()
        self.report.blob_seconds = time.monotonic() - blobs_started
        if self.repair:
            self._digests()
        self._list_lost()
        self._orphans()
        if self.repair:
            self.report.staging_files_removed = self.store.blobs.sweep_staging(time.time() - self.grace)
        self.report.seconds = time.monotonic() - started
        return self.report

    # -- 1. reference counts --------------------------------------------------------

    def _refcounts(self) -> None:
        for batch in _batches(self.metadata.refcount_mismatches(), self.metadata.SCAN_PAGE):
            changed: dict[BlobKey, tuple[int, int]] = {}
            if self.repair:
                with self.metadata.write() as txn:
                    changed = txn.recount_blobs([key for key, stored, _ in batch if stored is not None])
            for key, stored, counted in batch:
                if stored is None:
                    self.lost_keys.add(key)
                    detail = f"{counted} versions name blob {key}, which has no row"
                    self.report.add(CheckProblem("dangling", key, detail))
                    continue
                detail = f"refcount {stored}, but {counted} versions name it"
                if key in changed:
                    detail += f"; set to {changed[key][1]}"
                self.report.add(CheckProblem("refcount", key, detail, repaired=self.repair))

    # -- 2. paths ---------------------------------------------------------------------

    def _paths(self) -> None:
        for batch in _batches(self.metadata.path_mismatches(), self.metadata.SCAN_PAGE):
            for path, detail in batch:
                repaired = False
                if self.repair and detail.startswith("nversions"):
                    with self.metadata.write() as txn:
                        txn.recount_path(path)
                    repaired = True
                self.report.add(CheckProblem("path", path, detail, repaired=repaired))

    def _totals(self) -> Usage:
        """The kept totals against a recount; a store written meanwhile is compared under the write lock
        when repairing, and not at all otherwise (its totals moved while counting: no evidence either way).

        Returns the recount: the report's counts of paths, versions and blobs come from it (counting
        them again cost two more scans of the tables).
        """
        kept = self.metadata.usage()
        counted = self.metadata.recount_usage()
        if kept == counted or (not self.repair and self.metadata.usage() != kept):
            return counted
        if self.repair:
            with self.metadata.write() as txn:
                kept, counted = txn.totals_recounted()
        for name, value in asdict(kept).items():
            if value != getattr(counted, name):
                detail = f"kept {value}, a recount finds {getattr(counted, name)}"
                self.report.add(CheckProblem("totals", name, detail, repaired=self.repair))
        return counted

    # -- 3. blobs ---------------------------------------------------------------------

    def _blobs(self) -> None:
        after: BlobKey | None = None
        while page := self.metadata.blob_page(after, with_data=self.verify):
            for blob in page:
                self._blob(blob)
                self.report.blobs += 1
                if self.progress is not None:
                    self.progress.advance(1, blob.row.size if self.verify else 0)
            after = page[-1].key

    def _blob(self, blob: BlobState) -> None:
        """Check one referenced blob: its bytes are there, of the right size (and content)."""
        if blob.inline_length is not None:
            if blob.inline_length != blob.row.stored_size:
                self._lose(blob, "corrupt", f"inline bytes are {blob.inline_length} long, {blob.row.stored_size} recorded")
                return
        else:
            try:
                size = self.store.blobs.stored_size(frame_name(blob.key, blob.row.frame))
            except MissingBlob:
                if self._still_referenced(blob.key):
                    self._lose(blob, "missing", "its bytes are missing from the blob backend")
                return
            if size != blob.row.stored_size:
                self._lose(blob, "corrupt", f"blob file has {size} bytes, {blob.row.stored_size} recorded")
                return
        problem = self._reference_problem(blob.row)
        if problem is not None:
            if self._still_referenced(blob.key):
                self._lose(blob, "corrupt", problem)
            return
        self.report.stored_bytes_checked += blob.row.stored_size
        if not self.verify:
            return
        try:
            with self.store.open_blob(blob.row, "the store") as reader:
                while reader.read(IO_BUFFER):
                    pass
        except Exception as e:  # noqa: BLE001 - any failure to read a blob back is a finding
            if not isinstance(e, MissingBlob) or self._still_referenced(blob.key):
                self._lose(blob, "corrupt", f"{type(e).__name__}: {e}")
            return
        self.report.verified_bytes += blob.row.size

    def _reference_problem(self, row: BlobRow) -> str | None:
        """What keeps a delta frame (``castore compact``) from decoding, short of reading it; None if nothing.

        Its reference must have a row that is no delta itself, and its stored bytes.
        """
        if (row.codec is Codec.ZSTD_DELTA) != (row.base is not None):
            return f"codec {row.codec.value} does not go with reference {row.base}"
        if row.base is None:
            return None
        found = self.metadata.dedup_candidate(row.base)
        if found is None:
            return f"the reference {row.base} of its delta frame is missing"
        if found.blob.base is not None:
            return f"the reference {row.base} of its delta frame is a delta itself"
        if found.blob.data is None:
            try:
                self.store.blobs.stored_size(frame_name(found.blob.key, found.blob.frame))
            except MissingBlob:
                return f"the bytes of its delta frame's reference {row.base} are missing"
        return None

    def _still_referenced(self, key: BlobKey) -> bool:
        """False when a concurrent delete and gc removed the blob since it was listed."""
        refcount = self.metadata.refcount(key)
        return refcount is not None and refcount > 0

    def _lose(self, blob: BlobState, kind: str, detail: str) -> None:
        self.lost_keys.add(blob.key)
        self.report.add(CheckProblem(kind, blob.key, detail))

    def _list_lost(self) -> None:
        """Name every retained version whose blob is lost (one scan of versions per batch)."""
        keys = sorted(self.lost_keys)
        for start in range(0, len(keys), self.metadata.SCAN_PAGE):
            for path, version, _ in self.metadata.versions_naming(keys[start:start + self.metadata.SCAN_PAGE]):
                self.report.add_lost(versioned_name(path, version))

    # -- 4. orphan files ---------------------------------------------------------------

    def _orphans(self) -> None:
        for batch in _batches(iter(self.store.blobs), self.metadata.SCAN_PAGE):
            known = self.metadata.file_blobs(batch)
            old: list[BlobKey] = []
            cutoff = time.time() - self.grace  # file times are wall-clock times
            for key in batch:
                if key in known:
                    continue
                try:
                    modified = self.store.blobs.modified(key)
                except MissingBlob:
                    continue  # removed meanwhile (by gc)
                self.report.orphan_files += 1
                if modified < cutoff:
                    old.append(key)
            if self.repair and old:
                with self.metadata.write() as txn:
                    known = txn.file_blobs(old)  # decided under the write lock
                    for key in old:
                        if key not in known:
                            self.store.blobs.delete(key)
                            self.report.orphan_files_removed += 1

    # -- 5. chunk digests --------------------------------------------------------------

    def _digests(self) -> None:
        """Blobs written before chunk digests (revision 0002) get theirs, each verified first."""
        result = self.store.add_missing_digests()
        self.report.digests_added = result.added
        for damage in result.damaged:  # "blob <key>: <why>"
            match = _DAMAGED.match(damage)
            key = BlobKey(match.group(1)) if match else None
            if key is not None and key in self.lost_keys:
                continue  # found by the blob pass already
            if key is not None:
                self.lost_keys.add(key)
            self.report.add(CheckProblem("corrupt", key or "?", str(damage)))
