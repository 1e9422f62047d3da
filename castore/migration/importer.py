"""Copy every file of a Filetracker source into a castore store, with its version.

The rules, so that an import can be killed and re-run, and can run beside
``castore serve`` on the same store:

* a path castore already has at the same version is skipped (a re-run resumes; from a
  server, one HEAD tells the version, so nothing is downloaded again), and
  one it has at a newer version is left alone (the store's version rules would ignore
  the older put anyway; checking first saves reading it);
* a path deleted in castore while moving in (remembered in the ``deletions`` table by
  ``castore serve --migrate-from``) is not brought back; a deletion that lands while
  its put is in flight is applied again right after the put;
* each put is one store transaction, and new paths naming contents stored before are
  linked :data:`LINK_BATCH` per transaction (``Store.link_new``), so a kill leaves every
  path either imported or not (staged leftovers are swept by ``castore gc``);
* a content met again under another path (the same Filetracker blob) is linked to
  the stored blob without being decompressed again; castore hashes every content it
  stores the first time it stores it;
* anything unreadable (broken link, corrupt gzip, a file gone from the server) is a
  :class:`~castore.migration.sources.ImportProblem` in the report; the import goes on;
* a store that refuses every write (:data:`STORE_FAULTS`: a full disk, a read-only store)
  stops the import: no more items are started, those in flight end (a batch of links that
  failed is not tried path by path), and :meth:`Importer.run` raises the fault saying how
  far it got. What was imported stays, whole; a re-run once there is room does the rest.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, BinaryIO, cast

from ..errors import CastoreError, NotFound, ReadOnlyStore, StoreFull
from ..keys import BlobKey
from ..names import child_range, parse_name, versioned_name
from ..reading import BlobReader
from ..sizes import IO_BUFFER
from ..store import Store
from .sources import ImportProblem, Item, Source

__all__ = ["LINK_BATCH", "STORE_FAULTS", "ImportReport", "Importer", "Outcome", "deleted_in_castore",
           "undo_if_deleted"]


LINK_BATCH = 1000
"""Paths whose content is stored already linked in one write transaction: a transaction per
path queued the import's threads on SQLite's write lock (~300 paths/s). A batch of 1,000 holds
SQLite's lock for a few tens of milliseconds (a live server's puts wait no longer than that);
on PostgreSQL it is six statements (:mod:`castore.metadata.linking`). 200 a batch imported
~20 % fewer paths a second (10 k paths into a 1 M store, both databases)."""

STORE_FAULTS = (StoreFull, ReadOnlyStore)
"""Errors that say the store takes no write at all (the store layer names them: castore/faults.py):
every later item would fail alike, so the import stops at the first instead of reporting each."""


class Outcome(Enum):
    """What happened to one item."""

    IMPORTED = "imported"
    LINKED = "linked"
    """Imported without reading: its content was already stored for another path."""
    ALREADY = "already"
    """castore has the same version already (a re-run, or the live migration fetched it)."""
    NEWER = "newer"
    """castore has a newer version: left alone."""
    DELETED = "deleted"
    """Deleted in castore while moving in: not brought back."""
    PROBLEM = "problem"
    STOPPED = "stopped"
    """Not tried, or refused by the store, after the store refused a write (:data:`STORE_FAULTS`)."""


@dataclass
class ImportReport:
    """The summary of one import (``--json`` prints :meth:`as_dict`)."""

    source: str
    files: int = 0
    """Files the source listed (problems included)."""
    imported: int = 0
    """Versions stored by this run (``linked`` included)."""
    linked: int = 0
    already: int = 0
    newer_in_castore: int = 0
    deleted_in_castore: int = 0
    logical_bytes: int = 0
    """Logical size of the versions this run stored."""
    stored_bytes: int = 0
    """How much the store's stored bytes grew during the run."""
    seconds: float = 0.0
    verified: int | None = None
    problems: list[ImportProblem] = field(default_factory=list)

    @property
    def dedup_ratio(self) -> float:
        """Logical bytes imported per stored byte added (1.0 when nothing was added)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes > 0 else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "files": self.files,
            "imported": self.imported,
            "linked": self.linked,
            "already": self.already,
            "newer_in_castore": self.newer_in_castore,
            "deleted_in_castore": self.deleted_in_castore,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "dedup_ratio": round(self.dedup_ratio, 3),
            "seconds": round(self.seconds, 3),
            "files_per_second": round(self.imported / self.seconds, 1) if self.seconds else None,
            "mb_per_second": round(self.logical_bytes / 1e6 / self.seconds, 2) if self.seconds else None,
            "verified": self.verified,
            "problems": [{"where": p.where, "reason": p.reason} for p in self.problems],
        }


def deleted_in_castore(store: Store, path: str, version: int, remembered: dict[str, int] | None = None) -> bool:
    """True when ``path`` was deleted in castore at ``version`` or later, while moving in.

    ``remembered``: the deletions read at once for many paths (:meth:`MetadataRepo.deletions`),
    else ``path``'s is read now.
    """
    deleted = store.metadata.deletion(path) if remembered is None else remembered.get(path)
    return deleted is not None and version <= deleted


def undo_if_deleted(store: Store, path: str, version: int, remembered: dict[str, int] | None = None) -> bool:
    """Remove ``path@version`` again if a deletion covering it was remembered meanwhile.

    The delete handler remembers a deletion before it deletes, so a put that raced
    with it either was deleted by it or sees the deletion here (or in ``remembered``,
    read after the put's commit).
    """
    if not deleted_in_castore(store, path, version, remembered):
        return False
    try:
        store.delete(path, version)  # only if castore's version is still this one
    except NotFound:
        pass
    return True


@dataclass
class _Done:
    item: Item | None
    outcome: Outcome
    size: int = 0
    problem: ImportProblem | None = None


ProgressHook = Callable[[Outcome, int], None]
"""Called (from the importing thread) after each item with its outcome and logical size."""


class Importer:
    """Imports one source into one store with ``jobs`` threads."""

    def __init__(self, store: Store, source: Source, *, jobs: int = 4) -> None:
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.store = store
        self.source = source
        self.jobs = jobs
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._seen_lock = threading.Lock()
        """Filetracker blob digest -> the versioned name it was first stored (or found) as; the
        :attr:`SEEN_MAX` most recently used (a content forgotten is read and put again, and
        the put shares the stored blob: only time is lost)."""
        self._putting: set[str] = set()
        """Digests of items a thread is importing on their own (the first path of a content): the
        items after them naming that content join a batch of links, written after the put, mostly.
        As many as the threads' queue holds."""
        self._deleted: dict[str, int] = {}
        """Deletions remembered when the run began (later ones are caught after each put)."""
        self.done = ItemLog()
        """Items castore now holds at the source's version (what ``verify`` re-reads), on disk."""
        self._fault: CastoreError | None = None
        """The first of :data:`STORE_FAULTS` a write raised: the import stops (:meth:`_stop`)."""

    SEEN_MAX = 100_000
    """Contents :attr:`_seen` remembers (~20 MiB): the import's memory does not grow with the source."""

    # -- importing -----------------------------------------------------------------------

    def run(self, progress: ProgressHook | None = None) -> ImportReport:
        """Import every item of the source; the summary.

        Raises StoreFull or ReadOnlyStore (:data:`STORE_FAULTS`) when the store refused a write:
        the items in flight end, no other is started, and the message says how many were imported.
        """
        report = ImportReport(self.source.description)
        started = time.perf_counter()
        stored_before = self.store.usage().stored_bytes
        self._deleted = self.store.metadata.deletions(*child_range("/"))
        self.store.metadata.prepare_for_bulk_writes()  # batches of links: large write transactions
        for result in self._results(self._batched(self.source.items()), self._import_alone):
            if result.outcome is Outcome.STOPPED:
                continue
            report.files += 1
            self._count(report, result)
            if progress is not None:
                progress(result.outcome, result.size)
        if self._fault is not None:
            raise _stopped(self._fault, report) from self._fault
        report.stored_bytes = max(self.store.usage().stored_bytes - stored_before, 0)
        report.seconds = time.perf_counter() - started
        return report

    def _results(
        self, entries: Iterator[Item | ImportProblem | list[Item]], work: Callable[[Item], _Done]
    ) -> Iterator[_Done]:
        """Run ``work`` on every item, and :meth:`_link_batch` on every list of items, in a bounded
        thread pool; problems pass straight through. Once the store refused a write (:meth:`_stop`),
        no entry is started: those in flight end."""
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="castore-import") as pool:
            pending: set[Future[list[_Done]]] = set()
            for entry in entries:
                if self._fault is not None:
                    break
                if isinstance(entry, ImportProblem):
                    yield _Done(None, Outcome.PROBLEM, problem=entry)
                    continue
                if isinstance(entry, list):
                    pending.add(pool.submit(self._link_batch, entry))
                else:
                    pending.add(pool.submit(self._guarded_list, work, entry))
                if len(pending) >= 2 * self.jobs:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        yield from future.result()
            for future in pending:
                yield from future.result()

    def _guarded_list(self, work: Callable[[Item], _Done], item: Item) -> list[_Done]:
        return [self._guarded(work, item)]

    def _guarded(self, work: Callable[[Item], _Done], item: Item) -> _Done:
        """``work(item)``; a failure is a problem (the import goes on), but a store that takes no
        write stops the import (STOPPED: :meth:`_stop`)."""
        try:
            return work(item)
        except STORE_FAULTS as e:
            self._stop(e)
            return _Done(item, Outcome.STOPPED)
        except Exception as e:  # noqa: BLE001 - every failure is reported, the import goes on
            return _Done(item, Outcome.PROBLEM, problem=ImportProblem(item.where, _reason(item, e)))

    def _stop(self, fault: CastoreError) -> None:
        """The store refused a write: start nothing more (the first fault is the one told).

        Work submitted before ends as STOPPED when it begins (:meth:`_import_one`,
        :meth:`_link_batch`); a batch that committed meanwhile is still counted.
        """
        if self._fault is None:
            self._fault = fault

    def _count(self, report: ImportReport, result: _Done) -> None:
        outcome = result.outcome
        if outcome is Outcome.PROBLEM:
            assert result.problem is not None
            report.problems.append(result.problem)
            return
        assert result.item is not None
        if outcome in (Outcome.IMPORTED, Outcome.LINKED, Outcome.ALREADY):
            self.done.append(result.item)
        if outcome in (Outcome.IMPORTED, Outcome.LINKED):
            report.imported += 1
            report.logical_bytes += result.size
            report.linked += outcome is Outcome.LINKED
        elif outcome is Outcome.ALREADY:
            report.already += 1
        elif outcome is Outcome.NEWER:
            report.newer_in_castore += 1
        elif outcome is Outcome.DELETED:
            report.deleted_in_castore += 1

    def _skip(self, item: Item, version: int) -> Outcome | None:
        """Why ``item`` at ``version`` needs no put, or None when it must be stored."""
        deleted = self._deleted.get(item.path)
        if deleted is not None and version <= deleted:
            return Outcome.DELETED
        current = self.store.metadata.current_version(item.path)
        if current is None or current < version:
            return None
        if current == version and item.digest is not None:
            # a re-run: other paths sharing this blob can be linked to it
            self._remember(item.digest, versioned_name(item.path, version))
        return Outcome.ALREADY if current == version else Outcome.NEWER

    def _import_one(self, item: Item) -> _Done:
        if self._fault is not None:
            return _Done(item, Outcome.STOPPED)
        if item.version is None and self.store.metadata.current_version(item.path) is not None:
            item = _stamped(item, self.source.version_of(item))  # a re-run: maybe no download needed
        if item.version is not None:
            skip = self._skip(item, item.version)
            if skip is not None:
                return _Done(item, skip)
            linked = self._link(item, item.version)
            if linked is not None:
                return linked
        opened = self.source.open(item)
        with opened.stream:
            skip = self._skip(item, opened.version) if opened.version != item.version else None
            if skip is not None:
                return _Done(_stamped(item, opened.version), skip)  # verify needs the version
            counted = _Counted(opened.stream)
            name = self.store.put(item.path, cast(BinaryIO, counted), opened.version, expected_size=opened.size)
        done = self._recorded(item, name, opened.version, linked=False, size=counted.size)
        if done.outcome is Outcome.IMPORTED and item.digest is not None:
            self._remember(item.digest, name)
        return done

    def _batched(self, entries: Iterator[Item | ImportProblem]) -> Iterator[Item | ImportProblem | list[Item]]:
        """The source's entries, with those whose content is stored already gathered into lists
        of up to :data:`LINK_BATCH` items (each written in one transaction by :meth:`_link_batch`)."""
        batch: list[Item] = []
        for entry in entries:
            if isinstance(entry, Item) and self._linkable(entry):
                batch.append(entry)
                if len(batch) == LINK_BATCH:
                    yield batch
                    batch = []
            else:
                if isinstance(entry, Item) and entry.version is not None and entry.digest is not None:
                    with self._seen_lock:
                        self._putting.add(entry.digest)
                yield entry
        if batch:
            yield batch

    def _linkable(self, item: Item) -> bool:
        """Whether ``item`` (at a known version) names a content this run stored or found already,
        or is storing (:attr:`_putting`; if the put is not over when the batch is written, or
        failed, :meth:`_link_batch` imports the item on its own)."""
        with self._seen_lock:
            return item.version is not None and item.digest is not None and (
                item.digest in self._seen or item.digest in self._putting)

    def _import_alone(self, item: Item) -> _Done:
        """:meth:`_import_one` of an item the source listed, not part of a batch."""
        try:
            return self._import_one(item)
        finally:
            if item.digest is not None:
                with self._seen_lock:
                    self._putting.discard(item.digest)

    def _link_batch(self, items: list[Item]) -> list[_Done]:
        """Import ``items`` (contents stored already) by linking them, in one transaction.

        :meth:`~castore.store.Store.link_new` links the paths castore does not have; any
        other item (stored already, in the way, its content gone since), or every item of a
        batch that failed, is imported one by one (:meth:`_import_one`), which tells them
        apart. Deletions remembered while the batch was written are read once after it.
        """
        if self._fault is not None:
            return [_Done(item, Outcome.STOPPED) for item in items]
        done: list[_Done] = []
        links: list[tuple[Item, BlobKey, int]] = []
        alone: list[Item] = []
        stored = self._guarded_lookup({item.digest for item in items if item.digest is not None})
        for item in items:
            assert item.version is not None and item.digest is not None
            deleted = self._deleted.get(item.path)
            if deleted is not None and item.version <= deleted:
                done.append(_Done(item, Outcome.DELETED))
                continue
            found = stored.get(item.digest)
            if found is None:
                alone.append(item)
            else:
                links.append((item, *found))
        try:
            linked = self.store.link_new([(item.path, item.version or 0, key) for item, key, _ in links])
        except STORE_FAULTS as e:  # rolled back, and not tried one by one: _import_one stops each
            self._stop(e)
            linked = [False] * len(links)
        except Exception:  # noqa: BLE001 - rolled back: each is tried again on its own
            linked = [False] * len(links)
        remembered = self._deletions_of([item.path for (item, _, _), new in zip(links, linked) if new])
        for (item, _, size), new in zip(links, linked):
            if not new:
                alone.append(item)
                continue
            done.append(self._guarded(functools.partial(self._linked, size=size, remembered=remembered), item))
        return done + [self._guarded(self._import_one, item) for item in alone]

    def _linked(self, item: Item, *, size: int, remembered: dict[str, int]) -> _Done:
        assert item.version is not None
        return self._recorded(item, versioned_name(item.path, item.version), item.version, linked=True, size=size,
                              remembered=remembered)

    def _guarded_lookup(self, digests: set[str]) -> dict[str, tuple[BlobKey, int]]:
        """The blob key and size of each of ``digests``' contents still stored as first stored (or
        found), in one query; nothing on any failure (the items are then imported on their own)."""
        with self._seen_lock:
            firsts = {digest: self._seen[digest] for digest in digests if digest in self._seen}
            for digest in firsts:
                self._seen.move_to_end(digest)
        try:
            wanted = {digest: _path_and_version(first) for digest, first in firsts.items()}
            found = self.store.metadata.version_blobs(sorted(set(wanted.values())))
        except Exception:  # noqa: BLE001 - the put one by one reports what is wrong
            return {}
        return {digest: found[name] for digest, name in wanted.items() if name in found}

    def _deletions_of(self, paths: list[str]) -> dict[str, int]:
        """The deletions remembered for ``paths`` (and others between them): one range read.

        The range ends just after the last path: ``"\x01"`` sorts before any character a
        path may hold (and PostgreSQL's text takes no NUL)."""
        return self.store.metadata.deletions(min(paths), max(paths) + "\x01") if paths else {}

    def _stored_content(self, digest: str) -> tuple[BlobKey, int] | None:
        """The blob key and size of the content first stored as ``digest``'s name, or None when gone."""
        with self._seen_lock:
            first = self._seen.get(digest)
            if first is None:
                return None
            self._seen.move_to_end(digest)
        try:
            info = self.store.stat(first)  # that version: its content, whatever came since
        except NotFound:
            return None
        return info.key, info.size

    def _remember(self, digest: str, name: str) -> None:
        """Note that ``digest``'s content is stored as ``name`` (the first name stays), forgetting
        the least recently used content beyond :attr:`SEEN_MAX`."""
        with self._seen_lock:
            self._seen.setdefault(digest, name)
            while len(self._seen) > self.SEEN_MAX:
                self._seen.popitem(last=False)

    def _link(self, item: Item, version: int) -> _Done | None:
        """Import ``item`` by pointing it at a content stored before, if it was."""
        found = None if item.digest is None else self._stored_content(item.digest)
        if found is None:
            return None
        key, size = found
        name = self.store.put_existing(item.path, key, version)
        return None if name is None else self._recorded(item, name, version, linked=True, size=size)

    def _recorded(
        self, item: Item, name: str, version: int, *, linked: bool, size: int, remembered: dict[str, int] | None = None
    ) -> _Done:
        """The outcome of a put that made ``name`` current (``remembered``: see :func:`undo_if_deleted`)."""
        if parse_name(name).version != version:
            return _Done(item, Outcome.NEWER)  # a newer version arrived meanwhile
        if undo_if_deleted(self.store, item.path, version, remembered):
            return _Done(item, Outcome.DELETED)
        return _Done(_stamped(item, version), Outcome.LINKED if linked else Outcome.IMPORTED, size)

    # -- verifying ---------------------------------------------------------------------------

    def verify(self, progress: ProgressHook | None = None) -> list[ImportProblem]:
        """Re-read every imported path from castore and compare it with the source.

        A path whose version changed in castore since the import (a client put or
        deleted it) is not a difference.
        """
        problems = []
        for result in self._results(iter(self.done), self._verify_one):  # read back from disk
            if result.problem is not None:
                problems.append(result.problem)
            if progress is not None:
                progress(result.outcome, result.size)
        return problems

    def _verify_one(self, item: Item) -> _Done:
        assert item.version is not None
        try:
            info = self.store.stat(item.path)
        except NotFound:
            return _Done(item, Outcome.DELETED)
        if info.version != item.version:
            return _Done(item, Outcome.NEWER)
        opened = self.source.open(item)
        with opened.stream, self.store.open_file(versioned_name_of(item)) as stored:
            source_digest, source_size = _digest(opened.stream)
            castore_digest, castore_size = _digest(stored)
        if opened.version != item.version:
            return _Done(item, Outcome.NEWER)  # the source changed since the import
        if (source_digest, source_size) != (castore_digest, castore_size):
            reason = f"differs from castore's {item.path}@{item.version} ({source_size} vs {castore_size} bytes)"
            return _Done(item, Outcome.PROBLEM, problem=ImportProblem(item.where, reason))
        return _Done(item, Outcome.ALREADY, source_size)


class _Counted(io.RawIOBase):
    """A stream that counts the bytes read through it (the logical size of an import)."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        readinto = getattr(self._inner, "readinto", None)
        if readinto is not None:
            n: int = readinto(buffer)
        else:
            data = self._inner.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self.size += n
        return n


_ITEM_FIELDS = tuple(f.name for f in fields(Item))


class ItemLog:
    """Items appended to a temporary file and read back in order: a million cost disk, not memory."""

    def __init__(self) -> None:
        # a large buffer: a write (syscall) per 8 KiB cost ~10 % of an import of links under load
        self._file = tempfile.TemporaryFile("w+", buffering=1 << 20, encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._count = 0

    def append(self, item: Item) -> None:
        # not dataclasses.astuple: it deep-copies every field (a tenth of the cost of a link)
        self._file.write(json.dumps([getattr(item, name) for name in _ITEM_FIELDS]) + "\n")
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Item]:
        self._file.seek(0)
        try:
            for line in self._file:
                yield Item(*json.loads(line))
        finally:
            self._file.seek(0, io.SEEK_END)

    def close(self) -> None:
        self._file.close()


def _stopped(fault: CastoreError, report: ImportReport) -> CastoreError:
    """``fault`` (StoreFull, ReadOnlyStore) saying also how far the import got and what to do: one line."""
    when = "there is room" if isinstance(fault, StoreFull) else "the store takes writes"
    return type(fault)(f"{fault}: the import stopped after storing {report.imported} versions "
                       f"(they stay; run it again once {when}: it goes on from there)")


def _stamped(item: Item, version: int) -> Item:
    """``item`` at ``version``: the one a server told (its listing does not say)."""
    return item if item.version == version else Item(item.path, item.where, version, item.digest, item.content)


def _path_and_version(name: str) -> tuple[str, int]:
    parsed = parse_name(name)
    assert parsed.version is not None  # a name the importer remembered: always versioned
    return parsed.path, parsed.version


def versioned_name_of(item: Item) -> str:
    assert item.version is not None
    return f"{item.path}@{item.version}"


def _digest(stream: BinaryIO | BlobReader) -> tuple[bytes, int]:
    hasher = hashlib.sha256()
    size = 0
    while chunk := stream.read(IO_BUFFER):
        hasher.update(chunk)
        size += len(chunk)
    return hasher.digest(), size


def _reason(item: Item, error: Exception) -> str:
    """One line saying what went wrong, naming the blob file when there is one."""
    # the first line only: a Filetracker server's error body is a whole traceback
    text = " ".join(str(error).split("\n", 1)[0].split())[:300] or type(error).__name__
    if isinstance(error, (OSError, EOFError)) or type(error).__module__ == "zlib":
        what = f"blob {item.content}" if item.content else "content"
        return f"unreadable or corrupt {what}: {type(error).__name__}: {text}"
    return f"{type(error).__name__}: {text}"
