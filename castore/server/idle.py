"""``serve --compact-when-idle``: compact slices while no request comes, stopped at once when one does (#23).

A server is idle most of the night; ``castore compact`` settles contents at a high zstd
level where nobody waits for it. With ``--compact-when-idle`` the server does so itself:

* **Activity** (:class:`Activity`): every request of every worker writes the time (the
  system-wide monotonic clock) into one shared page when it arrives and at each message
  it sends or receives, so a long upload or download counts as activity all along.
  ``/health`` and ``/metrics`` do not count: a monitor polling them would otherwise keep
  the server busy for ever. The page is an unlinked file the master makes before forking
  (:func:`share_idle`); a server of one process needs no sharing.
* **One compactor** (:class:`IdleCompactor`): a thread in each worker, of which one at a
  time compacts: the one holding a ``lockf`` lock on the shared file (locks belong to a
  process; a worker that dies lets another take over). After ``idle`` seconds without
  activity it runs :func:`castore.compacting.compact` as one slice, which asks
  ``should_stop`` before each content and every 64 KiB compressed
  (:data:`castore.compacting.PIECE`, ~0.1 s): any activity since the slice began stops it,
  and the content under way is left as it was (looked at again next time). A request is
  never held back: compression releases the GIL and runs in the compactor's thread.
* **CPU share** (:class:`Pacer`): after each step the thread rests in proportion to the
  CPU time it used, so that it works ``cpu`` of one core at most (0.5 by default).
* A slice that finds nothing left waits for the next activity (new writes) before another.

What the compactor did is in the shared page too, so that ``/metrics`` of any worker
shows it (:meth:`Activity.metrics`). Several servers on one PostgreSQL each run their own
compactor: the row switch is a compare-and-swap, so two compacting one content waste work
but never harm it.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..inherited import inherited_file, share_file

if TYPE_CHECKING:
    from ..compacting import CompactedStore

__all__ = ["IDLE_FD_VARIABLE", "QUIET_PATHS", "Activity", "IdleCompactor", "Pacer", "Touching", "share_idle"]

IDLE_FD_VARIABLE = "CASTORE_IDLE_FD"
"""The environment variable naming the shared page's file descriptor (inherited through ``fork``)."""
QUIET_PATHS = ("/health", "/metrics")
"""Requests that do not count as activity (below the server's prefix)."""
_FIELDS = ("last", "running", "slices", "stopped", "contents", "saved")
"""The doubles of the shared page: last activity, a slice running (0/1), slices run, slices a
request stopped, contents looked at, stored bytes saved."""
_SIZE = 8 * len(_FIELDS)
REST_STEP = 0.05
"""Seconds between two looks at the activity while resting or waiting."""


def share_idle() -> None:
    """In the master, before the workers fork: make the shared page (an unlinked file) they inherit."""
    share_file(IDLE_FD_VARIABLE, prefix="castore-idle-", size=mmap.PAGESIZE)


class Activity:
    """When a request last came to any worker of this server, and what its idle compactor did.

    ``fd``: the shared page's file (default: :data:`IDLE_FD_VARIABLE`'s); None there too:
    a page of this process alone, which then always leads.
    """

    def __init__(self, fd: int | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._fd = fd if fd is not None else inherited_file(IDLE_FD_VARIABLE, size=_SIZE)
        self._page = mmap.mmap(-1, _SIZE) if self._fd is None else mmap.mmap(self._fd, _SIZE, mmap.MAP_SHARED)
        self._leading = self._fd is None

    def touch(self) -> None:
        """A request arrived or moved on: now is the last activity."""
        struct.pack_into("d", self._page, 0, self.clock())

    def get(self, field: str) -> float:
        return float(struct.unpack_from("d", self._page, 8 * _FIELDS.index(field))[0])

    def set(self, field: str, value: float) -> None:
        """Only the leading worker's compactor writes the fields but ``last``."""
        struct.pack_into("d", self._page, 8 * _FIELDS.index(field), value)

    def add(self, field: str, value: float) -> None:
        self.set(field, self.get(field) + value)

    def lead(self) -> bool:
        """Whether this process is the one that compacts (takes the lock if nobody holds it).

        The lock lasts while this object lives: POSIX drops a process's record locks on a
        file when it closes any descriptor of it (here, the mapping's, at :meth:`close`).
        """
        if not self._leading and self._fd is not None:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
                self._leading = True
            except OSError:
                pass
        return self._leading

    def metrics(self) -> str:
        """The compactor's figures in the Prometheus text format (for ``/metrics``)."""
        lines = []
        for name, field, kind, text in (
            ("castore_idle_compact_running", "running", "gauge", "1 while an idle compaction slice runs."),
            ("castore_idle_compact_slices_total", "slices", "counter", "Idle compaction slices run."),
            ("castore_idle_compact_stopped_total", "stopped", "counter", "Slices stopped by a request."),
            ("castore_idle_compact_contents_total", "contents", "counter", "Contents looked at by idle slices."),
            ("castore_idle_compact_saved_bytes_total", "saved", "counter", "Stored bytes idle slices saved."),
        ):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {int(self.get(field))}"]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self._page.close()


class Touching:
    """ASGI middleware: each request's arrival and messages are activity, but :data:`QUIET_PATHS`'."""

    def __init__(self, app: ASGIApp, activity: Activity, *, prefix: str = "") -> None:
        self.app = app
        self.activity = activity
        base = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.quiet = frozenset(base + path for path in QUIET_PATHS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.quiet:
            await self.app(scope, receive, send)
            return
        touch = self.activity.touch
        touch()

        async def touching_receive() -> Message:
            message = await receive()
            touch()
            return message

        async def touching_send(message: Message) -> None:
            touch()
            await send(message)

        try:
            await self.app(scope, touching_receive, touching_send)
        finally:
            touch()


class Pacer:
    """Keeps a thread's CPU use to ``share`` of one core: after a step it owes a rest in proportion.

    ``cpu``: the thread's CPU seconds (compression counts, whether it holds the GIL or not).
    """

    def __init__(self, share: float, *, cpu: Callable[[], float] = time.thread_time) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"the CPU share must be above 0 and at most 1, not {share}")
        self.share = share
        self.cpu = cpu
        self._mark = cpu()

    def owed(self) -> float:
        """Seconds to rest now for the CPU used since the last call (0 at a share of 1)."""
        now = self.cpu()
        used, self._mark = now - self._mark, now
        return used * (1 - self.share) / self.share


class IdleCompactor:
    """A thread that compacts ``store`` in slices while ``activity`` says the server is idle.

    ``idle``: seconds without activity before a slice starts; ``cpu``: the share of one core
    a slice may use (:class:`Pacer`); ``level``: the zstd level (as ``castore compact``'s).
    """

    def __init__(self, store: CompactedStore, activity: Activity, *, idle: float, cpu: float, level: int) -> None:
        Pacer(cpu)  # ValueError for a share out of range, here rather than in the thread
        self.store = store
        self.activity = activity
        self.idle = idle
        self.cpu = cpu
        self.level = level
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done_at: float | None = None
        """When a slice found nothing left: no other until some activity after it."""

    def start(self) -> None:
        """Start the thread; the server's start counts as activity (a first slice waits ``idle`` seconds)."""
        self.activity.touch()
        self._thread = threading.Thread(target=self._run, daemon=True, name="castore-idle-compact")
        self._thread.start()

    def close(self) -> None:
        """Stop (a slice under way stops at its next step) and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            quiet_for = self.activity.clock() - self.activity.get("last")
            if quiet_for < self.idle:
                self._stop.wait(min(self.idle - quiet_for, 1.0) + 0.01)
                continue
            if (self._done_at is not None and self.activity.get("last") <= self._done_at) or not self.activity.lead():
                self._stop.wait(min(self.idle, 1.0))
                continue
            try:
                self._slice()
            except Exception:  # a slice that fails (a database gone away) must not end the thread for good
                logging.getLogger(__name__).exception("castore: an idle compaction slice failed")
                self._stop.wait(max(self.idle, 1.0))

    def _slice(self) -> None:
        from ..compacting import compact

        activity = self.activity
        began = activity.get("last")
        pacer = Pacer(self.cpu)

        def interrupted() -> bool:
            return self._stop.is_set() or activity.get("last") > began

        def should_stop() -> bool:
            rest = pacer.owed()
            while rest > 0 and not interrupted():
                self._stop.wait(min(rest, REST_STEP))
                rest -= REST_STEP
            pacer.owed()  # resting is not working
            return interrupted()

        activity.set("running", 1)
        try:
            report = compact(self.store, level=self.level, should_stop=should_stop)
        finally:
            activity.set("running", 0)
        activity.add("slices", 1)
        activity.add("contents", report.contents)
        activity.add("saved", report.bytes_before - report.bytes_after)
        if activity.get("last") > began and not report.finished:
            activity.add("stopped", 1)
        self._done_at = began if report.finished else None

