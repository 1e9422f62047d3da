"""Turning a put's source into a prepared blob: hashed, maybe compressed, staged.

This is where blob bytes are produced. Nothing here touches the metadata: the
result, a :class:`Prepared`, is handed to the store, which records it in one
transaction and only then publishes staged bytes under their key.

* Small contents (at most ``inline_max`` bytes) are read whole, compressed when it
  pays, and kept as bytes to be stored inline in the metadata row.
* Large contents are streamed in 1 MiB chunks into a staged backend blob; the codec
  is chosen from a sample of the first chunk.
* When the source can be read twice (bytes, seekable files), a large content is
  hashed first and not written at all when a live blob already holds exactly these
  bytes (compared, not assumed from the key: see :meth:`Ingest.prepare`).
* Every path also computes the content's chunk digests (:mod:`castore.digests`), kept
  with the blob so that reads can verify each chunk, and writes zstd frames with their
  content checksum.
* A content that arrives already compressed as zstd (:meth:`Ingest.prepare_zstd`, an
  upload from castore's client) is decoded only to be hashed and counted; the frame
  itself becomes the stored bytes, so the server does not compress it again.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Union, cast

from .blobs.base import BlobBackend, StagedBlob
from .codec import Codec, compress_if_worth, pays, worth_compressing, zstd_chunks
from .content_coding import Sized, SizeMismatch, decoded, max_frame_size
from .digests import CHUNK_SIZE
from .errors import SourceError
from .keys import BlobKey, Hasher, KeyFunction, xxh3_key

__all__ = ["CHUNK_SIZE", "FindSame", "Ingest", "Prepared", "Source"]

Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", BinaryIO]
"""What a put accepts: the content itself, a local file's path, or a binary file object."""

FindSame = Callable[[BlobKey, int, bytes, Callable[[], Iterator[memoryview]]], "tuple[BlobKey, int] | None"]
"""``(key, size, digests, read_again) -> (key, created) of a live blob with exactly this content, or None``.

``read_again()`` yields the content once more, for the byte comparison.
"""


@dataclass
class Prepared:
    """A content ready to be recorded: its key and, unless already stored, its stored bytes."""

    key: BlobKey
    """The key function's key; the store replaces it with the probe key it settles on."""
    size: int
    codec: Codec
    stored_size: int
    digests: bytes | None
    """Chunk digests of the content (:mod:`castore.digests`); None only for a blob from
    before revision 0002 that a put refers to without reading (``Store.put_existing``)."""
    inline: bytes | None = None
    """Stored bytes of a small blob, to be kept in the metadata row."""
    staged: StagedBlob | None = None
    """Stored bytes of a large blob, finished but not yet published."""
    matched: int | None = None
    """With no bytes: the ``created`` time of the live blob found holding this content."""

    @property
    def has_bytes(self) -> bool:
        """False when only the key is known (a live blob already holds this content)."""
        return self.inline is not None or self.staged is not None

    def discard(self) -> None:
        if self.staged is not None:
            self.staged.abort()


@dataclass
class _Opened:
    stream: BinaryIO | None
    data: memoryview | None
    rewind_to: int | None
    """Offset to seek back to for a second pass; None when the stream reads once."""


@contextmanager
def _open_source(source: Source) -> Iterator[_Opened]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield _Opened(None, memoryview(source).cast("B"), 0)
        return
    if isinstance(source, (str, os.PathLike)):
        try:
            stream = open(source, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as e:
            raise SourceError(f"cannot read {os.fspath(source)!r}: {e.strerror}") from None
        with stream:
            yield _Opened(stream, None, 0)
        return
    if not hasattr(source, "read"):
        raise TypeError(f"cannot store a {type(source).__name__}: give bytes, a path or a binary file")
    rewind_to: int | None = None
    try:
        if source.seekable():
            rewind_to = source.tell()
    except (OSError, ValueError, AttributeError):
        rewind_to = None
    yield _Opened(source, None, rewind_to)


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Read until ``size`` bytes or end of stream (a read may return less than asked)."""
    parts = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        if isinstance(chunk, str):
            raise SourceError("the source is a text stream; open files in binary mode")
        parts.append(chunk)
        remaining -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _chunks(stream: BinaryIO, head: bytes | memoryview) -> Iterator[memoryview]:
    """``head`` and then the rest of ``stream``, as chunks of at most :data:`CHUNK_SIZE`."""
    view = memoryview(head)
    for start in range(0, len(view), CHUNK_SIZE):
        yield view[start : start + CHUNK_SIZE]
    readinto = getattr(stream, "readinto", None)
    if readinto is None:
        while chunk := stream.read(CHUNK_SIZE):
            yield memoryview(chunk)
        return
    buffer = memoryview(bytearray(CHUNK_SIZE))
    while n := readinto(buffer):
        yield buffer[:n]


class _Recorder(io.RawIOBase):
    """Reads a stream for a decoder, keeping (or passing to ``sink``) every byte read.

    ``limit`` bounds the bytes read: a frame may be a little larger than its content
    (incompressible data), never much larger (e.g. padded with skippable frames).
    """

    def __init__(self, inner: BinaryIO, *, limit: int) -> None:
        super().__init__()
        self._inner = inner
        self._kept: list[bytes] = []
        self._total = 0
        self._limit = limit
        self.sink: Callable[[bytes], None] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        if not data:
            return 0
        if isinstance(data, str):
            raise SourceError("the source is a text stream; open files in binary mode")
        buffer[: len(data)] = data
        self._total += len(data)
        if self._total > self._limit:
            raise SourceError("the zstd frame is far larger than the content it claims to hold")
        if self.sink is not None:
            self.sink(data)
        else:
            self._kept.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        """The bytes read so far, plus the rest of the stream (which must be empty of frames)."""
        while self.read(CHUNK_SIZE):
            pass
        kept, self._kept = b"".join(self._kept), []
        return kept


def _hashed(chunks: Iterator[memoryview], hasher: Hasher) -> Iterator[memoryview]:
    """``chunks`` as they are, each one hashed on its way through."""
    for chunk in chunks:
        hasher.update(chunk)
        yield chunk


def _memory_chunks(data: memoryview) -> Iterator[memoryview]:
    for start in range(0, len(data), CHUNK_SIZE):
        yield data[start : start + CHUNK_SIZE]


@contextmanager
def _zstd_size_errors() -> Iterator[None]:
    """A zstd content's :class:`SizeMismatch`, said as a put's SourceError."""
    try:
        yield
    except SizeMismatch as e:
        if e.longer:
            raise SourceError(f"the zstd content decodes to more than the {e.promised} bytes promised") from None
        raise SourceError(f"the zstd content is truncated: {e.delivered} of {e.promised} bytes") from None


class Ingest:
    """Prepares blobs for one store: its seed, its blob backend, its size and codec policy."""

    def __init__(
        self,
        seed: int,
        backend: BlobBackend,
        *,
        inline_max: int,
        level: int,
        key_function: KeyFunction = xxh3_key,
    ) -> None:
        self.seed = seed
        self.key_function = key_function
        self.backend = backend
        self.inline_max = inline_max
        self.level = level

    def prepare(
        self,
        source: Source,
        *,
        expected_size: int | None = None,
        find_same: FindSame | None = None,
        force_bytes: bool = False,
    ) -> Prepared:
        """Read ``source`` once (or twice, see the module doc) and prepare its blob.

        ``expected_size``: the size the caller was promised; a different size raises
        SourceError and stores nothing. ``find_same`` looks for a live blob holding
        exactly this content (a large source readable twice is then not written at
        all); ``force_bytes`` always produces stored bytes.
        """
        with _open_source(source) as opened:
            head: bytes | memoryview
            if opened.data is not None:
                head = opened.data[: self.inline_max + 1]
            else:
                assert opened.stream is not None
                head = _read_up_to(opened.stream, self.inline_max + 1)
            if len(head) <= self.inline_max:
                return self._small(bytes(head), expected_size)
            return self._large(opened, head, expected_size, None if force_bytes else find_same)

    def prepare_zstd(self, frame: BinaryIO, *, size: int, max_window: int | None = None) -> Prepared:
        """Prepare a content given as zstd frame(s) decoding to exactly ``size`` bytes.

        The frame is kept as the stored bytes (for a small content only when it saves
        enough, as :func:`~castore.codec.compress_if_worth` decides). Decoding is
        bounded: it stops with SourceError as soon as it passes ``size``, and a frame
        asking for a window above ``max_window`` is refused before it is decoded.
        """
        recorder = _Recorder(frame, limit=max_frame_size(size))
        content = Sized(decoded(cast(BinaryIO, recorder), "zstd", max_window=max_window), size)
        hasher = Hasher(self.seed, self.key_function)
        if size <= self.inline_max:
            with _zstd_size_errors():
                data = _read_up_to(cast(BinaryIO, content), size + 1)  # the extra byte finds the end
            hasher.update(data)
            stored = recorder.take()
            if pays(size, len(stored)):
                return Prepared(hasher.key(), size, Codec.ZSTD, len(stored), hasher.digests(), inline=stored)
            return Prepared(hasher.key(), size, Codec.RAW, size, hasher.digests(), inline=data)
        staged = self.backend.stage()
        recorder.sink = staged.write
        try:
            with _zstd_size_errors():
                while chunk := _read_up_to(cast(BinaryIO, content), CHUNK_SIZE):
                    hasher.update(chunk)
            stored_size = staged.finish()
        except BaseException:
            staged.abort()
            raise
        return Prepared(hasher.key(), size, Codec.ZSTD, stored_size, hasher.digests(), staged=staged)

    def _check_size(self, size: int, expected_size: int | None) -> None:
        if expected_size is not None and size != expected_size:
            raise SourceError(f"content is {size} bytes, {expected_size} were promised")

    def _small(self, data: bytes, expected_size: int | None) -> Prepared:
        self._check_size(len(data), expected_size)
        hasher = Hasher(self.seed, self.key_function)
        hasher.update(data)
        codec, stored = compress_if_worth(data, self.level)
        return Prepared(hasher.key(), len(data), codec, len(stored), hasher.digests(), inline=stored)

    def _large(
        self,
        opened: _Opened,
        head: bytes | memoryview,
        expected_size: int | None,
        find_same: FindSame | None,
    ) -> Prepared:
        known: tuple[BlobKey, int] | None = None
        if find_same is not None and opened.rewind_to is not None:
            hasher = Hasher(self.seed, self.key_function)
            for chunk in self._pass(opened, head, first=True):
                hasher.update(chunk)
            self._check_size(hasher.size, expected_size)
            known = (hasher.key(), hasher.size)
            digests = hasher.digests()
            same = find_same(known[0], known[1], digests, lambda: self._pass(opened, head, first=False))
            if opened.stream is not None:
                # Leave the stream where it began: if the blob is collected before the
                # put records it, the store prepares again from the same source.
                opened.stream.seek(opened.rewind_to)
            if same is not None:
                return Prepared(same[0], known[1], Codec.RAW, 0, digests, matched=same[1])
        codec = Codec.ZSTD if worth_compressing(head, self.level) else Codec.RAW
        chunks = self._pass(opened, head, first=known is None)
        return self._write(chunks, codec, expected_size, known)

    def _pass(self, opened: _Opened, head: bytes | memoryview, *, first: bool) -> Iterator[memoryview]:
        """The content's chunks; a second pass seeks back to where the first began."""
        if opened.data is not None:
            return _memory_chunks(opened.data)
        assert opened.stream is not None
        if first:
            return _chunks(opened.stream, head)
        assert opened.rewind_to is not None
        opened.stream.seek(opened.rewind_to)
        return _chunks(opened.stream, b"")

    def _write(
        self,
        chunks: Iterator[memoryview],
        codec: Codec,
        expected_size: int | None,
        known: tuple[BlobKey, int] | None,
    ) -> Prepared:
        staged = self.backend.stage()
        try:
            hasher = Hasher(self.seed, self.key_function)
            hashed = _hashed(chunks, hasher)
            for piece in zstd_chunks(hashed, self.level) if codec is Codec.ZSTD else hashed:
                staged.write(piece)
            self._check_size(hasher.size, expected_size)
            key = hasher.key()
            if known is not None and known != (key, hasher.size):
                raise SourceError("the source changed while it was being stored")
            stored_size = staged.finish()
        except BaseException:
            staged.abort()
            raise
        return Prepared(key, hasher.size, codec, stored_size, hasher.digests(), staged=staged)

