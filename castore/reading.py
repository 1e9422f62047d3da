"""Reading a blob back: decoding its stored bytes and proving them, chunk by chunk.

A blob whose chunk digests are known (:mod:`castore.digests`) is read one chunk
(1 MiB of content) at a time, and a chunk is handed out only after its digest matches:
no caller, and so no HTTP client, ever gets a byte that was not verified, even from
the middle of a large file (:meth:`BlobReader.seek_content`, for Range requests). A
mismatch raises :class:`~castore.errors.CorruptBlob`; a server that has already sent
headers then aborts the connection (``castore/server/streaming.py``).

:meth:`BlobReader.verified_stored` hands out the stored zstd frames themselves (for
clients that accept zstd), each piece only once the content it decodes to is verified.

A blob written before revision 0002 has no digests. The store reads it whole once, in
*key mode* (the last chunk is released only after the whole content matches its key),
records the digests it computed, and serves it like any other from then on.

A backend may keep a local copy of a blob for speed (the S3 backend's read cache). When
the stored bytes fail verification, the reader asks once for a fresh stream (``refetch``:
the store drops the local copy and opens the blob again) and goes on from the chunk that
failed; only a copy from the source that fails too is CorruptBlob. The reader knows
digests, the backend knows copies: neither learns the other's job.
"""

from __future__ import annotations

import errno
import io
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import xxhash
import zstandard

from .codec import Codec, decoding_reader
from .digests import CHUNK_SIZE, DIGEST_SIZE, chunk_digest, digest_of_chunk
from .errors import CorruptBlob
from .keys import BlobKey, Hasher

__all__ = ["STORED_PIECE", "BlobReader", "RandomAccess"]

STORED_PIECE = 256 * 1024
"""Verified stored bytes gathered before :meth:`BlobReader.verified_stored` hands them out."""
MAX_BLOCK = 128 * 1024
"""The largest zstd block, compressed or not (RFC 8878, Block_Maximum_Size)."""
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class BlobReader(io.RawIOBase):
    """A read-only binary stream of one stored file's original bytes, verified as it goes.

    ``name`` is the versioned name, ``size`` the original size in bytes. ``digests``
    are the blob's chunk digests; without them ``key_hasher`` must be given and the
    content is checked against ``key`` when its end is read (key mode). ``refetch``,
    called at most once after the stored bytes failed verification, returns a fresh
    stream of them from the backend's source, or None when there is no other copy.
    ``reference``: for a ``zdelta`` frame, its reference's content (read verified).
    """

    def __init__(
        self,
        stored: BinaryIO,
        *,
        codec: Codec,
        key: BlobKey,
        size: int,
        stored_size: int,
        digests: bytes | None,
        name: str,
        version: int,
        key_hasher: Callable[[], Hasher] | None = None,
        refetch: Callable[[], BinaryIO | None] | None = None,
        reference: bytes | None = None,
    ) -> None:
        super().__init__()
        if digests is None and key_hasher is None:
            raise ValueError("a BlobReader needs the blob's digests or its key function")
        self._stored = stored
        self._reference = reference
        self._decoded = decoding_reader(stored, codec, reference)
        self._digests = digests
        self._key_hasher = key_hasher
        self._hasher = key_hasher() if digests is None and key_hasher is not None else None
        self._refetch = refetch
        self.key = key
        self.codec = codec
        self.size = size
        self.stored_size = stored_size
        self.name = name
        self.version = version
        self.in_memory = isinstance(stored, io.BytesIO)
        """True when the stored bytes came from the metadata row (no file I/O to read them)."""
        self._index = 0  # the next chunk to read
        self._skip = 0  # bytes to drop from the next chunk (a Range that starts inside it)
        self._pending = memoryview(b"")
        self._started = False
        self._ended = False
        self.computed_digests: bytes | None = None
        """In key mode, the digests of the content once it has been read whole and matched its key."""

    @property
    def digests(self) -> bytes | None:
        """The chunk digests this reader checks against (None in key mode)."""
        return self._digests

    def readable(self) -> bool:
        return True

    # -- verified content ----------------------------------------------------------------

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if not view:
            return 0
        while not self._pending:
            piece = self._next_piece()
            if not piece:
                return 0
            self._pending = memoryview(piece)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def readall(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> Iterator[bytes]:
        """The rest of the content in verified pieces of up to one chunk (no extra copy)."""
        if self._pending:
            pending, self._pending = bytes(self._pending), memoryview(b"")
            yield pending
        while piece := self._next_piece():
            yield piece

    def seek_content(self, offset: int) -> None:
        """Start reading at content byte ``offset`` (before any read; not in key mode).

        Only the chunks from the one holding ``offset`` on are verified and handed
        out; for a raw blob the bytes before it are not even read.
        """
        if self._started or self._digests is None:
            raise ValueError("seek_content() only before reading, on a blob with digests")
        if not 0 <= offset <= self.size:
            raise ValueError(f"offset {offset} is outside the {self.size} bytes of {self.name}")
        index, self._skip = divmod(offset, CHUNK_SIZE)
        start = index * CHUNK_SIZE
        if self.codec is Codec.RAW and self._stored.seekable():
            self._stored.seek(start)
        else:
            self._discard(start)
        self._index = index

    def random_access(self) -> RandomAccess | None:
        """A seekable view of this content where seeking is cheap; None elsewhere.

        Cheap: a blob stored raw (not compressed) in a seekable file or in its metadata
        row, with chunk digests, before anything was read. A compressed blob would be
        decoded again from its start at each seek backwards, so it has none (a caller
        that must seek copies it; ``django_bridge`` spools it to a temporary file).
        """
        if self._started or self._digests is None or self.codec is not Codec.RAW or not self._stored.seekable():
            return None
        return RandomAccess(self)

    def _chunk_at(self, index: int) -> bytes:
        """Chunk ``index`` of the content, verified (a raw blob in a seekable file only)."""
        if index != self._index:
            self._stored.seek(index * CHUNK_SIZE)
            self._index, self._skip, self._pending, self._ended = index, 0, memoryview(b""), False
        return self._next_chunk()

    def _discard(self, count: int) -> None:
        """Decode and drop ``count`` bytes of content that nobody will be handed."""
        while count > 0:
            dropped = len(self._decode(min(count, CHUNK_SIZE)))
            if not dropped:
                self._fail(f"ends before byte {self.size}")
            count -= dropped

    def _next_piece(self) -> bytes:
        chunk = self._next_chunk()
        if self._skip:
            chunk, self._skip = chunk[self._skip :], 0
        return chunk

    def _next_chunk(self) -> bytes:
        """The next whole chunk of content, verified; empty bytes at the (checked) end."""
        self._started = True
        if self._ended:
            return b""
        if self._index == 0 and self._digests is not None and len(self._digests) != _chunks_in(self.size) * DIGEST_SIZE:
            self._fail("has digests that do not fit its size")
        try:
            return self._read_chunk()
        except CorruptBlob:
            if not self._refetched():
                raise
            self._resume()
            return self._read_chunk()

    def _read_chunk(self) -> bytes:
        start = self._index * CHUNK_SIZE
        if start >= self.size:
            self._end()
            return b""
        want = min(CHUNK_SIZE, self.size - start)
        data = self._decode(want)
        if len(data) < want:
            self._fail(f"has {start + len(data)} bytes, {self.size} recorded")
        if self._digests is not None:
            if chunk_digest(data) != digest_of_chunk(self._digests, self._index):
                self._fail(f"does not match its digest at bytes {start}-{start + want - 1}")
        else:
            assert self._hasher is not None
            self._hasher.update(data)
        if start + want == self.size:
            self._end()
        self._index += 1
        return data

    def _refetched(self) -> bool:
        """After a verification failure: switch to a fresh copy of the stored bytes, once, if there is one."""
        refetch, self._refetch = self._refetch, None
        stored = refetch() if refetch is not None else None
        if stored is None:
            return False
        old_stored, old_decoded = self._stored, self._decoded
        self._stored, self._decoded = stored, decoding_reader(stored, self.codec, self._reference)
        try:
            if old_decoded is not old_stored:
                old_decoded.close()
        finally:
            old_stored.close()
        self._ended = False
        self._pending = memoryview(b"")
        return True

    def _resume(self) -> None:
        """Position the fresh stored bytes at the chunk that failed (``self._index``).

        In key mode the chunks already handed out are hashed again, and must be the
        ones handed out (same chunk digests), or the blob is corrupt.
        """
        start = self._index * CHUNK_SIZE
        if self._hasher is None:
            if self.codec is Codec.RAW and self._stored.seekable():
                self._stored.seek(start)
            else:
                self._discard(start)
            return
        assert self._key_hasher is not None
        handed = self._hasher.digests()[: self._index * DIGEST_SIZE]
        self._hasher = self._key_hasher()
        for _ in range(self._index):
            data = self._decode(CHUNK_SIZE)
            if len(data) < CHUNK_SIZE:
                self._fail(f"has fewer than the {start} bytes already read")
            self._hasher.update(data)
        if self._hasher.digests() != handed:
            self._fail("changed while it was read")

    def _end(self) -> None:
        """At the recorded size: nothing may follow, and in key mode the key must match."""
        if self._decode(1):
            self._fail(f"is longer than its recorded {self.size} bytes")
        if self._hasher is not None:
            if self._hasher.key() != self.key:
                self._fail("does not match its key")
            self.computed_digests = self._hasher.digests()
        self._ended = True

    def _decode(self, size: int) -> bytes:
        """Up to ``size`` decoded bytes (fewer only at the end of the stored bytes)."""
        parts: list[bytes] = []
        remaining = size
        try:
            while remaining > 0:
                part = self._decoded.read(remaining)
                if not part:
                    break
                parts.append(part)
                remaining -= len(part)
        except zstandard.ZstdError as e:
            self._fail(f"cannot be decoded ({e})")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _fail(self, problem: str) -> Any:
        self._ended = True
        self._pending = memoryview(b"")
        raise CorruptBlob(f"{self.name}: the stored content {problem}")

    # -- verified stored bytes -------------------------------------------------------------

    def verified_stored(self) -> Iterator[bytes]:
        """The stored zstd frame(s) as kept, each piece released once what it decodes to is verified.

        Only before anything was read, on a zstd blob with digests. The frames are cut
        at their block boundaries (:func:`_zstd_units`) and fed to a decoder one block at
        a time, so memory stays bounded (a block decodes to at most 128 KiB, however
        compressible). The decoder returns all the content a prefix of the frames can
        yield, so a prefix that decodes only into verified chunks is safe to send: a
        client cannot decode an unverified byte from it. Raises CorruptBlob (after
        releasing only verified pieces) on a mismatch, a frame that does not decode, or
        a wrong size.
        """
        if self._started or self._digests is None or self.codec is not Codec.ZSTD:
            raise ValueError("verified_stored() only before reading, on a zstd blob with digests")
        self._started = True
        sent, sent_digest = 0, xxhash.xxh3_128()
        try:
            for piece in self._stored_pieces():
                sent += len(piece)
                sent_digest.update(piece)
                yield piece
            return
        except CorruptBlob:
            if not self._refetched():
                raise
        # Again from the first stored byte of the fresh copy, which must begin with what was sent.
        seen, seen_digest = 0, xxhash.xxh3_128()
        for piece in self._stored_pieces():
            if seen < sent:
                take = min(len(piece), sent - seen)
                seen_digest.update(piece[:take])
                seen += take
                piece = piece[take:]
                if seen == sent and seen_digest.digest() != sent_digest.digest():
                    self._fail("changed while it was read")
            if piece:
                yield piece
        if seen < sent:
            self._fail("changed while it was read")

    def _stored_pieces(self) -> Iterator[bytes]:
        """One pass of :meth:`verified_stored` over ``self._stored`` from its first byte."""
        digests = self._digests
        assert digests is not None
        frames = _Frames()
        held: deque[tuple[bytes, int]] = deque()
        outgoing: list[bytes] = []
        pending = 0
        content = bytearray()
        decoded = verified = 0
        for unit, decodable in _zstd_units(self._stored, self._fail):
            try:
                out = frames.feed(unit) if decodable else b""
            except zstandard.ZstdError as e:
                self._fail(f"cannot be decoded ({e})")
            decoded += len(out)
            if decoded > self.size:
                self._fail(f"is longer than its recorded {self.size} bytes")
            content += out
            while verified < self.size and len(content) >= min(CHUNK_SIZE, self.size - verified):
                length = min(CHUNK_SIZE, self.size - verified)
                index = verified // CHUNK_SIZE
                if chunk_digest(memoryview(content)[:length]) != digest_of_chunk(digests, index):
                    self._fail(f"does not match its digest at bytes {verified}-{verified + length - 1}")
                del content[:length]
                verified += length
            held.append((unit, decoded))
            while held and held[0][1] <= verified:
                piece = held.popleft()[0]
                outgoing.append(piece)
                pending += len(piece)
            if pending >= STORED_PIECE:
                yield b"".join(outgoing)
                outgoing, pending = [], 0
        if frames.in_frame:
            self._fail("ends inside a zstd frame")
        if decoded != self.size:
            self._fail(f"has {decoded} bytes, {self.size} recorded")
        outgoing.extend(piece for piece, _ in held)
        if outgoing:
            yield b"".join(outgoing)
        self._ended = True

    def close(self) -> None:
        if not self.closed:
            try:
                if self._decoded is not self._stored:
                    self._decoded.close()
            finally:
                self._stored.close()
        super().close()


class RandomAccess(io.RawIOBase):
    """A seekable, read-only stream of a raw blob's content (see :meth:`BlobReader.random_access`).

    Every byte handed out comes from a chunk verified against its digest, as with
    :class:`BlobReader`. The last chunk read is kept (at most 1 MiB), so reads and seeks
    within it (``zipfile`` reading a member's header, then its data) touch no file.
    """

    def __init__(self, reader: BlobReader) -> None:
        super().__init__()
        self._reader = reader
        self.name = reader.name
        self.version = reader.version
        self.size = reader.size
        self._position = 0
        self._held_index = -1
        self._held = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return not self.closed

    def tell(self) -> int:
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence ({whence!r})")
        if base + offset < 0:  # as a file does: zipfile.is_zipfile expects an OSError
            raise OSError(errno.EINVAL, f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill ``buffer`` up to the end of the content (no short reads: ``zipfile`` expects none)."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._position < self.size:
            index, start = divmod(self._position, CHUNK_SIZE)
            if index != self._held_index:
                self._held, self._held_index = b"", -1  # a failed read below leaves nothing held
                self._held = self._reader._chunk_at(index)
                self._held_index = index
            n = min(len(view) - filled, len(self._held) - start)
            view[filled : filled + n] = self._held[start : start + n]
            filled += n
            self._position += n
        return filled

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def close(self) -> None:
        if not self.closed:
            self._held = b""
            self._reader.close()
        super().close()


def _chunks_in(size: int) -> int:
    return -(-size // CHUNK_SIZE)


class _Frames:
    """Decodes a sequence of zstd frames fed in pieces, returning all the output each piece yields."""

    def __init__(self) -> None:
        self._decoder: Any = None
        self.in_frame = False

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._decoder is None:
                self._decoder = zstandard.ZstdDecompressor().decompressobj()
            out.append(self._decoder.decompress(data))
            self.in_frame = True
            data = b""
            if self._decoder.eof:
                data = self._decoder.unused_data
                self._decoder = None
                self.in_frame = False
        return b"".join(out)


def _exactly(stored: BinaryIO, count: int, fail: Callable[[str], Any]) -> bytes:
    data = stored.read(count)
    while len(data) < count:
        more = stored.read(count - len(data))
        if not more:
            fail("ends inside a zstd frame")
        data += more
    return data


def _zstd_units(stored: BinaryIO, fail: Callable[[str], Any]) -> Iterator[tuple[bytes, bool]]:
    """Stored zstd frames cut into units holding at most one block each (RFC 8878 framing).

    Yields ``(unit, decodable)``: a skippable frame is one unit the decoder is not given.
    Only the headers are parsed (sizes and flags); the decoder checks everything else.
    """
    while magic := stored.read(4):
        if len(magic) < 4:
            magic += _exactly(stored, 4 - len(magic), fail)
        if magic[1:] == b"\x2a\x4d\x18" and magic[0] & 0xF0 == 0x50:  # a skippable frame
            size_field = _exactly(stored, 4, fail)
            yield magic + size_field + _exactly(stored, int.from_bytes(size_field, "little"), fail), False
            continue
        if magic != _ZSTD_MAGIC:
            fail("is not a zstd frame")
        descriptor = _exactly(stored, 1, fail)
        flags = descriptor[0]
        single_segment = bool(flags & 0x20)
        header = (0 if single_segment else 1) + (0, 1, 2, 4)[flags & 0x03]
        header += (1 if single_segment else 0, 2, 4, 8)[flags >> 6]
        yield magic + descriptor + _exactly(stored, header, fail), True
        while True:
            block_header = _exactly(stored, 3, fail)
            value = int.from_bytes(block_header, "little")
            kind, size = (value >> 1) & 0x03, value >> 3
            if kind == 3 or size > MAX_BLOCK:
                fail("has an invalid zstd block")
            yield block_header + _exactly(stored, 1 if kind == 1 else size, fail), True
            if value & 1:
                break
        if flags & 0x04:
            yield _exactly(stored, 4, fail), True
