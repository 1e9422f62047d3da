"""Chunk digests: what proves, piece by piece, that bytes read back are the bytes stored.

A content is cut into chunks of :data:`CHUNK_SIZE` bytes (the last one shorter); each
chunk's digest is its unkeyed xxh3-128 (16 bytes), and a blob's *digests* are those
digests concatenated in order (empty for an empty content). The store keeps them in the
blob's metadata row, so that a reader can check every chunk before handing out a single
byte of it, and a Range request can check only the chunks it sends.

The *content digest* is the xxh3-128 of the digests, as hex. It is sent to clients
(``Castore-Content-Digest``) so that they can check a whole download end to end. Both
are unkeyed on purpose: they are functions of the content alone, so anyone holding the
content can compute them and they reveal nothing about the store's secret seed. They
are not what keeps dedup safe (bytes are compared, see ``docs/design.md``): they detect
damage, and they tell different contents apart cheaply.
"""

from __future__ import annotations

import xxhash

__all__ = ["CHUNK_SIZE", "DIGEST_SIZE", "ChunkDigester", "chunk_digest", "content_digest", "digest_of_chunk"]

CHUNK_SIZE = 1 << 20
"""Bytes of content per chunk digest: the unit of verification for reads and Range requests.

castore's one *chunk*: part of the stored format (changing it invalidates every stored
blob's digests). The store also streams contents in pieces of this size. Buffer sizes
that only bound memory or system calls are :data:`castore.sizes.IO_BUFFER`."""
DIGEST_SIZE = 16


def chunk_digest(data: bytes | bytearray | memoryview) -> bytes:
    """The 16-byte digest of one chunk."""
    return xxhash.xxh3_128_digest(data)


def digest_of_chunk(digests: bytes, index: int) -> bytes:
    """The stored digest of chunk ``index`` (empty bytes past the end)."""
    return digests[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]


def content_digest(digests: bytes) -> str:
    """The whole content's digest (32 hex digits), from its chunk digests."""
    return xxhash.xxh3_128_hexdigest(digests)


class ChunkDigester:
    """Incremental chunk digests of a content given in pieces of any size."""

    __slots__ = ("_done", "_filled", "_state", "size")

    def __init__(self) -> None:
        self._state = xxhash.xxh3_128()
        self._filled = 0
        self._done = bytearray()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.size += len(view)
        while view:
            take = min(len(view), CHUNK_SIZE - self._filled)
            self._state.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == CHUNK_SIZE:
                self._done += self._state.digest()
                self._state.reset()
                self._filled = 0

    def digests(self) -> bytes:
        """The digests of every chunk so far (the last, partial chunk included)."""
        return bytes(self._done) + (self._state.digest() if self._filled else b"")
