"""A blob backend on a local filesystem: one file per blob under a fan-out tree.

Layout below the backend's folder::

    ab/cd/abcd…(32 hex)   stored bytes of one blob, read-only, never rewritten in place
    .staging/tmp-…        blobs being written; leftovers of a crash are swept by age

A blob file appears only as a hard link to a complete, fsynced staging file (or the
``rename`` of such a link), followed by an fsync of its folder, so a crash at any point
leaves either no file or the whole file under its key (``docs/design.md``, "Write
order"). Publishing links rather than renames, so the staged bytes stay readable under
their staging name until the put is over: a put that must compare bytes again after
publishing (another put raced it) still has them.

A writer holds an exclusive ``flock`` on its staging file from creation until it is
published or thrown away; the sweep removes only files it can lock, so it never takes
a file from under a live upload, however short the grace. A crashed writer's lock goes
with its process, and its file is swept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import MissingBlob, ReadOnlyStore
from ..keys import BlobKey, is_stored_name
from .base import BlobBackend, StagedBlob
from .staging import locked_new_file, sweep_unheld

__all__ = ["FileBlobBackend", "key_to_relpath"]

STAGING = ".staging"


def key_to_relpath(key: BlobKey) -> str:
    """Where a key lives below the backend folder: ``ab/cd/abcd…``."""
    return f"{key[:2]}/{key[2:4]}/{key}"


def fsync_dir(path: Path) -> None:
    """fsync a folder so that a rename or create inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _linked_spare(path: Path, directory: Path) -> Path:
    """A new hard link to ``path`` under an unused name in ``directory``."""
    while True:
        spare = directory / f"spare-{os.urandom(8).hex()}"
        try:
            os.link(path, spare)
        except FileExistsError:
            continue
        return spare


class _FileStaged(StagedBlob):
    def __init__(self, directory: Path) -> None:
        fd, path = locked_new_file(directory)
        self.path: Path | None = path
        self._file = os.fdopen(fd, "wb", buffering=0)  # open (and locked) until published or aborted

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            assert written is not None
            view = view[written:]

    def finish(self) -> int:
        size = self._file.tell()
        os.fchmod(self._file.fileno(), 0o444)
        os.fsync(self._file.fileno())
        return size

    def open(self) -> BinaryIO:
        assert self.path is not None, "open() needs a finished blob, not yet aborted"
        return open(self.path, "rb")

    def abort(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.path = None
        if not self._file.closed:
            self._file.close()


class FileBlobBackend(BlobBackend):
    """Blobs as files below ``directory`` (created if needed)."""

    local = True

    def __init__(self, directory: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.directory = Path(directory)
        self.read_only = read_only
        self._staging = self.directory / STAGING
        if not read_only:
            self._staging.mkdir(parents=True, exist_ok=True)

    def path_of(self, key: BlobKey) -> Path:
        return self.directory / key_to_relpath(key)

    def stage(self) -> StagedBlob:
        if self.read_only:
            raise ReadOnlyStore(f"the blob folder {self.directory} is open read-only")
        return _FileStaged(self._staging)

    def publish(self, staged: StagedBlob, key: BlobKey) -> None:
        assert isinstance(staged, _FileStaged) and staged.path is not None
        final = self.path_of(key)
        self._make_parents(final.parent)
        try:
            os.link(staged.path, final)
        except FileExistsError:
            # Bytes left under the key (a row collected before its file): replace them whole.
            # The spare name lives in the staging folder, so a crash between the two steps
            # leaves a file the staging sweep removes, not one beside the blobs forever.
            spare = _linked_spare(staged.path, self._staging)
            os.replace(spare, final)
        fsync_dir(final.parent)

    def _make_parents(self, folder: Path) -> None:
        if folder.is_dir():
            return
        for level in (folder.parent, folder):
            try:
                level.mkdir()
            except FileExistsError:
                continue
            fsync_dir(level.parent)

    def open(self, key: BlobKey) -> BinaryIO:
        try:
            return open(self.path_of(key), "rb")
        except FileNotFoundError:
            raise MissingBlob(f"blob {key} is missing from {self.directory}") from None

    def delete(self, key: BlobKey) -> None:
        try:
            self.path_of(key).unlink()
        except FileNotFoundError:
            pass

    def stored_size(self, key: BlobKey) -> int:
        try:
            return self.path_of(key).stat().st_size
        except FileNotFoundError:
            raise MissingBlob(f"blob {key} is missing from {self.directory}") from None

    def modified(self, key: BlobKey) -> float:
        try:
            return self.path_of(key).stat().st_mtime
        except FileNotFoundError:
            raise MissingBlob(f"blob {key} is missing from {self.directory}") from None

    def __contains__(self, key: object) -> bool:
        return is_stored_name(key) and self.path_of(key).is_file()  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[BlobKey]:
        for first in sorted(os.listdir(self.directory)):
            if len(first) != 2:
                continue
            for second in sorted(os.listdir(self.directory / first)):
                for name in os.listdir(self.directory / first / second):
                    if is_stored_name(name):
                        yield BlobKey(name)

    def sweep_staging(self, older_than: float) -> int:
        """Remove staging files older than ``older_than`` that no live writer holds (locks)."""
        if self.read_only or not self._staging.is_dir():
            return 0
        return sweep_unheld(self._staging, older_than)
