"""The rows the metadata hands out: small frozen dataclasses, no SQL.

What :class:`~castore.metadata.repo.MetadataRepo` and
:class:`~castore.metadata.txn.WriteTxn` return, and what the store, the maintenance
scans and the server read; importing them loads no SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..codec import Codec
from ..keys import BlobKey

__all__ = [
    "Acquired",
    "BlobRow",
    "BlobState",
    "Child",
    "Current",
    "DedupCandidate",
    "Entry",
    "Reservation",
    "TokenRow",
    "Usage",
]


@dataclass(frozen=True)
class BlobRow:
    """What the metadata knows of one blob."""

    key: BlobKey
    size: int
    stored_size: int
    codec: Codec
    data: bytes | None
    """Inline stored bytes, or None when the blob backend holds them."""
    digests: bytes | None = None
    """Chunk digests of the content; None when not known yet (a blob from before 0002)."""
    frame: int = 0
    """Which frame of the content the blob backend holds (:func:`castore.keys.frame_name`); 0 for a put's own."""
    base: BlobKey | None = None
    """For a ``zdelta`` frame, the key of the content it decodes against (its reference); None otherwise."""


@dataclass(frozen=True)
class DedupCandidate:
    """A blob row as a put sees it when deciding whether to share it."""

    blob: BlobRow
    refcount: int
    created: int


@dataclass(frozen=True)
class Entry:
    """One version of one path and the blob it names."""

    path: str
    version: int
    blob: BlobRow


@dataclass(frozen=True)
class Child:
    """One entry of a folder: a file (with its current version) or a subfolder."""

    name: str
    """The segment below the folder; a subfolder's name ends with ``/``."""
    entry: Entry | None
    """The file's current version (without inline data); None for a subfolder."""


@dataclass(frozen=True)
class Current:
    """The current state of a path, as a write transaction sees it."""

    version: int
    blob_key: BlobKey
    nversions: int


@dataclass(frozen=True)
class Acquired:
    """The blob row after a reference was taken on it."""

    refcount: int
    size: int
    inline: bool
    digests: bytes | None
    created: int


class Reservation(Enum):
    """What :meth:`.WriteTxn.reserve_blob` found (see ``docs/design.md``, "Publishing")."""

    LIVE = "live"
    """Referenced: its bytes are stored; nothing to upload."""
    OWN = "own"
    """Leased to this put, which must upload its bytes before recording the reference."""
    BUSY = "busy"
    """Another put holds a lease with another representation; try again shortly."""


@dataclass(frozen=True)
class BlobState:
    """A blob row as the maintenance scans see it."""

    row: BlobRow
    """The row as reads see it; its ``data`` is None unless asked for (``with_data``)."""
    refcount: int
    inline_length: int | None
    """Length of the inline bytes; None when the blob backend holds them."""

    @property
    def key(self) -> BlobKey:
        return self.row.key


@dataclass(frozen=True)
class TokenRow:
    """One access token as stored: its name, role and SHA-256 digest (never the token)."""

    name: str
    role: str
    digest: str
    created: int


@dataclass(frozen=True)
class Usage:
    """Space accounting of a store (see :meth:`castore.store.Store.usage`)."""

    files: int
    logical_bytes: int
    versions: int
    retained_bytes: int
    blobs: int
    blob_bytes: int
    stored_bytes: int
    inline_blobs: int
    unreferenced_blobs: int

    @property
    def dedup_ratio(self) -> float:
        """Retained logical bytes per stored byte (1.0 for an empty store)."""
        return self.retained_bytes / self.stored_bytes if self.stored_bytes else 1.0
