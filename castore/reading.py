"""Reading a blob back: decoding its stored bytes and checking them against its key.

Every read that reaches the end of a blob verifies its length and its keyed xxh3
digest (about 14 GB/s here, so the check is nearly free) and raises
:class:`~castore.errors.CorruptBlob` rather than hand out damaged bytes silently.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from .codec import Codec, decoding_reader
from .errors import CorruptBlob
from .keys import BlobKey, Hasher

__all__ = ["BlobReader"]


class BlobReader(io.RawIOBase):
    """A read-only binary stream of one stored file's original bytes.

    ``name`` is the versioned name, ``size`` the original size in bytes. Reading to
    the end verifies the content; a mismatch raises CorruptBlob.
    """

    def __init__(
        self,
        stored: BinaryIO,
        *,
        codec: Codec,
        key: BlobKey,
        size: int,
        stored_size: int,
        seed: int,
        name: str,
        version: int,
    ) -> None:
        super().__init__()
        self._stored = stored
        self._decoded = decoding_reader(stored, codec)
        self._hasher: Hasher | None = Hasher(seed)
        self.key = key
        self.codec = codec
        self.size = size
        self.stored_size = stored_size
        self.name = name
        self.version = version
        self.in_memory = isinstance(stored, io.BytesIO)
        """True when the stored bytes came from the metadata row (no file I/O to read them)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        n = self._decoded.readinto(view) if hasattr(self._decoded, "readinto") else self._read_into(view)
        if self._hasher is not None:
            if n:
                self._hasher.update(view[:n])
                if self._hasher.size > self.size:
                    self._fail(f"is longer than its recorded {self.size} bytes")
            elif len(view):
                self._verify()
        return n

    def _read_into(self, view: memoryview) -> int:
        data = self._decoded.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _verify(self) -> None:
        assert self._hasher is not None
        hasher, self._hasher = self._hasher, None
        if hasher.size != self.size:
            self._fail(f"has {hasher.size} bytes, {self.size} recorded")
        if hasher.key() != self.key:
            self._fail("does not match its key")

    def _fail(self, problem: str) -> None:
        self._hasher = None
        raise CorruptBlob(f"blob {self.key} of {self.name} {problem}")

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def take_stored(self) -> BinaryIO:
        """Hand over the stored bytes as kept (raw, or one zstd frame) instead of decoding.

        Only before anything was read; the reader is closed and the caller owns the stream.
        For servers that send a zstd frame to clients that accept it, without recompressing.
        """
        if self._hasher is None or self._hasher.size:
            raise ValueError("take_stored() after reading")
        stored = self._stored
        # Drop the decoder without closing it: closing it would close ``stored`` too.
        self._stored = self._decoded = io.BytesIO()
        self.close()
        return stored

    def close(self) -> None:
        if not self.closed:
            try:
                if self._decoded is not self._stored:
                    self._decoded.close()
            finally:
                self._stored.close()
        super().close()
