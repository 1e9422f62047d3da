"""A few MiB kept aside on the store's disk so that deletes still work when it is full.

At 100 % disk SQLite cannot even open its database (the shared-memory file of its
write-ahead log needs a page), let alone log a delete, so a full store could never be
emptied through castore. ``.reserve`` in the store's folder holds
:data:`RESERVE_SIZE` allocated bytes. Puts never touch it: they fail with
:class:`~castore.errors.StoreFull` while it is still there. A delete, a garbage
collection or opening the store that fails for want of space releases it and tries
once more; the reserve is made again when space comes back (after ``castore gc``).
While it cannot be made again, puts fail with StoreFull: they never eat the space
kept for deletes.

Measured on a full tmpfs: without it, a process opening the store fails with "disk I/O
error" (SQLite cannot make its ``-shm`` file), so ``castore rm`` cannot even start; a
delete in a process that has the database open works only while the write-ahead log
can reuse its own pages. With it, both work (tests/store/test_faults.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["RESERVE_FILE", "RESERVE_SIZE", "SpaceReserve"]

RESERVE_FILE = ".reserve"
RESERVE_SIZE = 2 << 20
"""Bytes kept aside: room for SQLite's shared memory and the log of a large delete or gc batch."""


MARGIN = 256 << 10
"""Free bytes left beside a new reserve."""


class SpaceReserve:
    """The reserve file of one store folder (safe to use from several processes)."""

    def __init__(self, folder: Path, size: int = RESERVE_SIZE) -> None:
        self.path = folder / RESERVE_FILE
        self.size = size

    def ensure(self) -> bool:
        """Make the reserve if it is missing and the disk has room; True when it exists."""
        if self.size <= 0:
            return False
        try:
            if self.path.stat().st_size >= self.size:
                return True
        except FileNotFoundError:
            pass
        except OSError:
            return False
        temporary = self.path.with_name(f"{RESERVE_FILE}.{os.getpid()}")
        try:
            if shutil.disk_usage(self.path.parent).free < self.size + MARGIN:
                return False
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            return True
        except OSError:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            return False

    def short_of_space(self) -> bool:
        """True when the disk lacks room for the reserve (not when it failed for another reason)."""
        if self.size <= 0:
            return False
        try:
            return shutil.disk_usage(self.path.parent).free < self.size + MARGIN
        except OSError:
            return False

    def release(self) -> bool:
        """Free the reserve's space; True when there was one to free."""
        try:
            os.unlink(self.path)
        except OSError:
            return False
        return True
