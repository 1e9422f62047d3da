"""``castore compact``: settle stored contents at archive density, where nobody waits for it.

A put stores at zstd level 1 (wire speed); compacting recompresses contents already
stored at a high level (19 by default), oldest first, and keeps the new frame only
where it pays (:func:`keeps`). Decoding costs the same at level 19 as at level 1, so
readers lose nothing.

What it settles: contents kept inline in the metadata (the new frame stays in the row),
and contents the blob backend holds: a new frame small enough to be kept inline moves
into the row (the content leaves the backend); a larger one is published under a new
backend name, ``<key>.<frame>`` (:func:`~castore.keys.frame_name`), never over the old
file, so that the row's switch is the one atomic step (``docs/design.md``, "Compaction").

Each content, one at a time:

1. its stored bytes are read back verified, chunk by chunk (:class:`~castore.reading.BlobReader`),
   and compressed as one zstd frame; given up as soon as the frame grows past what pays;
2. the new frame is decoded and compared with the row's chunk digests;
3. one write transaction switches the row to it (:meth:`~castore.metadata.txn.WriteTxn.settle_frame`,
   a compare-and-swap: a row changed meanwhile by a put, a delete or another compactor is
   left alone);
4. the old file (a content that moved inline, or the previous frame's) is removed after the commit. A
   reader that opened it keeps reading it (POSIX keeps an open file; S3 finishes a GET),
   and one that read the old row but had not opened the file yet reads the row again
   (:meth:`castore.store.Store.open_blob`).

A crash between 3 and 4 leaves a file no row needs, which ``castore check --repair``
removes after its grace, as any orphan. Where it stopped is kept in the store's
``compact_cursor`` setting (the level and the last ``(created, key)`` done), so a run in
slices (``--limit``, ``--budget``) or after a crash continues there.
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypedDict

import zstandard

from .blobs.base import BlobBackend
from .codec import DEFAULT_LEVEL as DEFAULT_INGEST_LEVEL
from .codec import MIN_SAVING, SAMPLE_SIZE, Codec, delta_compressor, pays, zstd_compressor
from .errors import IntegrityError, MissingBlob
from .keys import BlobKey, frame_name
from .metadata.compaction import Backlog
from .metadata.repo import MetadataRepo
from .metadata.rows import BlobRow
from .metadata.txn import WriteConflict
from .reading import BlobReader

__all__ = [
    "CURSOR_SETTING", "DEFAULT_LEVEL", "DELTA_MIN_LEVEL", "DELTA_SHARE", "KEEP_SAVING", "MAX_REFERENCE", "Backlog", "CompactOptions", "CompactReport", "CompactedStore", "backlog", "compact",
    "keeps", "last_level",
]

DEFAULT_LEVEL = 19
"""zstd level contents are settled at: ~8-18 % smaller than level 1 on contest data, decoded as fast."""
KEEP_SAVING = 0.03
"""A new frame replaces a zstd one only when it saves at least this fraction of its bytes.

Below 3 % (what level 19 gains on PDFs, images, archives: 1-4 %) a rewrite buys almost
nothing: an inline row shrinking by less often frees no 4 KiB page at all, and each
switch is a write transaction and, for a file, a delete. A content stored raw must save
:data:`~castore.codec.MIN_SAVING` (5 %), the rule ingest applies: a zstd frame costs
every read a decode and a raw content's cheap seeking."""
DELTA_SHARE = 0.25
"""A delta frame is kept only when it is at most this share of the content's stored bytes.

A delta costs every read of the content a read of its reference too, and keeps the
reference stored while it lives: it must beat a plain level-19 frame by far, which saves
8-18 % over level 1 on contest data, never 75 %. A tail-changed test input (all but its
last ~1 % repeated from another) comes to ~1 % of its stored bytes. A delta that does not
pass is given up as soon as it grows past the bound, and a plain frame is tried instead."""
DELTA_MIN_LEVEL = 15
"""Delta frames are tried at this level and above only: below it zstd's faster match finders
use almost nothing of a large raw-content dictionary (measured on a 2.3 MiB reference and a
tail-changed copy: 251 KB at levels 3 and 9, against 9.7 KB at 15 and 9.5 KB at 19)."""
MAX_REFERENCE = 32 << 20
"""The largest reference a delta frame is made against: its content is held in memory while
compressing and while reading the delta (with zstd's tables at level 19, ~130 MiB)."""
CURSOR_SETTING = "compact_cursor"
BATCH = 100
"""Rows fetched per query."""
PIECE = 1 << 16
"""Bytes compressed between two calls of ``should_stop``: ~0.1 s at level 19 on one core of this
machine (a chunk, 1 MiB, took 1.5 s: too long for a server that must yield "at once")."""


class CompactedStore(Protocol):
    """What compacting needs of a store (:class:`castore.store.Store` has it)."""

    metadata: MetadataRepo
    blobs: BlobBackend
    clock: Callable[[], float]

    def settings(self) -> dict[str, int]: ...

    def open_blob(self, blob: BlobRow, name: str, version: int = 0) -> BlobReader: ...

    def reference_content(self, reference: BlobRow, name: str) -> bytes: ...


class CompactOptions(TypedDict, total=False):
    """The options of :func:`compact` (and :meth:`castore.store.Store.compact`)."""

    level: int
    min_age: float
    limit: int | None
    budget: float | None
    on_content: Callable[[BlobRow, int], None] | None
    should_stop: Callable[[], bool] | None


@dataclass
class CompactReport:
    """What one run of :func:`compact` did."""

    contents: int = 0
    """Contents looked at."""
    settled: int = 0
    """Contents whose row now holds a new, smaller frame."""
    moved_inline: int = 0
    """Of those, contents that left the blob backend."""
    deltas: int = 0
    """Of those, contents now stored as a delta frame against another content (``zdelta``)."""
    delta_bytes_saved: int = 0
    """Stored bytes those deltas saved (their stored size before less after)."""
    bytes_before: int = 0
    """Stored bytes of the contents looked at, before."""
    bytes_after: int = 0
    """Their stored bytes after (unchanged for those not settled)."""
    logical_bytes: int = 0
    """Original bytes of the contents looked at."""
    cpu_seconds: float = 0.0
    seconds: float = 0.0
    finished: bool = False
    """True when no content was left to look at (the cursor reached the newest old-enough content)."""
    metadata_bytes_reclaimed: int = 0
    """Free pages of the metadata file given back afterwards (``castore/metadata/space.py``)."""
    damaged: list[str] | None = None
    """Contents that failed verification, left as they are (``castore check`` names them)."""

    @property
    def mb_per_second(self) -> float:
        """Logical MB (10**6 bytes) looked at per second of wall time."""
        return self.logical_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "contents": self.contents, "settled": self.settled, "moved_inline": self.moved_inline,
            "deltas": self.deltas, "delta_bytes_saved": self.delta_bytes_saved,
            "bytes_before": self.bytes_before, "bytes_after": self.bytes_after, "logical_bytes": self.logical_bytes,
            "cpu_seconds": round(self.cpu_seconds, 3), "seconds": round(self.seconds, 3),
            "mb_per_second": round(self.mb_per_second, 3), "finished": self.finished,
            "metadata_bytes_reclaimed": self.metadata_bytes_reclaimed, "damaged": self.damaged or [],
        }


def keeps(was: BlobRow, new_size: int) -> bool:
    """Whether a new frame of ``new_size`` bytes replaces ``was`` (:data:`KEEP_SAVING`, or MIN_SAVING from raw)."""
    saving = MIN_SAVING if was.codec is Codec.RAW else KEEP_SAVING
    return new_size <= _most(was, saving)


def _most(was: BlobRow, saving: float) -> int:
    return int(was.stored_size * (1 - saving))


def compact(
    store: CompactedStore,
    *,
    level: int = DEFAULT_LEVEL,
    min_age: float = 0.0,
    limit: int | None = None,
    budget: float | None = None,
    on_content: Callable[[BlobRow, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CompactReport:
    """Recompress contents at ``level``, oldest first, from where the last run stopped.

    ``min_age``: contents first stored less than this many seconds ago are left for a
    later run. ``limit``: at most this many contents; ``budget``: stop starting new ones
    after this many seconds. ``on_content(row, stored_after)`` is called after each;
    ``should_stop()`` before each and between the chunks of one (the idle server's way
    to yield at once: a content stopped in the middle is left as it was, looked at again
    by the next run).
    """
    if not 1 <= level <= 22:
        raise ValueError(f"level must be 1-22, not {level}")
    report = CompactReport()
    started, cpu_started = time.monotonic(), time.process_time()
    run = _Run(store, level,
               store.settings()["inline_max"], report, should_stop or (lambda: False))
    cursor = _load_cursor(store.metadata, level)
    created_before = _created_before(store, min_age)
    try:
        while True:
            rows = store.metadata.compact_candidates(cursor, created_before=created_before, limit=BATCH)
            if not rows:
                report.finished = True
                break
            stop = False
            for row, created in rows:
                if (limit is not None and report.contents >= limit) or (
                    budget is not None and time.monotonic() - started >= budget
                ) or run.should_stop():
                    stop = True
                    break
                try:
                    after = _settle(run, row, created)
                except _Stopped:
                    stop = True  # this content is looked at again next time
                    break
                cursor = (created, row.key)
                if on_content is not None:
                    on_content(row, after)
            _save_cursor(store.metadata, level, cursor)
            if stop:
                break
        report.metadata_bytes_reclaimed = store.metadata.reclaim_free_pages()
    finally:
        report.seconds = time.monotonic() - started
        report.cpu_seconds = time.process_time() - cpu_started
    return report


def backlog(store: CompactedStore, *, level: int = DEFAULT_LEVEL, min_age: float = 0.0) -> Backlog:
    """What :func:`compact` at ``level`` has still to look at (for a progress bar, and the server's page)."""
    return store.metadata.compact_backlog(_load_cursor(store.metadata, level), created_before=_created_before(store, min_age))


def last_level(store: CompactedStore) -> int:
    """The level the last run compacted at (:data:`DEFAULT_LEVEL` before any): what "settled" means now."""
    value = store.metadata.settings().get(CURSOR_SETTING, "")
    level = value.split(" ", 1)[0]
    return int(level) if level.isdigit() and 1 <= int(level) <= 22 else DEFAULT_LEVEL


def _created_before(store: CompactedStore, min_age: float) -> int:
    """Contents first stored before this Unix time are old enough (all of them when ``min_age`` is 0)."""
    return int(store.clock() - min_age) + (1 if min_age <= 0 else 0)


@dataclass(frozen=True)
class _Run:
    """What every step of one :func:`compact` run needs."""

    store: CompactedStore
    level: int
    inline_max: int
    report: CompactReport
    should_stop: Callable[[], bool]


class _Stopped(Exception):
    """``should_stop()`` said so in the middle of a content: it is left as it is."""


def _settle(run: _Run, row: BlobRow, created: int) -> int:
    """Recompress one content and switch its row when that pays; its stored size after."""
    report = run.report
    try:
        after = _settled(run, row, created)
    except MissingBlob:
        after = None  # collected meanwhile
    except IntegrityError as e:
        report.damaged = [*(report.damaged or []), f"blob {row.key}: {e}"]
        after = None
    report.contents += 1
    report.bytes_before += row.stored_size
    report.logical_bytes += row.size
    if after is None:
        report.bytes_after += row.stored_size
        return row.stored_size
    report.settled += 1
    report.bytes_after += after
    return after


def _settled(run: _Run, row: BlobRow, created: int) -> int | None:
    """Steps 1-4 for one content: its new stored size, or None when it was left as it is.

    A content beginning like another stored one (:meth:`~castore.metadata.repo.MetadataRepo.delta_reference`)
    is tried first as a delta frame against it; a plain frame when that does not pay.
    """
    after = _as_delta(run, row, created)
    if after is not None:
        return after
    most = _most(row, MIN_SAVING if row.codec is Codec.RAW else KEEP_SAVING)
    # A compressor per content: zstd keeps a compressor's tables (~80 MiB at level 19 for a
    # 12 MiB content) for its life, and a delta's would come on top of them.
    plain = zstandard.ZstdCompressor(level=run.level, write_checksum=True)
    return _written_and_switched(run, row, _Frame(Codec.ZSTD, plain, most))


def _as_delta(run: _Run, row: BlobRow, created: int) -> int | None:
    """``row`` switched to a delta frame (:data:`DELTA_SHARE`): its new stored size, or None."""
    reference = _reference(run, row, created) if run.level >= DELTA_MIN_LEVEL else None
    if reference is None:
        return None
    found, content = reference
    delta = _Frame(Codec.ZSTD_DELTA, delta_compressor(content, run.level, row.size),
                   int(row.stored_size * DELTA_SHARE), found, content)
    after = _written_and_switched(run, row, delta)
    if after is not None:
        run.report.deltas += 1
        run.report.delta_bytes_saved += row.stored_size - after
    return after


@dataclass(frozen=True)
class _Frame:
    """How one new frame is made: its codec, compressor, largest length kept, and reference (a delta's)."""

    codec: Codec
    compressor: zstandard.ZstdCompressor
    most: int
    reference: BlobRow | None = None
    reference_content: bytes | None = None


def _reference(run: _Run, row: BlobRow, created: int) -> tuple[BlobRow, bytes] | None:
    """The content to make ``row`` a delta against, with its content read verified; None when there is none."""
    found = run.store.metadata.delta_reference(row, created, max_size=MAX_REFERENCE)
    if found is None:
        return None
    try:
        return found, run.store.reference_content(found, f"blob {found.key}")
    except IntegrityError:
        return None  # collected meanwhile, or damaged (check names it): a plain frame then


def _written_and_switched(run: _Run, row: BlobRow, new: _Frame) -> int | None:
    """Write ``row``'s content as the frame ``new`` describes, verify it, switch the row: its length, or None."""
    store = run.store
    if row.data is not None:
        out = io.BytesIO()
        if _recompressed_into(run, row, new, out) is None:
            return None
        frame = out.getvalue()
        _verify(row, io.BytesIO(frame), new)
        return len(frame) if _switch(store, row, new, frame, len(frame), 0) else None
    staged = store.blobs.stage()
    try:
        length = _recompressed_into(run, row, new, staged)
        if length is None:
            return None
        staged.finish()
        _verify(row, staged.open(), new)
        if length <= run.inline_max:
            with staged.open() as written:
                inline = written.read()
            if not _switch(store, row, new, inline, length, 0):
                return None
            run.report.moved_inline += 1
        else:
            number = _new_frame(row.frame)
            store.blobs.publish(staged, frame_name(row.key, number))
            if not _switch(store, row, new, None, length, number):
                store.blobs.delete(frame_name(row.key, number))  # a name only this run used
                return None
        store.blobs.delete(frame_name(row.key, row.frame))
        return length
    finally:
        staged.abort()


def _new_frame(old: int) -> int:
    """A frame number for a new file: random, so that two compactors of one content never share a name."""
    while (frame := secrets.randbelow(2**31 - 1) + 1) == old:
        pass
    return frame


def _promising(row: BlobRow, sample: bytes, level: int) -> bool:
    """Whether ``level`` saves enough on a large content's first bytes to be tried on the whole.

    Archives, images and PDFs (half of a contest archive's bytes) gain nothing: a sample of
    :data:`~castore.codec.SAMPLE_SIZE` tells at a small part of the cost of the whole.
    """
    packed = len(zstd_compressor(level).compress(sample))
    if row.codec is Codec.RAW:
        return pays(len(sample), packed)
    return packed <= len(zstd_compressor(DEFAULT_INGEST_LEVEL).compress(sample)) * (1 - KEEP_SAVING)


def _recompressed_into(run: _Run, row: BlobRow, new: _Frame, out: Writable) -> int | None:
    """Write the content of ``row`` to ``out`` as one zstd frame; its length, or None past ``new.most`` bytes.

    The content is read verified, chunk by chunk; memory holds a chunk and the
    compressor's window (and a delta's reference), whatever the content's size.
    """
    most = new.most
    if most <= 0:
        return None
    length = 0
    stream = new.compressor.compressobj(size=row.size)
    with run.store.open_blob(row, f"blob {row.key}") as reader:
        for index, chunk in enumerate(reader.chunks()):
            if index == 0 and new.reference is None and row.size > 2 * SAMPLE_SIZE and not _promising(
                    row, chunk[:SAMPLE_SIZE], run.level):
                return None
            for start in range(0, len(chunk), PIECE):
                if (index or start) and run.should_stop():
                    raise _Stopped()
                if piece := stream.compress(chunk[start:start + PIECE]):
                    out.write(piece)
                    length += len(piece)
                    if length > most:
                        return None
    piece = stream.flush()
    out.write(piece)
    length += len(piece)
    return length if length <= most else None


def _verify(row: BlobRow, frame: BinaryIO, new: _Frame) -> None:
    """Decode ``frame`` and compare it with the row's chunk digests (raises CorruptBlob); closes it."""
    reader = BlobReader(frame, codec=new.codec, key=row.key, size=row.size, stored_size=0,
                        digests=row.digests, name=f"blob {row.key} (recompressed)", version=0,
                        reference=new.reference_content)
    with reader:
        for _ in reader.chunks():
            pass


def _switch(store: CompactedStore, row: BlobRow, new: _Frame, data: bytes | None, stored_size: int, frame: int) -> bool:
    """One write transaction putting the new frame in place of ``row``'s stored bytes; False if the row changed.

    ``data``: the frame kept inline; None for a file published as ``frame``.
    """
    for _ in range(5):
        try:
            with store.metadata.write() as txn:
                return txn.settle_frame(row, codec=new.codec, stored_size=stored_size, data=data, frame=frame,
                                        reference=new.reference)
        except WriteConflict:
            continue  # PostgreSQL: another writer's row; the next try sees it
    return False


class Writable(Protocol):
    """Where a new frame is written: a staged blob, or memory."""

    def write(self, data: bytes, /) -> object: ...


def _load_cursor(metadata: MetadataRepo, level: int) -> tuple[int, str] | None:
    """Where the last run at ``level`` stopped; None (from the start) for another level or none."""
    value = metadata.settings().get(CURSOR_SETTING)
    if value is None:
        return None
    try:
        saved_level, created, key = value.split()
        if int(saved_level) != level:
            return None
        return int(created), BlobKey(key)
    except ValueError:
        return None


def _save_cursor(metadata: MetadataRepo, level: int, cursor: tuple[int, str] | None) -> None:
    if cursor is not None:
        metadata.set_setting(CURSOR_SETTING, f"{level} {cursor[0]} {cursor[1]}")
