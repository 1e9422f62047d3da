"""Live migration: ``castore serve --migrate-from URL`` moves files in as they are asked for.

* A GET or HEAD of a path castore lacks fetches it from the old Filetracker server,
  stores it with the old server's version, and the same request serves it from castore.
  Concurrent requests for one missing path in one worker process wait for a single
  fetch (:meth:`LiveMigration.fetch`); the workers of one ``castore serve`` also take
  a lock per path (:func:`share_fetch_locks`), so a path is fetched once in all. Separate
  servers do not coordinate: two may fetch the same path at once, and both puts store
  the same content at the same version, which the store's version rules make harmless
  (an equal version replaces the content with itself).
* PUT and DELETE go to castore only. A DELETE is remembered (the ``deletions`` table)
  before castore deletes, so the old server's copy never comes back: not through a
  fetch-on-miss, not through ``castore import-filetracker`` running beside the server.
* ``/list/`` answers castore's paths merged with the old server's, less the deleted ones.

The old server is reached with castore's own Filetracker client (:class:`~castore.remote.Remote`),
whose calls block: the server runs them in worker threads.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import anyio.to_thread

from ..errors import FileNotAvailable, FiletrackerError, NotFound
from ..names import check_path, child_range
from ..remote import Remote
from ..store import Store
from .importer import deleted_in_castore, undo_if_deleted
from .sources import FAR_FUTURE, real_name

__all__ = ["LiveMigration", "MigrationStatus", "migration_status", "share_fetch_locks"]

T = TypeVar("T")

FETCH_LOCKS_VARIABLE = "CASTORE_MIGRATE_LOCK_FD"
"""The descriptor of the file whose byte ranges the workers lock, one per path (see below)."""


def share_fetch_locks() -> None:
    """Before the workers fork: make one lock file they all inherit, so they fetch a path once.

    The file is unlinked at once (nothing is left behind). Each worker locks the byte at
    a hash of the path (``lockf``: locks belong to the process, so workers exclude each
    other; requests within one worker already share one fetch).
    """
    if FETCH_LOCKS_VARIABLE not in os.environ:
        fd, name = tempfile.mkstemp(prefix="castore-migrate-")
        os.unlink(name)
        os.environ[FETCH_LOCKS_VARIABLE] = str(fd)


def _fetch_lock_fd() -> int | None:
    value = os.environ.get(FETCH_LOCKS_VARIABLE, "")
    if not value.isdigit():
        return None
    try:
        info = os.fstat(int(value))
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 0:
        return None  # not the unlinked lock file (the variable came through an exec): no lock
    return int(value)


@dataclass
class _Flight:
    """One fetch in progress; requests for the same path wait for it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    finished: bool = False
    """False when the fetching request was cancelled before it finished."""
    error: Exception | None = None
    found: bool = False


class LiveMigration:
    """The migrating half of one server process: fetch on miss, deletions, merged lists."""

    def __init__(self, store: Store, url: str, *, timeout: float = 300.0) -> None:
        self.store = store
        self.remote = Remote(url, timeout=timeout)
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self._across_workers = _fetch_lock_fd()
        self.fetched = 0
        """Paths fetched from the old server and stored."""
        self.fetched_bytes = 0
        self.missing = 0
        """Misses the old server did not have either."""
        self.not_resurrected = 0
        """Misses the old server had, but that were deleted in castore."""

    def close(self) -> None:
        self.remote.close()

    # -- reads -----------------------------------------------------------------------------

    async def fetch(self, path: str) -> bool:
        """Bring ``path`` in from the old server; True when castore has it now.

        Raises FiletrackerError when the old server cannot be asked (down, 5xx).
        """
        while (flight := self._flights.get(path)) is not None:
            await flight.done.wait()
            if flight.finished:
                if flight.error is not None:
                    raise flight.error
                return flight.found
            # the request that was fetching it was cancelled: fetch it for this one
        flight = self._flights[path] = _Flight()
        try:
            flight.found = await anyio.to_thread.run_sync(self._short_errors, self._fetch, path)
            flight.finished = True
        except Exception as e:
            flight.error, flight.finished = e, True
            raise
        finally:
            del self._flights[path]
            flight.done.set()
        return flight.found

    def _short_errors(self, call: Callable[[str], T], path: str) -> T:
        """Run ``call``; an old server's failure becomes one short line (its body may be a traceback)."""
        try:
            return call(path)
        except FileNotAvailable:
            raise
        except FiletrackerError as e:
            first = str(e).split("\n", 1)[0][:200]
            raise FiletrackerError(f"the old server {self.remote.base_url} failed for {path}: {first}",
                                   status=e.status) from None

    @contextmanager
    def _worker_lock(self, path: str) -> Iterator[None]:
        """Hold ``path``'s lock among the workers of this server (nothing if it has none)."""
        fd = self._across_workers
        if fd is None:
            yield
            return
        offset = int.from_bytes(hashlib.sha256(path.encode("utf-8", "surrogateescape")).digest()[:6], "big")
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
            locked = True
        except OSError as e:
            # threads of one process share its locks, so the kernel may see a deadlock that
            # is none; fetching twice is only wasted work
            if e.errno != errno.EDEADLK:
                raise
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    def _fetch(self, path: str) -> bool:
        with self._worker_lock(path):
            return self._fetch_locked(path)

    def _fetch_locked(self, path: str) -> bool:
        if self.store.exists(path):
            return True  # another worker (or an import) brought it meanwhile
        try:
            info, stream = self.remote.open(path)
        except FileNotAvailable:
            self._count("missing")
            return False
        with stream:
            if deleted_in_castore(self.store, path, info.version):
                self._count("not_resurrected")
                return False
            self.store.put(path, stream, info.version, expected_size=info.size)
        if undo_if_deleted(self.store, path, info.version):
            self._count("not_resurrected")
            return False
        self._count("fetched", info.size)
        return True

    def _count(self, counter: str, size: int = 0) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)
            if counter == "fetched":
                self.fetched_bytes += size

    # -- writes ----------------------------------------------------------------------------

    def delete(self, path: str, version: int | None) -> bool:
        """See :meth:`_delete`; the old server's failures in one short line."""
        return self._short_errors(lambda p: self._delete(p, version), path)

    def _delete(self, path: str, version: int | None) -> bool:
        """Delete in castore and remember it; like :meth:`Store.delete`, NotFound if neither side has it.

        A path only the old server has is not fetched to be deleted: the remembered
        deletion is enough to keep it out.
        """
        when = version if version is not None else int(time.time())
        metadata = self.store.metadata
        before = metadata.deletion(path)
        metadata.remember_deletion(path, when)  # before deleting: see undo_if_deleted
        try:
            return self.store.delete(path, version)
        except NotFound:
            pass
        try:
            old = self.remote.stat(path)
        except FileNotAvailable:
            metadata.restore_deletion(path, before)  # a failed request changes nothing
            raise NotFound(path) from None
        except Exception:
            metadata.restore_deletion(path, before)
            raise
        return old.version <= when

    # -- listing ---------------------------------------------------------------------------

    def list_folder(self, directory: str, cutoff: int) -> list[str]:
        """See :meth:`_list_folder`; the old server's failures in one short line."""
        return self._short_errors(lambda d: self._list_folder(d, cutoff), directory)

    def _list_folder(self, directory: str, cutoff: int) -> list[str]:
        """Both sides' paths below ``directory`` (ends with ``/``), relative to it, sorted.

        NotFound when neither side has such a folder.
        """
        try:
            ours: list[str] | None = self.store.list_folder(directory, max_version=cutoff)
        except NotFound:
            ours = None
        try:
            listed: list[str] | None = self.remote.list(directory, cutoff)
        except FiletrackerError as e:
            if e.status not in (400, 404):
                raise
            listed = None  # not a folder on the old server
        if ours is None and listed is None:
            raise NotFound(directory, f"not a folder: {directory}")
        merged = set(ours or ())
        low, high = child_range(directory)
        deleted = self.store.metadata.deletions(low, high)
        for name in listed or ():
            relative = "/".join(real_name(part) for part in name.split("/"))
            if directory + relative not in deleted:
                merged.add(relative)
        return sorted(merged)

    def render_metrics(self) -> str:
        """Prometheus counters of this process's live migration."""
        counters = {
            "castore_migration_fetched_total": ("Paths fetched from the old server on a miss.", self.fetched),
            "castore_migration_fetched_bytes_total": ("Logical bytes fetched on a miss.", self.fetched_bytes),
            "castore_migration_missing_total": ("Misses the old server did not have.", self.missing),
            "castore_migration_not_resurrected_total": (
                "Misses deleted in castore, not brought back.", self.not_resurrected),
        }
        lines = []
        for name, (help_text, value) in counters.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class MigrationStatus:
    """How far moving in from an old server has come (``castore migrate status``)."""

    old_files: int
    moved: int
    """Old paths castore has, at the old version or newer."""
    deleted: int
    """Old paths deleted in castore while moving in."""
    left: list[str]
    """Old paths castore does not have yet (or has at an older version)."""
    problems: list[str]

    def as_dict(self) -> dict[str, object]:
        return {"old_files": self.old_files, "moved": self.moved, "deleted": self.deleted,
                "left": len(self.left), "problems": self.problems}


def migration_status(store: Store, url: str, *, versions: bool = False) -> MigrationStatus:
    """Compare the old server's listing with the store.

    ``versions``: also ask the old server for the version of each path castore has,
    and count a path castore has at an older version as left (one HEAD per path).
    """
    remote = Remote(url)
    try:
        names = remote.list("/", FAR_FUTURE)
        moved = deleted = 0
        left: list[str] = []
        problems: list[str] = []
        for name in names:
            path = "/" + "/".join(real_name(part) for part in name.split("/"))
            try:
                check_path(path)
            except ValueError as e:
                problems.append(str(e))
                continue
            current = store.metadata.current_version(path)
            if current is None:
                if store.metadata.deletion(path) is not None:
                    deleted += 1
                else:
                    left.append(path)
                continue
            if versions:
                try:
                    if remote.stat(path).version > current:
                        left.append(path)
                        continue
                except FileNotAvailable:
                    pass
            moved += 1
        return MigrationStatus(len(names), moved, deleted, left, problems)
    finally:
        remote.close()
