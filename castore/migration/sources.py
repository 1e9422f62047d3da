"""Where Filetracker's files come from: a 2.x data folder, a 1.x plain folder, a 2.x server.

A source lists *items* (a castore path, and its version when the listing knows it) and
opens them one at a time; everything it cannot make sense of is an :class:`ImportProblem`
(where, and why), never an exception that stops an import.

Filetracker 2.x data folder (``filetracker.servers.storage.FileStorage``)::

    DIR/links/<path>            symlink -> ../../blobs/<xx>/<sha256>; its own (lstat)
                                mtime is the version
    DIR/blobs/<xx>/<sha256>     the content, gzip-compressed, one file per content
    DIR/db/, DIR/locks/         Berkeley DB refcounts and flock files: not needed

Filetracker 2.3.3 keeps a non-ASCII name double-encoded, both under ``links/`` and in
``/list/`` answers: the UTF-8 bytes of the name taken as Latin-1 characters and encoded
to UTF-8 again. :func:`real_name` undoes that.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from ..client.remote import Remote
from ..errors import CastoreError
from ..names import check_path, check_version
from ..sizes import IO_BUFFER

__all__ = [
    "FAR_FUTURE",
    "FolderV1",
    "FolderV2",
    "ImportProblem",
    "Item",
    "Opened",
    "ServerSource",
    "Source",
    "real_name",
]

FAR_FUTURE = 253402300799
"""9999-12-31T23:59:59Z: a ``/list/`` cutoff that lists every version, even future ones
(without a cutoff Filetracker lists only versions up to the current time)."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


def real_name(stored: str) -> str:
    """Undo Filetracker 2.3.3's double encoding of a name, where it round-trips.

    ``"/names/zaÅ¼Ã³Å\\x82Ä\\x87"`` gives ``"/names/zażółć"``; a name that is not
    double-encoded (plain ASCII, or real non-ASCII text) comes back unchanged.
    """
    try:
        return stored.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return stored


@dataclass(frozen=True)
class Item:
    """One file a source offers."""

    path: str
    """The castore path (real name, checked)."""
    where: str
    """Where it is in the source, for reports: a link's file path, or a URL."""
    version: int | None = None
    """Known from the listing (folders); None when only opening tells (servers)."""
    digest: str | None = None
    """The SHA-256 a Filetracker link target names: items with equal digests share one blob."""
    content: str | None = None
    """The file holding the bytes (a blob), when it is not ``where`` itself."""


@dataclass(frozen=True)
class ImportProblem:
    """Something a source could not import: where it is and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Opened:
    """An opened item: its version, its size when known, and a stream of its content."""

    version: int
    size: int | None
    stream: BinaryIO


class Source(ABC):
    """Files to import, listed and opened; safe to open from several threads at once."""

    description: str

    @abstractmethod
    def count(self) -> int | None:
        """How many items (and problems) :meth:`items` will yield, for a progress bar."""

    @abstractmethod
    def items(self) -> Iterator[Item | ImportProblem]:
        """Every file, in a stable order, or a problem found while listing."""

    @abstractmethod
    def open(self, item: Item) -> Opened:
        """Open ``item`` for reading (the stream raises on a corrupt content)."""

    def version_of(self, item: Item) -> int:
        """``item``'s version without reading its content (the listing's, unless it has none)."""
        assert item.version is not None
        return item.version

    def close(self) -> None:
        """Release connections; the source is not used afterwards."""


def _walk_files(top: Path) -> Iterator[tuple[str, tuple[str, ...]] | ImportProblem]:
    """Every non-directory under ``top`` (symlinks not followed), in sorted order: its file path,
    and the names leading to it from ``top``.

    A folder that cannot be listed is an :class:`ImportProblem`, never skipped in silence: the
    files in it would be missing from the import without a word. Plain strings, no
    :class:`~pathlib.Path` a file: an import of links spent a third of its walk in pathlib.
    """
    folders: list[tuple[str, tuple[str, ...]]] = [(str(top), ())]
    while folders:
        folder, parts = folders.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as e:
            yield ImportProblem(folder, f"unreadable folder: {e.strerror}")
            continue
        below = []
        for entry in entries:
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
            except OSError as e:
                yield ImportProblem(entry.path, f"unreadable: {e.strerror}")
                continue
            if is_folder:
                below.append((entry.path, (*parts, entry.name)))
            else:
                yield entry.path, (*parts, entry.name)
        folders.extend(reversed(below))  # depth first, in name order


def _checked_path(parts: tuple[str, ...], where: str) -> str | ImportProblem:
    path = "/" + "/".join(parts)
    try:
        return check_path(path)
    except CastoreError as e:
        return ImportProblem(where, str(e))


class _OnePass(io.RawIOBase):
    """A gzip blob read once, front to back.

    ``GzipFile`` says it is seekable, which makes the store hash a large content in a
    first pass and seek back (decompressing it again) to skip writing a content it
    already has; an import finds those by Filetracker's digests instead.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self._inner = gzip.open(path, "rb")  # noqa: SIM115 - closed by close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._inner.readinto(buffer)

    def close(self) -> None:
        self._inner.close()
        super().close()


BLOBS_SEEN = 10_000
"""Blobs a :class:`FolderV2` remembers having found (~1 MiB)."""


class FolderV2(Source):
    """A Filetracker 2.x server's data folder (``filetracker-server -d DIR``), read directly."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.links = self.root / "links"
        self.blobs = self.root / "blobs"
        self._blobs = str(self.blobs)
        self._blobs_seen: OrderedDict[str, None] = OrderedDict()
        if not self.links.is_dir():
            raise ValueError(f"{self.root} is not a Filetracker 2.x data folder: it has no links/ folder")
        self.description = str(self.root)

    def count(self) -> int:
        return sum(1 for _ in _walk_files(self.links))

    def items(self) -> Iterator[Item | ImportProblem]:
        for link in _walk_files(self.links):
            yield link if isinstance(link, ImportProblem) else self._item(*link)

    def _item(self, where: str, parts: tuple[str, ...]) -> Item | ImportProblem:
        try:
            info = os.lstat(where)
            if not stat.S_ISLNK(info.st_mode):
                return ImportProblem(where, "not a symlink: a Filetracker 2.x link must point at a blob")
            target = os.readlink(where)
        except OSError as e:
            return ImportProblem(where, f"unreadable link: {e.strerror}")
        digest = os.path.basename(target)
        if not _SHA256.fullmatch(digest):
            return ImportProblem(where, f"broken link: target {target!r} does not name a blob")
        blob = os.path.join(self._blobs, digest[:2], digest)
        if not self._blob_is_file(digest, blob):
            return ImportProblem(where, f"broken link: its blob {blob} is missing")
        path = _checked_path(tuple(real_name(part) for part in parts), where)
        if isinstance(path, ImportProblem):
            return path
        try:
            version = check_version(int(info.st_mtime))
        except CastoreError as e:
            return ImportProblem(where, str(e))
        return Item(path, where, version, digest, blob)

    def _blob_is_file(self, digest: str, blob: str) -> bool:
        """Whether ``blob`` is a file; the :data:`BLOBS_SEEN` blobs found last are not looked at
        again (a content has many links: one look at its blob instead of one per link)."""
        if digest in self._blobs_seen:
            self._blobs_seen.move_to_end(digest)
            return True
        if not os.path.isfile(blob):
            return False
        self._blobs_seen[digest] = None
        if len(self._blobs_seen) > BLOBS_SEEN:
            self._blobs_seen.popitem(last=False)
        return True

    def open(self, item: Item) -> Opened:
        assert item.version is not None and item.content is not None
        return Opened(item.version, None, io.BufferedReader(_OnePass(item.content), IO_BUFFER))


class FolderV1(Source):
    """A Filetracker 1.x folder: plain files under a root, version = the file's mtime."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root} is not a folder")
        self.description = str(self.root)

    def count(self) -> int:
        return sum(1 for _ in _walk_files(self.root))

    def items(self) -> Iterator[Item | ImportProblem]:
        for file in _walk_files(self.root):
            if isinstance(file, ImportProblem):
                yield file
                continue
            where, parts = file
            try:
                info = os.stat(where)
            except OSError as e:
                yield ImportProblem(where, f"unreadable: {e.strerror}")
                continue
            if not stat.S_ISREG(info.st_mode):
                yield ImportProblem(where, "not a regular file")
                continue
            path = _checked_path(parts, where)
            if isinstance(path, ImportProblem):
                yield path
                continue
            try:
                yield Item(path, where, check_version(int(info.st_mtime)))
            except CastoreError as e:
                yield ImportProblem(where, str(e))

    def open(self, item: Item) -> Opened:
        assert item.version is not None
        stream = open(item.where, "rb")  # noqa: SIM115 - the importer closes it
        return Opened(item.version, os.fstat(stream.fileno()).st_size, stream)


class ServerSource(Source):
    """A running Filetracker 2.x server (``GET /list/`` and ``GET /files/...``); an ``https://``
    one's certificate is checked against ``ca_bundle`` (see :class:`~castore.client.remote.Remote`)."""

    def __init__(self, url: str, *, timeout: float = 300.0, ca_bundle: str | None = None) -> None:
        self.remote = Remote(url, timeout=timeout, ca_bundle=ca_bundle)
        self.description = self.remote.base_url
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        """Every name the server lists (as it lists them: relative, maybe double-encoded)."""
        if self._names is None:
            self._names = self.remote.list("/", FAR_FUTURE)
        return self._names

    def count(self) -> int:
        return len(self.names())

    def items(self) -> Iterator[Item | ImportProblem]:
        for listed in self.names():
            parts = tuple(real_name(part) for part in listed.split("/"))
            where = f"{self.description}/files/{quote('/'.join(parts))}"
            path = _checked_path(parts, where)
            yield path if isinstance(path, ImportProblem) else Item(path, where)

    def version_of(self, item: Item) -> int:
        """One HEAD: lets a re-run skip a path castore has without downloading it."""
        return self.remote.stat(item.path).version

    def open(self, item: Item) -> Opened:
        info, stream = self.remote.open(item.path)
        return Opened(info.version, info.size, stream)

    def close(self) -> None:
        self.remote.close()
