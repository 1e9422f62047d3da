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

The old server is reached with castore's own Filetracker client (:class:`~castore.client.remote.Remote`),
whose calls block: the server runs them in threads of their own, a few at a time
(:class:`MigrationLimits`), never in the threads every other request uses.

The old server is untrusted input (``docs/design.md``, "Threat model"): each call to it
has a connect/first-byte timeout and a deadline, at most ``fetches + queue`` wait at
once (then 503), a call whose client hung up is abandoned, its answers are decoded
within the server's upload limits, a version beyond :data:`FUTURE_HORIZON` is refused,
a redirect to another server is not followed, and names castore's rules refuse are
left out of the merged list.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import anyio.to_thread

from ..client.remote import Remote
from ..errors import Busy, FileNotAvailable, FiletrackerError, NotFound
from ..inherited import inherited_file, share_file
from ..names import check_path, child_range, is_valid_path
from ..protocol import format_version
from ..server.upload import UploadLimits
from ..store import Store
from .importer import deleted_in_castore, undo_if_deleted
from .sources import FAR_FUTURE, real_name

__all__ = [
    "FUTURE_HORIZON",
    "LISTING_BYTES_PER_NAME",
    "LiveMigration",
    "MigrationLimits",
    "MigrationStatus",
    "migration_status",
    "share_fetch_locks",
]

T = TypeVar("T")

FETCH_LOCKS_VARIABLE = "CASTORE_MIGRATE_LOCK_FD"
"""The descriptor of the file whose byte ranges the workers lock, one per path (see below)."""


def share_fetch_locks() -> None:
    """Before the workers fork: make one lock file they all inherit, so they fetch a path once.

    The file is unlinked at once (nothing is left behind). Each worker locks the byte at
    a hash of the path (``lockf``: locks belong to the process, so workers exclude each
    other; requests within one worker already share one fetch).
    """
    share_file(FETCH_LOCKS_VARIABLE, prefix="castore-migrate-")


def _fetch_lock_fd() -> int | None:
    """The lock file, or None (no lock) when the variable names anything else (it came through an exec)."""
    return inherited_file(FETCH_LOCKS_VARIABLE)


FUTURE_HORIZON = 86400
"""Seconds past the time of a fetch beyond which an old server's version is refused (1 day).

A far-future ``Last-Modified`` (say year 9999) stored as the version would make every
later ordinary PUT of that path answer 200 and be ignored (an older version never
replaces a newer one). One day leaves room for clocks that are somewhat off."""


@dataclass(frozen=True)
class MigrationLimits:
    """What calls to the old server may cost one worker (``castore serve --migrate-*`` options)."""

    timeout: float = 10.0
    """Seconds to connect, and to wait for each next byte of an answer (``--migrate-timeout``)."""
    deadline: float = 120.0
    """Seconds one call may take in all, waiting for a thread included (``--migrate-deadline``)."""
    fetches: int = 4
    """Calls to the old server running at once, each in a thread of its own (``--migrate-fetches``)."""
    queue: int = 60
    """Further calls that may wait for one of those threads; beyond, 503 (``--migrate-queue``)."""
    listing: int = 64 << 20
    """Largest ``/list/`` answer read from the old server, in bytes (some million names); beyond, 502.
    It may hold at most one name per :data:`LISTING_BYTES_PER_NAME` of this (2 M), also 502 beyond."""


LISTING_BYTES_PER_NAME = 32
"""Bytes of :attr:`MigrationLimits.listing` per name an old server's listing may hold.

A listed name costs a worker some 180 bytes of memory however short it is (its string,
split and merged, in a set and a sorted list): 53 MiB of 7 M seven-digit names took
1.2 GB and 21 s of CPU, 2 M names of 31 bytes 374 MiB. Real paths are longer than 32
bytes (``contests/…/tests/1a.in``), so the byte limit binds them first."""


class _Guard:
    """The sockets of one call to the old server, shut down when the call is given up.

    The call runs in a thread that blocks in reads; shutting its socket down makes the
    read return at once, so the thread ends instead of waiting for the old server.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._aborted = False

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if not self._aborted:
                return
        self._shut(sock)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already: the call had finished with it


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

    def __init__(
        self, store: Store, url: str, *, limits: MigrationLimits | None = None, uploads: UploadLimits | None = None
    ) -> None:
        self.store = store
        self.limits = limits = limits or MigrationLimits()
        self.uploads = uploads or UploadLimits()
        """The server's upload limits, applied to what the old server sends as to an upload."""
        # no redirect to another server; no idle connections kept: a socket is shut down only
        # while its own call may still use it (see _Guard)
        self.remote = Remote(url, timeout=limits.timeout, other_origins=False, keep_connections=0)
        self._threads: anyio.CapacityLimiter | None = None
        self._calls = 0
        """Calls to the old server running or waiting for a thread (event loop only)."""
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
        self.future_versions = 0
        """Misses refused for a version beyond :data:`FUTURE_HORIZON`."""
        self.bad_names = 0
        """Names in the old server's listings that castore's name rules refuse (left out)."""
        self.busy = 0
        """Calls refused with 503: ``fetches + queue`` were running or waiting."""
        self.gave_up = 0
        """Calls given up at their deadline, or because their client hung up."""

    def close(self) -> None:
        self.remote.close()

    # -- calls to the old server ------------------------------------------------------------

    async def _on_old_server(self, call: Callable[[_Guard], T], what: str) -> T:
        """Run ``call`` in one of this migration's own threads, within :class:`MigrationLimits`.

        Busy (503) when ``fetches + queue`` calls are running or waiting already; a
        FiletrackerError (502) at the deadline. A call given up (the deadline, or the
        request cancelled because its client hung up) has its sockets shut down, so its
        thread stops at its next read. anyio's default threads, which every other
        request uses, are never taken.
        """
        limits = self.limits
        if self._calls >= limits.fetches + limits.queue:
            self.busy += 1
            raise Busy(f"{limits.fetches + limits.queue} calls to the old server {self.remote.base_url} are under "
                       "way: try again later", retry_after=max(1, round(limits.timeout)))
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(limits.fetches)  # made inside the event loop, on first use
        guard = _Guard()
        self._calls += 1
        outcome = "gave up"
        try:
            with anyio.move_on_after(limits.deadline):
                try:
                    result = await anyio.to_thread.run_sync(
                        self._short_errors, lambda _: call(guard), what, limiter=self._threads, abandon_on_cancel=True
                    )
                except Exception:
                    outcome = "failed"  # the call itself failed: its thread has ended
                    raise
                outcome = "done"
                return result
        finally:
            self._calls -= 1
            if outcome == "gave up":  # the deadline, or the request was cancelled: its thread may still read
                self.gave_up += 1
                guard.abort()
        raise FiletrackerError(f"the old server {self.remote.base_url} did not answer for {what} "
                               f"within {limits.deadline:g} s")

    # -- reads -----------------------------------------------------------------------------

    async def fetch(self, path: str) -> bool:
        """Bring ``path`` in from the old server; True when castore has it now.

        A path deleted in castore is not asked for (the old server may be down).
        Raises FiletrackerError when the old server cannot be asked (down, 5xx, too
        slow), Busy when too many calls to it are under way.
        """
        if await anyio.to_thread.run_sync(self.store.metadata.deletion, path) is not None:
            self._count("not_resurrected")
            return False
        while (flight := self._flights.get(path)) is not None:
            await flight.done.wait()
            if flight.finished:
                if flight.error is not None:
                    raise flight.error
                return flight.found
            # the request that was fetching it was cancelled: fetch it for this one
        flight = self._flights[path] = _Flight()
        try:
            flight.found = await self._on_old_server(lambda guard: self._fetch(path, guard), path)
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

    def _fetch(self, path: str, guard: _Guard) -> bool:
        with self._worker_lock(path):
            return self._fetch_locked(path, guard)

    def _fetch_locked(self, path: str, guard: _Guard) -> bool:
        if self.store.exists(path):
            return True  # another worker (or an import) brought it meanwhile
        try:
            info, stream = self.remote.open(path, max_window=self.uploads.max_zstd_window,
                                            max_size=self.uploads.max_upload_size, watch=guard.watch)
        except FileNotAvailable:
            self._count("missing")
            return False
        with stream:
            horizon = int(time.time()) + FUTURE_HORIZON
            if info.version > horizon:
                self._count("future_versions")
                raise FiletrackerError(f"{path}: the old server's version ({format_version(info.version)}) is "
                                       f"in the future, beyond {format_version(horizon)} (now + 1 day): not taken")
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
        """Add one to a counter (from any thread)."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)
            if counter == "fetched":
                self.fetched_bytes += size

    # -- writes ----------------------------------------------------------------------------

    async def delete(self, path: str, version: int | None) -> bool:
        """Delete in castore and remember it; like :meth:`Store.delete`, NotFound if neither side has it.

        A path only the old server has is not fetched to be deleted: the remembered
        deletion is enough to keep it out. The old server is asked (within
        :class:`MigrationLimits`) only when castore does not have the path.
        """
        when = version if version is not None else int(time.time())
        metadata = self.store.metadata
        before = await anyio.to_thread.run_sync(metadata.deletion, path)
        try:
            return await anyio.to_thread.run_sync(self._delete_here, path, version, when)
        except NotFound:
            pass
        try:
            old = await self._on_old_server(lambda guard: self.remote.stat(path, watch=guard.watch), path)
        except FileNotAvailable:
            await anyio.to_thread.run_sync(metadata.restore_deletion, path, before, when)  # a failed request changes nothing
            raise NotFound(path) from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(metadata.restore_deletion, path, before, when)
            raise
        if old.version > when:  # the old server's is newer: nothing deleted, nothing to remember
            await anyio.to_thread.run_sync(metadata.restore_deletion, path, before, when)
            return False
        return True

    def _delete_here(self, path: str, version: int | None, when: int) -> bool:
        """Remember the deletion, then delete in castore (NotFound when castore lacks the path)."""
        self.store.metadata.remember_deletion(path, when)  # before deleting: see undo_if_deleted
        return self.store.delete(path, version)

    # -- listing ---------------------------------------------------------------------------

    async def list_folder(self, directory: str, cutoff: int) -> list[str]:
        """See :meth:`_list_folder`; within :class:`MigrationLimits`."""
        return await self._on_old_server(lambda guard: self._list_folder(directory, cutoff, guard), directory)

    def _list_folder(self, directory: str, cutoff: int, guard: _Guard) -> list[str]:
        """Both sides' paths below ``directory`` (ends with ``/``), relative to it, sorted.

        NotFound when neither side has such a folder. An old name that castore's name
        rules refuse (``../x``, ``a//b``, control characters) is left out and counted.
        """
        try:
            ours: list[str] | None = self.store.list_folder(directory, max_version=cutoff)
        except NotFound:
            ours = None
        try:
            listed: list[str] | None = self.remote.list(directory, cutoff, watch=guard.watch,
                                                        max_bytes=self.limits.listing,
                                                        max_names=self.limits.listing // LISTING_BYTES_PER_NAME)
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
            if not is_valid_path(directory + relative):
                self._count("bad_names")
            elif directory + relative not in deleted:
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
            "castore_migration_future_versions_total": (
                "Misses refused: the old server's version was beyond now + 1 day.", self.future_versions),
            "castore_migration_bad_names_total": (
                "Names in the old server's listings that castore's name rules refuse (left out).", self.bad_names),
            "castore_migration_busy_total": ("Calls to the old server refused with 503 (too many waiting).", self.busy),
            "castore_migration_gave_up_total": (
                "Calls to the old server given up (deadline, or the client hung up).", self.gave_up),
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


def migration_status(store: Store, url: str, *, versions: bool = False, ca_bundle: str | None = None) -> MigrationStatus:
    """Compare the old server's listing with the store (``ca_bundle``: see :class:`Remote`).

    ``versions``: also ask the old server for the version of each path castore has,
    and count a path castore has at an older version as left (one HEAD per path).
    """
    remote = Remote(url, ca_bundle=ca_bundle)
    try:
        names = remote.list("/", FAR_FUTURE)
        within = set(remote.list("/", int(time.time()) + FUTURE_HORIZON))
        moved = deleted = 0
        left: list[str] = []
        problems: list[str] = []
        future: list[str] = []
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
                elif name not in within:
                    future.append(path)  # serve --migrate-from refuses its version: it will not move in so
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
        if future:
            problems.append(f"{len(future)} path{' has' if len(future) == 1 else 's have'} a version beyond the "
                            f"horizon (now + 1 day): {', '.join(future[:10])}{', ...' if len(future) > 10 else ''}")
        return MigrationStatus(len(names), moved, deleted, left, problems)
    finally:
        remote.close()
