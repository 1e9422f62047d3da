"""Where a client's files live: a server (:class:`~castore.client.remote.Remote`) or a store
opened in this process (:class:`EmbeddedOrigin`), behind one :class:`Origin` protocol.

The embedded origin answers as a castore server would: a store's ``NotFound`` becomes
``FileNotAvailable`` and a file/folder conflict ``HTTP/409``, so a :class:`~castore.client.Client`
behaves the same with either origin. ``castore.store`` is imported only as a type: a Store is
recognised without importing it (:func:`is_store`), which keeps a remote client's start-up light.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from ..errors import FileNotAvailable, FiletrackerError, NotFound, PathConflict, VersionNotFound
from ..names import parse_name, versioned_name
from .remote import ProgressReader, RemoteFile

if TYPE_CHECKING:
    from typing_extensions import TypeIs

    from ..store import Store

class Origin(Protocol):
    """Where a client's files live: a server, or a store in this process."""

    def stat(self, path: str, *, version: int | None = None) -> RemoteFile: ...

    def open(self, path: str, *, version: int | None = None) -> tuple[RemoteFile, BinaryIO]:
        """The current version (or that retained ``version``; a Filetracker server: its current one) and its content."""
        ...

    def put(self, path: str, source: str | os.PathLike[str], version: int, *, compress: bool = True) -> int:
        """Store the file ``source`` as ``path@version``; the version now current.

        May also take ``progress=callable``, called with each number of bytes read
        (:class:`Remote` and :class:`EmbeddedOrigin` do; the client passes it only when given).
        """
        ...

    def delete(self, path: str, version: int) -> None: ...

    def list(self, subpath: str, cutoff: int | None = None) -> list[str]: ...

    def iter_list(self, subpath: str, cutoff: int | None = None) -> Iterator[str]:
        """:meth:`list` a block at a time; a folder that is not one raises before the first name."""
        ...


class EmbeddedOrigin:
    """A :class:`Store` opened in this process, answering as a server would."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"EmbeddedOrigin({self.store!r})"

    def stat(self, path: str, *, version: int | None = None) -> RemoteFile:
        with _not_available(path):
            info = self.store.stat(versioned_name(path, version) if version is not None else path)
        return RemoteFile(info.version, info.size)

    def open(self, path: str, *, version: int | None = None) -> tuple[RemoteFile, BinaryIO]:
        with _not_available(path):
            reader = self.store.open_file(versioned_name(path, version) if version is not None else path)
        return RemoteFile(reader.version, reader.size), cast(BinaryIO, reader)  # a RawIOBase: read/readinto

    def put(
        self,
        path: str,
        source: str | os.PathLike[str],
        version: int,
        *,
        compress: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        with open(source, "rb") as f:
            reader = f if progress is None else cast(BinaryIO, ProgressReader(f, progress))
            try:
                return parse_name(self.store.put(path, reader, version)).version or version
            except PathConflict as e:
                raise FiletrackerError(f"HTTP/409: {e}", status=409) from e  # as a castore server answers

    def delete(self, path: str, version: int) -> None:
        with _not_available(path):
            self.store.delete(path, version)

    def list(self, subpath: str, cutoff: int | None = None) -> list[str]:
        return list(self.iter_list(subpath, cutoff))

    def iter_list(self, subpath: str, cutoff: int | None = None) -> Iterator[str]:
        try:
            return self.store.iter_folder(subpath or "/", max_version=cutoff)
        except NotFound:
            raise FiletrackerError(f"{subpath}: Path doesn't exist or is not a directory", status=400) from None


@contextmanager
def _not_available(path: str) -> Iterator[None]:
    """A store's NotFound as FileNotAvailable; a VersionNotFound's line as its ``detail`` (and message)."""
    try:
        yield
    except VersionNotFound as e:
        raise FileNotAvailable(path, str(e), detail=str(e)) from None
    except NotFound:
        raise FileNotAvailable(path) from None


def is_store(value: object) -> TypeIs[Store]:
    """True for a :class:`Store`, without importing ``castore.store`` (an object cannot be
    a Store unless that module was imported already)."""
    store_module = sys.modules.get("castore.store")
    return store_module is not None and isinstance(value, store_module.Store)
