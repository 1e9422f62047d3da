"""Group commit: small puts that find this worker's database writes busy are stored together.

A small put is stored at once on the event loop when SQLite's write lock is free
(:meth:`castore.server.handlers.FiletrackerApp._store_on_loop`). Under many clients it
seldom is: another put of this worker or of another worker process holds it. Each such
put used to wait for the lock in a thread of its own and commit alone, so every put paid a
thread, a turn on the lock between processes, a transaction and a commit, and SQLite
re-read the pages the other process had changed since. With 16 castore clients putting
64 KiB files on a 2-core machine, ``castore serve``'s two workers spent 1.4-1.7 ms of CPU
a put where one worker alone spent 0.9; grouped, 0.8-1.0 ms, and ``benchmarks/server.py``'s
16-client put row went from 1.9-2.5x Filetracker's rate to 3.7x (``benchmarks/README.md``).

Here the puts that cannot be stored at once join a queue, and one writer thread per
worker process stores everything queued so far in one transaction
(:meth:`castore.store.Store.put_many`), then the next group: the more puts wait, the more
share a commit. Each put's answer is its own: when the group's transaction fails, every
put of it is stored again alone (:data:`WriteOne`), so one bad put gets its error and the
others are stored as they would have been; but an error every put would meet alone too
(the database locked by another process past the busy timeout) is given to each at once
(:data:`WriteMany` returns it for each), not met again put after put. A put whose request
is cancelled before its group starts is not stored; once its group started, it is stored
like any other.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["MAX_GROUP_BYTES", "MAX_GROUP_PUTS", "GroupWriter"]

T = TypeVar("T")

MAX_GROUP_PUTS = 64
"""Puts stored in one transaction at most (the rest wait for the next group)."""
MAX_GROUP_BYTES = 16 << 20
"""Bytes of bodies in one group at most (a first put larger than this still forms a group alone)."""

WriteMany = Callable[[Sequence[T]], Sequence[str | BaseException | None]]
"""Stores a group in one transaction: each put's versioned name, the error it alone raised, or
None for a put it left to be stored alone (:data:`WriteOne`); raising means the transaction
failed as a whole (nothing stored)."""
WriteOne = Callable[[T], str]
"""Stores one put in a transaction of its own: its versioned name, or its error raised."""


class GroupWriter(Generic[T]):
    """A worker process's queue of small puts and the thread that stores them group by group.

    ``write_many`` and ``write_one`` run in that thread; ``size`` is a put's body size
    (for :data:`MAX_GROUP_BYTES`). :meth:`submit` is called on the event loop.
    """

    def __init__(self, write_many: WriteMany[T], write_one: WriteOne[T], size: Callable[[T], int]) -> None:
        self._write_many = write_many
        self._write_one = write_one
        self._size = size
        self._queue: deque[tuple[T, Future[str]]] = deque()
        self._wake = threading.Condition()
        self._writing = False
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        """True while puts wait or a group is being stored: a new put then joins them
        rather than trying the lock on the event loop (where it would find it taken)."""
        return self._writing or bool(self._queue)

    async def submit(self, put: T) -> str:
        """Store ``put`` with the next group; its versioned name, or its error raised."""
        future: Future[str] = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the server is stopping: no more puts are stored")
            if self._thread is None or not self._thread.is_alive():  # first put, or the thread died (a bug)
                thread = threading.Thread(target=self._run, name="castore-group-commit", daemon=True)
                thread.start()  # before the put is queued: if it cannot start, the put is refused, not left queued
                self._thread = thread
            self._queue.append((put, future))
            self._wake.notify()
        return await asyncio.wrap_future(future)  # cancelled while queued: not stored (see the module)

    def close(self) -> None:
        """Store what is queued, then stop the thread (the server is stopping)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._wake:  # left only if the thread died (a bug): answered, not left waiting
            while self._queue:
                _, future = self._queue.popleft()
                if future.set_running_or_notify_cancel():
                    future.set_exception(RuntimeError("the server stopped before the put was stored"))

    def _take(self) -> list[tuple[T, Future[str]]] | None:
        """The next group (FIFO, within the bounds), waiting for one; None once closed and empty."""
        with self._wake:
            while not self._queue:
                if self._closed:
                    return None
                self._wake.wait()
            group: list[tuple[T, Future[str]]] = []
            total = 0
            while self._queue and len(group) < MAX_GROUP_PUTS:
                put, future = self._queue[0]
                size = self._size(put)
                if group and total + size > MAX_GROUP_BYTES:
                    break
                self._queue.popleft()
                if future.set_running_or_notify_cancel():  # False: its request was cancelled
                    group.append((put, future))
                    total += size
            self._writing = True  # until _run has answered the group
            return group

    def _run(self) -> None:
        while (group := self._take()) is not None:
            try:
                if group:
                    self._store(group)
            finally:
                for _, future in group:  # never a request left waiting, whatever went wrong
                    if not future.done():
                        future.set_exception(RuntimeError("the put was not stored (group commit failed)"))
                with self._wake:
                    self._writing = False

    def _store(self, group: list[tuple[T, Future[str]]]) -> None:
        puts = [put for put, _ in group]
        try:
            results: Sequence[str | BaseException | None] = self._write_many(puts)
        except Exception:  # noqa: BLE001 - the group as a whole: each put again, alone, for its own answer
            results = [None] * len(puts)
        for (put, future), result in zip(group, results, strict=True):
            if result is None:
                result = self._alone(put)
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _alone(self, put: T) -> str | BaseException:
        try:
            return self._write_one(put)
        except Exception as e:  # noqa: BLE001 - its own error, for its own answer
            return e
