"""The blob-backend interface: where the stored bytes of large blobs live.

A backend stores opaque *stored bytes* (raw or zstd, the store decides) under a
:data:`~castore.keys.BlobKey`. It knows nothing of paths, versions or reference
counts; the store calls it in the order that keeps the metadata true (see
``docs/design.md``, "Write order").

Writing has two steps because the key is known only after the last byte:
:meth:`BlobBackend.stage` returns a :class:`StagedBlob` to write into, and
:meth:`BlobBackend.publish` makes those bytes durable and visible under the key.
Publishing is idempotent: publishing a key that is already present keeps one copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, ClassVar

from ..keys import BlobKey

__all__ = ["BlobBackend", "StagedBlob"]


class StagedBlob:
    """Bytes of a blob being written, not yet visible under any key."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError(self.write)

    def finish(self) -> int:
        """Flush the bytes to durable storage; return the stored size."""
        raise NotImplementedError(self.finish)

    def abort(self) -> None:
        """Throw the bytes away. Safe to call more than once, and after publish."""
        raise NotImplementedError(self.abort)

    def open(self) -> BinaryIO:
        """Read the finished bytes back, also after publish, until abort: a put compares them on a dedup hit."""
        raise NotImplementedError(self.open)


class BlobBackend:
    """Stored bytes by key. Subclasses implement the methods that raise here."""

    local: ClassVar[bool] = False
    """Whether its bytes are on this machine (a disk, memory), not behind a network call.

    The server stores a small upload on its event loop only for a local backend with local
    metadata (:meth:`castore.server.handlers.FiletrackerApp._store_on_loop`); anything else,
    an unknown backend included, goes to a worker thread.
    """

    def stage(self) -> StagedBlob:
        """Start writing a new blob."""
        raise NotImplementedError(self.stage)

    def publish(self, staged: StagedBlob, key: BlobKey) -> None:
        """Make finished staged bytes durable and visible under ``key``."""
        raise NotImplementedError(self.publish)

    def open(self, key: BlobKey) -> BinaryIO:
        """Open the stored bytes of ``key``; raise MissingBlob when absent."""
        raise NotImplementedError(self.open)

    def delete(self, key: BlobKey) -> None:
        """Remove ``key``; a missing key is not an error."""
        raise NotImplementedError(self.delete)

    def stored_size(self, key: BlobKey) -> int:
        """Size of the stored bytes of ``key``; raise MissingBlob when absent."""
        raise NotImplementedError(self.stored_size)

    def modified(self, key: BlobKey) -> float:
        """When ``key`` was last written (Unix time); raise MissingBlob when absent.

        ``castore check --repair`` removes a file no row knows only once it is older
        than a grace period, so that it never races a put that is about to record it.
        """
        raise NotImplementedError(self.modified)

    def __contains__(self, key: object) -> bool:
        raise NotImplementedError(self.__contains__)

    def __iter__(self) -> Iterator[BlobKey]:
        """Every key present, in no particular order."""
        raise NotImplementedError(self.__iter__)

    def sweep_staging(self, older_than: float) -> int:
        """Remove staged blobs left by crashed writers, older than ``older_than`` (Unix time).

        Returns how many were removed. Backends without leftovers return 0.
        """
        return 0

    def refresh(self, key: BlobKey) -> bool:
        """Drop any local copy of ``key`` kept for speed, so that the next :meth:`open` reads the source.

        Returns True when the backend keeps such copies (opening again may read other
        bytes than a damaged copy did), False when it has only the one copy. The store
        calls it when stored bytes fail verification, and then reads once more.
        """
        return False

    def check_setup(self, create: bool = False) -> None:
        """Raise BlobsUnusable when blobs cannot be written and read back here, saying what to do.

        Run once when a store is set up or served (:func:`castore.location.open_parts`), so that
        a wrong setting fails at once rather than on the first large file. ``create``: make what
        is missing and can be made (S3: the bucket). The default finds nothing to check.
        """

    def put_bytes(self, key: BlobKey, data: bytes) -> None:
        """Store ``data`` under ``key`` in one call (stage, write, finish, publish)."""
        staged = self.stage()
        try:
            staged.write(data)
            staged.finish()
            self.publish(staged, key)
        finally:
            staged.abort()

    def close(self) -> None:
        """Release resources; the default holds none."""
