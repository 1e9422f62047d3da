"""Failures of the disk under a store, told apart from bugs: a full disk, a read-only one.

The operating system says ``ENOSPC`` (or ``EDQUOT``) when a blob file cannot grow,
and SQLite says ``database or disk is full`` (``SQLITE_FULL``) when its write-ahead
log cannot; both mean the same thing to a user. :func:`as_store_fault` turns either
into one :class:`~castore.errors.StoreFull`, and ``EROFS`` or SQLite's ``attempt to
write a readonly database`` into :class:`~castore.errors.ReadOnlyStore`, each with a
one-line message naming the cause. Anything else is left alone (None).

:func:`locked_out` tells one more condition that is not a bug: SQLite's ``database is
locked``, another process having held the write lock through a whole busy timeout.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import CastoreError, ReadOnlyStore, StoreFull

__all__ = ["as_store_fault", "faults_named", "is_disk_full", "locked_out", "on_read_only_filesystem"]

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = ("database or disk is full",)
_SQLITE_READ_ONLY = ("attempt to write a readonly database",)
_SQLITE_LOCKED = "database is locked"


def _causes(error: BaseException) -> list[BaseException]:
    """``error``, the DB-API error SQLAlchemy wraps (``.orig``) and the ``__cause__`` chain."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return seen


def as_store_fault(error: BaseException) -> CastoreError | None:
    """A StoreFull or ReadOnlyStore saying what ``error`` means, or None if it means neither."""
    for cause in _causes(error):
        if isinstance(cause, (StoreFull, ReadOnlyStore)):
            return cause
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            return StoreFull(f"no space left on the store's disk ({cause.strerror})")
        if isinstance(cause, OSError) and cause.errno == errno.EROFS:
            return ReadOnlyStore("the store's filesystem is read-only")
        text = str(cause).lower()
        if any(marker in text for marker in _SQLITE_FULL):
            return StoreFull("no space left on the store's disk (the metadata database is full)")
        if any(marker in text for marker in _SQLITE_READ_ONLY):
            return ReadOnlyStore("the store's metadata database is read-only")
    return None


@contextmanager
def faults_named() -> Iterator[None]:
    """Re-raise a full or read-only disk as StoreFull or ReadOnlyStore (one line, the cause named)."""
    try:
        yield
    except Exception as e:
        fault = as_store_fault(e)
        if fault is None or fault is e:
            raise
        raise fault from e


def locked_out(error: BaseException) -> bool:
    """True when ``error`` (or what it wraps) is SQLite's ``database is locked``: another process
    held the write lock (or the writers' turn) through a whole busy timeout."""
    return any(_SQLITE_LOCKED in str(cause).lower() for cause in _causes(error))


def is_disk_full(error: BaseException) -> bool:
    """True when ``error`` (or what it wraps) says the disk is full."""
    return isinstance(as_store_fault(error), StoreFull)


def on_read_only_filesystem(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` lies on a filesystem mounted read-only (False when that cannot be told).

    How a store folder is found read-only before opening it: :func:`castore.location.open_parts`
    opens it so, and ``serve`` says so in its early ``/version`` answer.
    """
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
