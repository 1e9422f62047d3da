"""Every error castore raises on purpose, in one place.

The tree::

    CastoreError
    ├── InvalidName (ValueError)          a name the store refuses; nothing was changed
    │   ├── InvalidPath                   the path part breaks a path rule
    │   └── InvalidVersion                the ``@version`` part is not a valid version
    ├── NotFound (FileNotFoundError)      no such path in the store
    │   └── VersionNotFound               the path exists, that version is not retained
    ├── PathConflict                      a file where a folder is, or below a file (HTTP 409)
    ├── StoreNotFound                     no store at that root (run ``castore init``)
    │   └── SchemaOutdated                the store's schema is older or newer (``castore migrate-schema``)
    ├── IntegrityError                    stored data does not match its key or size
    │   ├── CorruptBlob                   a blob's bytes do not hash to its key
    │   ├── MissingBlob                   metadata names a blob the backend does not have
    │   └── HashCollision                 (no longer raised: colliding contents are stored apart)
    ├── SettingsMismatch                  migrate-store's target holds another store
    ├── TokenExists (ValueError)          ``token create`` with the name of an existing token
    ├── SourceError                       the content source was short, unreadable or wrong size
    │   ├── UploadTooLarge                a body (or what it decodes to) is over a limit
    │   └── UploadTimeout                 a client stopped sending its body
    ├── StoreFull                         no space left for the store (ENOSPC, SQLITE_FULL)
    ├── ReadOnlyStore                     a write to a store opened read-only (or on a read-only disk)
    └── FiletrackerError                  a client call failed; ``status`` is the HTTP status, if any
        └── FileNotAvailable (NotFound)   the server (or cache) has no such file or version

Each message is one line and says what went wrong with which name.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BlobsUnusable",
    "Busy",
    "CastoreError",
    "CorruptBlob",
    "FileNotAvailable",
    "FiletrackerError",
    "HashCollision",
    "IntegrityError",
    "InvalidName",
    "InvalidPath",
    "InvalidVersion",
    "MissingBlob",
    "NotFound",
    "PathConflict",
    "ReadOnlyStore",
    "SchemaOutdated",
    "SettingsMismatch",
    "SourceError",
    "StoreFull",
    "StoreNotFound",
    "TokenExists",
    "UploadTimeout",
    "UploadTooLarge",
    "VersionNotFound",
]


class CastoreError(Exception):
    """Base class of every error castore raises on purpose."""


class InvalidName(CastoreError, ValueError):
    """A name (path with optional ``@version``) that the store refuses."""


class InvalidPath(InvalidName):
    """The path part of a name breaks a path rule (see :mod:`castore.names`)."""


class InvalidVersion(InvalidName):
    """The version part of a name, or a version argument, is not a valid version."""


class NotFound(CastoreError, FileNotFoundError):
    """No file is stored under this path."""

    def __init__(self, path: str, message: str | None = None) -> None:
        super().__init__(message or f"not found: {path}")
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0])


class VersionNotFound(NotFound):
    """The path exists but the requested version is not (or no longer) retained.

    ``retained``: the versions that are, newest first; the message names them (the first
    :data:`LISTED_VERSIONS`), so that whoever asked can pick one.
    """

    LISTED_VERSIONS = 12

    def __init__(self, path: str, version: int, retained: Sequence[int]) -> None:
        self.version = version
        self.retained = sorted(retained, reverse=True)
        listed = ", ".join(str(v) for v in self.retained[:self.LISTED_VERSIONS])
        more = len(self.retained) - self.LISTED_VERSIONS
        if more > 0:
            listed += f" and {more} older"
        super().__init__(path, f"version {version} of {path} is not retained; retained versions: {listed}")

    @property
    def current(self) -> int | None:
        """The current version of the path (the newest retained)."""
        return self.retained[0] if self.retained else None


class PathConflict(CastoreError):
    """A put would make a name both a file and a folder; nothing was changed.

    A name is one or the other, as in a file system (and in Filetracker's store of
    links): a file cannot be stored under the name of a folder that holds files, nor
    below a file. ``path`` is the name refused, ``taken`` the file in the way, or None
    when ``path`` is a folder.
    """

    def __init__(self, path: str, taken: str | None) -> None:
        if taken is None:
            message = f"cannot store {path}: it is a folder (files are stored below it)"
        else:
            message = f"cannot store {path}: {taken} is a file"
        super().__init__(message)
        self.path, self.taken = path, taken


class StoreNotFound(CastoreError):
    """There is no castore store at the given root."""


class SettingsMismatch(CastoreError):
    """A copy's target already holds another store (other seed or settings): nothing was copied."""


class BlobsUnusable(StoreNotFound):
    """The blob storage named cannot hold the store: a missing bucket, or one these credentials may not
    write to (found at ``castore init`` / ``serve``, with what to do in the message)."""


class TokenExists(CastoreError, ValueError):
    """An access token with that name exists already: nothing was created."""


class SchemaOutdated(StoreNotFound):
    """The store's metadata has another schema revision than this castore needs (run castore migrate-schema)."""


class IntegrityError(CastoreError):
    """Stored data does not match what the metadata says about it."""


class CorruptBlob(IntegrityError):
    """A blob's bytes do not hash to its key, or have the wrong length."""


class MissingBlob(IntegrityError):
    """The metadata references a blob the blob backend does not hold."""


class HashCollision(IntegrityError):
    """Kept for code that catches it; no longer raised.

    Two different contents with one key are now stored as two blobs (``docs/design.md``,
    "Dedup"), so a put never fails for a collision.
    """


class SourceError(CastoreError):
    """The content given to a put could not be read as promised."""


class UploadTooLarge(SourceError):
    """A request body, or the content it decodes to, is larger than the server accepts."""


class UploadTimeout(SourceError):
    """A client stopped sending a request body for longer than the server waits."""


class StoreFull(CastoreError):
    """The disk (or the database) holding the store has no space left; nothing was changed."""


class Busy(CastoreError):
    """The server has as much of this kind of work waiting as it takes: try again later (HTTP 503).

    ``retry_after``: seconds after which a retry may find room (the ``Retry-After`` header).
    """

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReadOnlyStore(CastoreError):
    """A write to a store opened read-only (``--read-only``, or a read-only filesystem)."""


class FiletrackerError(CastoreError):
    """A :class:`castore.client.Client` call failed, named as Filetracker's client names it.

    ``status`` is the HTTP status when a server answered (messages start with
    ``HTTP/<status>:`` like Filetracker's, so code matching ``"404" in str(e)`` keeps
    working), else None (connection refused, timeout, a short or corrupt response).
    """

    server: str | None = None
    """When no server answered: the server's URL (without credentials)."""
    reason: str | None = None
    """When no server answered: why, in a few words (e.g. ``Connection refused``)."""

    def __init__(self, message: str, status: int | None = None, *, server: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.server, self.reason = server, reason

    def __str__(self) -> str:
        return str(self.args[0])


class FileNotAvailable(FiletrackerError, NotFound):
    """The file, or the requested version of it, is not available (HTTP 404).

    ``detail``: for a version castore does not retain, the :class:`VersionNotFound` line
    that names the retained ones, the same from a castore server (``HTTP/404: `` and that
    line) as from an embedded store; None otherwise.
    """

    def __init__(self, path: str, message: str | None = None, status: int | None = 404, *,
                 detail: str | None = None) -> None:
        NotFound.__init__(self, path, message or f"File not available: {path}")
        self.status = status
        self.detail = detail

    @classmethod
    def other_version(cls, path: str, version: int, current: int) -> FileNotAvailable:
        """For an origin that answered ``current`` when ``version`` was asked for: a Filetracker
        server, which keeps no older versions (said in Filetracker's client's words)."""
        return cls(path, f"Version {version} of {path} not available. Server has {current}", status=None)


class WouldWait(Exception):
    """A write asked not to wait (:meth:`castore.metadata.repo.MetadataRepo.not_waiting`) found the database busy.

    Raised before the transaction began: nothing was written. The caller does the same
    work again where waiting is allowed (the server: in a worker thread). Never reaches a
    user; here (not in castore.metadata.repo) so that the server imports it without SQLAlchemy.
    """
