"""The client's local cache: a folder of files shared by every process on a machine.

Layout (the same as Filetracker 2.x's client cache, so an existing cache keeps working)::

    <cache_dir>/files/<path>    the content of <path>; its mtime is its version
    <cache_dir>/locks/<path>    empty lock files (``flock``): shared to read, exclusive to write
    <cache_dir>/tmp/            files being written, renamed into files/ when complete

A file appears in ``files/`` only whole: it is written under ``tmp/``, given its version
as mtime, then renamed. Readers take the shared lock, writers the exclusive one, so a
file is downloaded once when several processes want it at the same time. Access time
is set on every hit, which is what :meth:`LocalCache.clean` evicts by.

A file handed out as a hard link (see :meth:`LocalCache.link_to`) shares its inode with
the cache: write a new file rather than modifying it in place. A modification in place
changes its mtime, so the cache then no longer serves it for the old version.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple, TypeVar

from ..names import check_path, versioned_name
from ..sizes import IO_BUFFER

__all__ = ["CacheEntry", "CleanReport", "LocalCache", "replaced_whole"]

T = TypeVar("T")

STALE_TEMP_SECONDS = 3600.0
"""Temporary files older than this are left over by killed processes; clean removes them."""


class CacheEntry(NamedTuple):
    """One cached file, as Filetracker's ``DataStore.FileInfoEntry``: versioned name, mtime, size."""

    name: str
    mtime: float
    size: int


@dataclass(frozen=True)
class CleanReport:
    """What :meth:`LocalCache.clean` found and did."""

    files_before: int
    bytes_before: int
    files_removed: int
    bytes_removed: int


class LocalCache:
    """Cached files under ``root``; ``locks_dir`` defaults to ``<root>/locks``."""

    def __init__(self, root: str | os.PathLike[str], locks_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root)
        self.files = self.root / "files"
        self.locks = Path(locks_dir) if locks_dir is not None else self.root / "locks"
        self.tmp = self.root / "tmp"

    def __repr__(self) -> str:
        return f"LocalCache({str(self.root)!r})"

    def file_path(self, path: str) -> Path:
        """Where ``path`` (a valid store path) is kept."""
        return self.files / check_path(path).lstrip("/")

    # -- locks -----------------------------------------------------------------------------

    def _lock_path(self, path: str) -> Path:
        return self.locks / check_path(path).lstrip("/")

    @contextmanager
    def locked(self, path: str, *, exclusive: bool, wait: bool = True) -> Iterator[None]:
        """Hold ``path``'s lock: shared for reading, exclusive for writing or deleting.

        With ``wait=False`` a lock held by another process raises BlockingIOError.
        """
        lock_path = self._lock_path(path)
        fd = _retry_on_missing_parent(lambda: os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666), lock_path)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
            yield
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------------

    def version(self, path: str) -> int | None:
        """The version of the cached ``path``, or None when it is not cached."""
        try:
            info = os.stat(self.file_path(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return int(info.st_mtime) if stat.S_ISREG(info.st_mode) else None  # a folder: other paths

    def lookup(self, path: str, version: int | None) -> Path | None:
        """The cached file of ``path@version`` (any version when None), marked as used; else None.

        Call with the lock held.
        """
        file = self.file_path(path)
        cached = self.version(path)
        if cached is None or (version is not None and cached != version):
            return None
        with suppress(OSError):
            os.utime(file, (time.time(), cached))  # access time drives eviction
        return file

    def link_to(self, file: Path, destination: str | os.PathLike[str], *, link: bool = True) -> None:
        """Put a cached file at ``destination``: a hard link when possible, else a copy.

        ``destination`` is replaced whole: it is never seen half-written.
        """
        with replaced_whole(destination) as temporary:
            if link:
                try:
                    os.link(file, temporary)
                    return
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
            shutil.copyfile(file, temporary)

    # -- writing ---------------------------------------------------------------------------

    def add_stream(self, path: str, stream: BinaryIO, version: int) -> Path:
        """Cache ``stream``'s content (a download: the origin's truth) as ``path@version``.

        Replaces whatever is cached, even a "newer" file: a file whose mtime is newer
        than the origin's current version was modified in place, or the origin
        deleted it and took an older one since. Call with the exclusive lock held.
        """
        self.tmp.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.tmp, prefix="add-", delete=False) as out:
            try:
                shutil.copyfileobj(stream, out, IO_BUFFER)
            except BaseException:
                out.close()
                os.unlink(out.name)
                raise
        return self._install(path, Path(out.name), version, keep_newer=False)

    def add_file(self, path: str, source: str | os.PathLike[str], version: int) -> Path:
        """Cache a copy of the local file ``source`` as ``path@version`` (exclusive lock held).

        A newer cached version is kept: an older version never replaces it.
        """
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="add-")
        os.close(fd)
        try:
            shutil.copyfile(source, name)
        except BaseException:
            os.unlink(name)
            raise
        return self._install(path, Path(name), version, keep_newer=True)

    def _install(self, path: str, temporary: Path, version: int, *, keep_newer: bool) -> Path:
        """Rename a complete temporary file into place with its version as mtime."""
        file = self.file_path(path)
        try:
            current = self.version(path)
            if keep_newer and current is not None and current > version:
                os.unlink(temporary)
                return file
            os.utime(temporary, (time.time(), version))
            _retry_on_missing_parent(lambda: os.replace(temporary, file), file)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            raise
        return file

    def delete(self, path: str, version: int | None = None) -> bool:
        """Remove the cached ``path`` (only if it is at ``version``, when given); True if removed."""
        file = self.file_path(path)
        with self.locked(path, exclusive=True):
            cached = self.version(path)
            if cached is None or (version is not None and cached != version):
                return False
            os.unlink(file)
        self._prune(file.parent, self.files)
        lock_path = self._lock_path(path)
        with suppress(OSError):
            os.unlink(lock_path)
        self._prune(lock_path.parent, self.locks)
        return True

    @staticmethod
    def _prune(folder: Path, top: Path) -> None:
        """Remove empty folders from ``folder`` up to (not including) ``top``."""
        while folder != top and top in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # -- listing and eviction ----------------------------------------------------------------

    def entries(self) -> Iterator[CacheEntry]:
        """Every cached file as (versioned name, mtime, size), in no particular order."""
        for directory, _, names in os.walk(self.files):
            for name in names:
                file = Path(directory, name)
                try:
                    info = file.stat()
                except FileNotFoundError:
                    continue
                path = "/" + file.relative_to(self.files).as_posix()
                yield CacheEntry(versioned_name(path, int(info.st_mtime)), info.st_mtime, info.st_size)

    def clean(self, max_bytes: int, *, keep_fraction: float = 0.5, dry_run: bool = False) -> CleanReport:
        """Evict least recently used files once the cache holds ``max_bytes`` or more.

        Removes files, oldest access first, until at most ``keep_fraction`` of
        ``max_bytes`` is left; a file being read or written at that moment is skipped.
        Temporary files left by killed processes are removed too.
        """
        self._remove_stale_temporaries()
        files: list[tuple[float, int, Path]] = []
        for directory, _, names in os.walk(self.files):
            for name in names:
                file = Path(directory, name)
                with suppress(FileNotFoundError):
                    info = file.stat()
                    files.append((info.st_atime, info.st_size, file))
        total = sum(size for _, size, _ in files)
        removed = removed_bytes = 0
        if total >= max_bytes:
            target = max_bytes * keep_fraction
            for _, size, file in sorted(files, key=lambda item: item[0]):
                if total - removed_bytes <= target:
                    break
                if dry_run or self._evict(file):
                    removed += 1
                    removed_bytes += size
        return CleanReport(len(files), total, removed, removed_bytes)

    def _evict(self, file: Path) -> bool:
        path = "/" + file.relative_to(self.files).as_posix()
        try:
            with self.locked(path, exclusive=True, wait=False):
                return self._remove_evicted(file)
        except BlockingIOError:
            return False  # in use right now
        except OSError:
            # no lock file can exist there (a cached file sits where its folder would be):
            # nobody can lock it either, so remove it unlocked
            return self._remove_evicted(file)

    def _remove_evicted(self, file: Path) -> bool:
        try:
            os.unlink(file)
        except FileNotFoundError:
            return False
        self._prune(file.parent, self.files)
        return True

    def _remove_stale_temporaries(self) -> None:
        cutoff = time.time() - STALE_TEMP_SECONDS
        with suppress(FileNotFoundError):
            for entry in os.scandir(self.tmp):
                with suppress(OSError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)


@contextmanager
def replaced_whole(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``destination`` that replaces it once the block ends without error.

    Readers of ``destination`` never see it half-written; on an error the temporary file
    is removed and ``destination`` is left as it was.
    """
    destination = Path(destination)
    temporary = destination.with_name(f".{destination.name}.castore-{os.getpid()}-{time.monotonic_ns()}")
    try:
        yield temporary
        _replace_file(temporary, destination)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise


def _replace_file(new: Path, destination: Path) -> None:
    """``os.replace(new, destination)``, swapping an existing regular file out in one step.

    ext4 (``auto_da_alloc``, on by default) writes a new file's data out before a rename
    that replaces another file: ~0.5-3 ms for 64 KiB here, more than the whole download.
    An exchange (``renameat2(RENAME_EXCHANGE)``) skips that and is just as atomic: readers
    see the old file or the new one, never none; the old one, now under ``new``'s name,
    is unlinked after. Where the exchange is not available (another OS or filesystem) and
    for anything but a regular file, ``os.replace`` does it.
    """
    try:
        regular = stat.S_ISREG(os.lstat(destination).st_mode)
    except FileNotFoundError:
        regular = False
    if not (regular and _exchange(new, destination)):
        os.replace(new, destination)
        return
    try:
        os.unlink(new)  # the old file
    except IsADirectoryError:  # a folder was put in its place meanwhile: undo the swap
        _exchange(new, destination)
        raise
    except FileNotFoundError:
        pass


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """glibc's ``renameat2``, looked up on first use (ctypes costs start-up time), or None."""
    import ctypes

    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names atomically; False when this system or filesystem cannot (or ``b`` is gone)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    import ctypes

    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOENT):
        return False
    raise OSError(error, os.strerror(error), str(b))


def _retry_on_missing_parent(action: Callable[[], T], target: Path) -> T:
    """Run ``action``, creating ``target``'s parent folders first if they are missing.

    Retried because another process may prune an empty folder between the two steps.
    """
    for _ in range(10):
        try:
            return action()
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
    return action()
