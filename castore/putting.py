"""A put, as one sequence of steps: what ``Store.put``, ``put_zstd``, ``put_many`` and ``put_existing`` do.

The store's public methods (:class:`castore.store.Store`) check the name and version,
refuse on a read-only store or a full disk, and name disk faults; then every put takes
these steps, in this order (``docs/design.md``, "Write order", says why the order keeps
the store whole when a process is killed at any point):

1. **skip** (:meth:`PutSteps._newer_than`): a path whose current version is newer keeps it;
   a stream is then not even read;
2. **prepare** (:mod:`castore.ingest`): hash, maybe compress, keep small contents for
   the row and stage large ones; a large source that reads twice is hashed first and
   not written at all when a live blob holds exactly this content (steps 3 and 4, asked
   through :meth:`PutSteps._find_same`);
3. **settle** the key (:meth:`PutSteps._settle`, :meth:`PutSteps._probe`): the first probe
   key that is free, or whose live blob holds this content;
4. **compare bytes** (:meth:`PutSteps._holds`): a live blob counts only when its
   sizes, digests and every byte are this content's;
5. **lease and publish** (:meth:`PutSteps._lease_and_publish`, a new large blob only):
   lease the blob row, upload the staged bytes, outside the record transaction;
6. **record** (:meth:`PutSteps._record_put_once`): one write transaction compares the
   versions, refuses a new path whose name is a folder or below a file (``PathConflict``),
   takes a reference on the blob and points the path at it; a row changed
   since step 3 sends the put back to step 3 (or to step 2 when it has no bytes);
7. **return** the versioned name now current, and end the lease.

:class:`PutSteps` is mixed into the store: the entries (``_put``, ``_put_zstd``,
``_put_many``, ``_put_existing``) come first, each step below the one that calls it,
and the write-transaction helpers the store's deletes and collections share last.
It calls down only: into ingest, the metadata repository, the blob backend and
:meth:`~castore.store.Store.open_blob` (reading, for the byte comparison).
"""

from __future__ import annotations

import functools
import io
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO, TypeVar

from .blobs.base import BlobBackend
from .codec import decode_bytes, decoding_reader
from .digests import CHUNK_SIZE
from .errors import CastoreError, IntegrityError, PathConflict
from .faults import is_disk_full
from .ingest import Ingest, Prepared, Source
from .keys import BlobKey, probe_keys
from .metadata.repo import MetadataRepo
from .metadata.rows import BlobRow, DedupCandidate, Reservation
from .metadata.txn import WriteConflict
from .names import versioned_name
from .reading import BlobReader
from .reserve import SpaceReserve

__all__ = ["LEASE_MARGIN", "UPLOAD_LEASE", "WRITE_ATTEMPTS", "PutSteps"]

_T = TypeVar("_T")

UPLOAD_LEASE = 3600
"""Seconds a put may take to upload a blob's bytes before garbage collection may take them."""
LEASE_MARGIN = 600
"""A put whose lease has less than this left when it records the reference publishes again:
room for clock differences between servers (``docs/design.md``, "Publishing")."""

WRITE_ATTEMPTS = 20
"""How often a write transaction is tried when the database reports a conflict with another
writer (PostgreSQL: two creators of one new path, a deadlock, a serialization failure)."""


class _NeedBytes(Exception):
    """The live blob a put counted on was collected (or replaced) before the put's transaction."""


class _Raced(Exception):
    """The blob row a put settled on changed before its transaction: settle again."""


_SETTLE_ATTEMPTS = 8


class _Restart(Exception):
    """Roll the put's transaction back and publish again (the blob's bytes may be gone)."""


class PutSteps:
    """The steps of a put, over the store's parts (mixed into :class:`castore.store.Store`)."""

    metadata: MetadataRepo
    blobs: BlobBackend
    clock: Callable[[], float]
    seed: int
    retention: int
    reserve: SpaceReserve | None
    _ingest: Ingest

    def open_blob(self, blob: BlobRow, name: str, version: int = 0) -> BlobReader:
        """A verifying reader of one blob row's content: the store's (:meth:`castore.store.Store.open_blob`)."""
        raise NotImplementedError("open_blob")

    # -- the entries: one per kind of put ----------------------------------------------

    def _put(self, path: str, version: int, source: Source, expected_size: int | None) -> str:
        """The put, step by step (the module's list): skip, prepare, then settle and record."""
        if not isinstance(source, (bytes, bytearray, memoryview)):
            newer = self._newer_than(path, version)
            if newer is not None:
                return newer  # do not read a stream that an older version would throw away
        prepared = self._ingest.prepare(source, expected_size=expected_size, find_same=self._find_same)
        try:
            for _ in range(WRITE_ATTEMPTS - 1):
                try:
                    return self._settle_and_record(path, version, prepared)
                except _NeedBytes:
                    prepared.discard()
                    prepared = self._ingest.prepare(source, expected_size=expected_size, force_bytes=True)
            return self._settle_and_record(path, version, prepared)
        finally:
            prepared.discard()

    def _put_zstd(self, path: str, version: int, frame: BinaryIO, size: int, max_window: int | None) -> str:
        """A content given as zstd frame(s), kept as the stored bytes: decoded once, to hash and count it."""
        newer = self._newer_than(path, version)
        if newer is not None:
            return newer
        prepared = self._ingest.prepare_zstd(frame, size=size, max_window=max_window)
        try:
            return self._settle_and_record(path, version, prepared)
        finally:
            prepared.discard()

    def _put_many(
        self,
        items: Sequence[tuple[str, int | None, bytes, int | None]],
        targets: list[tuple[str, int]],
        max_window: int | None,
    ) -> list[str]:
        """Small contents prepared first (each must fit inline), then recorded in order in one batch."""
        prepared: list[Prepared] = []
        try:
            for (name, _, data, zstd_size), (path, _) in zip(items, targets):
                if zstd_size is None:
                    ready = self._ingest.prepare(data, expected_size=len(data))
                else:
                    ready = self._ingest.prepare_zstd(io.BytesIO(data), size=zstd_size, max_window=max_window)
                prepared.append(ready)
                if ready.inline is None:
                    raise ValueError(f"{path}: {ready.size} bytes do not fit inline: put it on its own")
            with self.metadata.batch():
                return [self._settle_and_record(path, version, ready)
                        for (path, version), ready in zip(targets, prepared)]
        finally:
            for ready in prepared:
                ready.discard()

    def _put_existing(self, path: str, version: int, key: BlobKey) -> str | None:
        """A reference to the live blob under ``key`` (no bytes read, none compared); None when there is none."""
        candidate = self.metadata.dedup_candidate(key)
        if candidate is None or candidate.refcount == 0:
            return None
        blob = candidate.blob
        prepared = Prepared(key, blob.size, blob.codec, 0, blob.digests)  # no bytes: the row's content is kept
        try:
            return self._record_put(path, version, prepared, key, candidate.created)
        except _NeedBytes:
            return None  # collected since the lookup: the transaction was rolled back

    # -- 1. skip ---------------------------------------------------------------------

    def _newer_than(self, path: str, version: int) -> str | None:
        """The current versioned name if it is newer than ``version`` (a put would be ignored)."""
        current = self.metadata.current_version(path)
        return versioned_name(path, current) if current is not None and current > version else None

    # -- 3. to 6.: settle (comparing bytes), lease and publish, record --------------------

    def _settle_and_record(self, path: str, version: int, prepared: Prepared) -> str:
        """Choose the blob key for a prepared content (comparing bytes), then record the put."""
        if not prepared.has_bytes:
            # find_same compared the bytes already; any change of that row needs them again
            assert prepared.matched is not None
            return self._record_put(path, version, prepared, prepared.key, prepared.matched)
        for _ in range(_SETTLE_ATTEMPTS):
            key, matched = self._settle(prepared)
            try:
                return self._record_put(path, version, prepared, key, matched)
            except _Raced:
                continue
        raise CastoreError(f"{path}: its blob kept changing under the put; try again")

    def _probe(
        self, key: BlobKey, size: int, digests: bytes, content: Callable[[], Iterable[bytes | memoryview]]
    ) -> tuple[BlobKey, DedupCandidate | None]:
        """The first probe key that holds exactly this content (with its row) or is free (None)."""
        for candidate in probe_keys(self.seed, key, digests):
            state = self.metadata.dedup_candidate(candidate)
            if state is None or (state.refcount == 0 and not self.metadata.needed_by_delta(candidate)):
                return candidate, None
            # live, or kept at refcount 0 for the delta frames decoding against it: a put shares it
            # when it holds this content, and never takes it over (its bytes are the deltas' reference)
            if self._holds(state, size, digests, content):
                return candidate, state
        raise CastoreError(f"{size} bytes of content collide with other contents at every probe key")

    def _settle(self, prepared: Prepared) -> tuple[BlobKey, int | None]:
        """``(key, created of the live blob holding this content)``, or ``(free key, None)``."""
        assert prepared.digests is not None
        key, state = self._probe(prepared.key, prepared.size, prepared.digests, lambda: self._content_of(prepared))
        return key, None if state is None else state.created

    def _find_same(
        self, key: BlobKey, size: int, digests: bytes, content: Callable[[], Iterator[memoryview]]
    ) -> tuple[BlobKey, int] | None:
        """For ingest: the live blob holding exactly this content, before any byte is written."""
        found, state = self._probe(key, size, digests, content)
        return None if state is None else (found, state.created)

    def _holds(
        self, state: DedupCandidate, size: int, digests: bytes, content: Callable[[], Iterable[bytes | memoryview]]
    ) -> bool:
        """Whether a live blob holds exactly this content: sizes, digests, then every byte.

        The bytes are compared even when key and digests agree (dedup "verify"): they
        are only read on such a hit, and reading is cheaper than writing a copy. A
        stored blob that fails its own verification holds nothing worth sharing.
        """
        blob = state.blob
        if blob.size != size or (blob.digests is not None and blob.digests != digests):
            return False
        try:
            with self.open_blob(blob, f"blob {blob.key}", 0) as reader:
                return _same_bytes(reader.chunks(), content())
        except IntegrityError:
            return False

    def _content_of(self, prepared: Prepared) -> Iterator[bytes]:
        """The content of a prepared blob, read back from its inline or staged bytes."""
        if prepared.inline is not None:
            yield decode_bytes(prepared.inline, prepared.codec)
            return
        assert prepared.staged is not None
        with prepared.staged.open() as stored, decoding_reader(stored, prepared.codec) as content:
            while chunk := content.read(CHUNK_SIZE):
                yield chunk

    def _record_put(self, path: str, version: int, prepared: Prepared, key: BlobKey, matched: int | None) -> str:
        """Publish the blob's bytes if needed, then record the put in one transaction.

        ``matched`` is the ``created`` time of the live blob the put compared with, or
        None when the put found ``key`` free: the row must still be what was decided.
        A large new blob's bytes are uploaded *outside* the write transaction, under a
        lease taken on its row first (:meth:`_lease_and_publish`), so a slow upload (S3)
        never holds a database lock and garbage collection never deletes bytes a put is
        about to reference (``docs/design.md``, "Publishing"). Small blobs live in the row.
        """
        published = [False]
        for _ in range(WRITE_ATTEMPTS):
            until = None
            if prepared.inline is None and matched is None:
                until = self._lease_and_publish(prepared, key, published)
            try:
                return self._retrying(
                    functools.partial(self._record_put_once, path, version, prepared, key, matched, until)
                )
            except _Restart:
                continue
            finally:
                if until is not None:
                    self._end_lease(key, until)
        raise CastoreError(f"{path}: its blob kept changing under the put; try again")

    def _lease_and_publish(self, prepared: Prepared, key: BlobKey, published: list[bool]) -> int:
        """Lease the (free) blob row ``key`` and upload the bytes; return the lease's end.

        Raises _Raced when another put made ``key`` live since it was settled: the put
        settles again, comparing bytes.
        """
        while True:
            now = int(self.clock())
            until = now + UPLOAD_LEASE
            state = self._retrying(functools.partial(self._reserve, prepared, key, now, until))
            if state is Reservation.LIVE:
                raise _Raced()
            if state is Reservation.OWN:
                break
            time.sleep(0.05)  # BUSY: another put is uploading another representation
        try:
            if published[0]:
                # Bytes published by an earlier try may have been collected since (lease over):
                # publish again from the staged bytes, which stay until the put is over.
                if key not in self.blobs:
                    assert prepared.staged is not None
                    self.blobs.publish(prepared.staged, key)
            elif prepared.staged is not None:
                self.blobs.publish(prepared.staged, key)
                published[0] = True
            else:
                raise _NeedBytes()  # only hashed: a live blob had this key when we looked
        except BaseException:
            self._end_lease(key, until)
            raise
        return until

    def _reserve(self, prepared: Prepared, key: BlobKey, now: int, until: int) -> Reservation:
        with self.metadata.write() as txn:
            return txn.reserve_blob(
                key, size=prepared.size, stored_size=prepared.stored_size, codec=prepared.codec,
                digests=prepared.digests, now=now, until=until,
            )

    def _end_lease(self, key: BlobKey, until: int) -> None:
        def end() -> None:
            with self.metadata.write() as txn:
                txn.end_lease(key, until)

        self._retrying(end)

    def _record_put_once(
        self, path: str, version: int, prepared: Prepared, key: BlobKey, matched: int | None, until: int | None
    ) -> str:
        """One transaction: compare versions, reference the blob, point the path at it."""
        with self.metadata.write() as txn:
            current = txn.current(path)
            if current is not None and current.version > version:
                return versioned_name(path, current.version)
            if current is None:
                _check_free(path, txn.in_the_way(path))
            acquired = txn.acquire_blob(
                key,
                size=prepared.size,
                stored_size=prepared.stored_size,
                codec=prepared.codec,
                data=prepared.inline,
                digests=prepared.digests,
                now=int(self.clock()),
            )
            if acquired.refcount == 1:
                # New, or revived from 0 with this content (its old bytes may be gone).
                if not acquired.inline:
                    if matched is not None and until is None and txn.needed_by_delta(key):
                        pass  # kept for a delta at refcount 0, not revived (acquire_statement): its bytes,
                        # which this put compared, stay as they are (they are the deltas' reference)
                    elif prepared.inline is not None:
                        # A small content whose row keeps its bytes in the backend (revived):
                        # a few bytes, written under the row lock.
                        self.blobs.put_bytes(key, prepared.inline)
                    elif until is None:
                        # Live when compared, collected since: settle again (uploading ours).
                        if not prepared.has_bytes:
                            raise _NeedBytes()
                        raise _Raced()
                    elif self.clock() > until - LEASE_MARGIN:
                        raise _Restart()  # our lease ran out: a collector may have taken the bytes
                    elif key not in self.blobs:
                        # Another put sharing the lease ended it and a collection took the row and
                        # the bytes we uploaded before this transaction locked the row: upload again.
                        raise _Restart()
            elif until is not None and (acquired.size, acquired.digests) == (prepared.size, prepared.digests):
                pass  # another put of this content, sharing our lease (same digests), recorded first
            elif matched is None or (acquired.created, acquired.size, acquired.digests) != (
                matched,
                prepared.size,
                prepared.digests,
            ):
                # Another put took the key, or the blob compared with was replaced.
                if not prepared.has_bytes:
                    raise _NeedBytes()
                raise _Raced()
            if current is None:
                txn.add_path(path, version, key)
            elif current.version == version:
                txn.replace_current(path, current, key)
                txn.release_blob(current.blob_key)
            else:
                txn.add_version(path, version, key, min(current.nversions + 1, self.retention))
                excess = current.nversions + 1 - self.retention
                if excess > 0:
                    self._release(txn, txn.drop_oldest(path, excess))
        return versioned_name(path, version)

    # -- write transactions (shared with the store's delete and garbage collection) --------

    def _retrying(self, attempt: Callable[[], _T]) -> _T:
        """Run one write transaction, again while the database reports a conflict, and once more
        after a full disk if SQLite's log gave room back (:meth:`_make_room`)."""
        room_made = False
        for _ in range(WRITE_ATTEMPTS - 1):
            try:
                return attempt()
            except WriteConflict:
                continue
            except Exception as e:
                if room_made or not is_disk_full(e) or not self._make_room():
                    raise
                room_made = True
        return attempt()

    def _make_room(self) -> bool:
        """After a write failed on a full disk: SQLite's log copied back and truncated
        (:meth:`MetadataRepo.make_room`), with the space reserve lent when the database file must
        grow for it (the failed write's pages took the last free bytes); whether the write may be
        tried again: the log gave room back, and the reserve is whole again."""
        if self.metadata.make_room():
            return True
        if self.reserve is None or not self.reserve.release():
            return False
        made = self.metadata.make_room()
        return self.reserve.ensure() and made

    @staticmethod
    def _release(txn: Any, keys: list[BlobKey]) -> None:
        for key, count in sorted(Counter(keys).items()):  # one order: fewer lock waits between writers
            txn.release_blob(key, count)


def _check_free(path: str, in_the_way: str | None) -> None:
    """Refuse a new file whose name is a folder (``in_the_way`` is below it) or below a file."""
    if in_the_way is not None:
        raise PathConflict(path, None if in_the_way.startswith(path + "/") else in_the_way)


def _same_bytes(left: Iterable[bytes | memoryview], right: Iterable[bytes | memoryview]) -> bool:
    """Whether two streams of pieces (cut anywhere) carry the same bytes.

    Pieces are compared as ``bytes`` (one memcmp): a memoryview is copied once, and a
    ``bytes`` piece compared whole is not copied at all; where the two streams are cut
    at different places, only the part compared is copied. Comparing two memoryviews
    goes element by element, and copying both sides at once page-faults two fresh
    buffers: either was several times slower than the copy (measured on 1 MiB pieces).
    """
    lefts, rights = _nonempty_bytes(left), _nonempty_bytes(right)
    a = b = b""
    i = j = 0  # how much of a and of b is compared already
    while True:
        if i == len(a):
            a, i = next(lefts, b""), 0
        if j == len(b):
            b, j = next(rights, b""), 0
        if not a or not b:
            return not a and not b
        n = min(len(a) - i, len(b) - j)
        if _part(a, i, n) != _part(b, j, n):
            return False
        i, j = i + n, j + n


def _part(data: bytes, start: int, length: int) -> bytes:
    """``data[start:start + length]``, without a copy when that is all of ``data``."""
    return data if start == 0 and length == len(data) else data[start : start + length]


def _nonempty_bytes(pieces: Iterable[bytes | memoryview]) -> Iterator[bytes]:
    """The pieces as ``bytes``, empty ones left out (an empty piece is not the end)."""
    for piece in pieces:
        if len(piece):
            yield piece if type(piece) is bytes else bytes(piece)
