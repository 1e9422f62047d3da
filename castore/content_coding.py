"""HTTP content codings (``identity``, ``gzip``, ``zstd``) decoded with bounded memory.

One decoder for every body castore reads: uploads on the server, downloads in the
client, and zstd frames the store keeps as they came. A read never returns more than it
was asked for, so a small body that expands enormously (a "zip bomb") costs no more
memory than any other. Every failure is a :class:`~castore.errors.SourceError`.

What the decoder cannot tell by itself: a zstd stream cut at a frame boundary, or a
plain body cut short. Callers compare the decoded size with the size they were promised.
"""

from __future__ import annotations

import io
import zlib
from typing import Any, BinaryIO, cast

import zstandard

from .codec import Codec, decoding_reader
from .errors import SourceError

__all__ = ["CODINGS", "DECODE_READ", "decoded"]

CODINGS = ("identity", "gzip", "zstd")
DECODE_READ = 1 << 20
"""Compressed bytes the gzip decoder pulls from the body at a time."""


def decoded(raw: BinaryIO, encoding: str) -> BinaryIO:
    """A reader of ``raw`` decoded from ``encoding``; SourceError for an unknown coding."""
    if encoding == "identity":
        return raw
    if encoding == "gzip":
        return cast(BinaryIO, _GzipReader(raw))
    if encoding == "zstd":
        return cast(BinaryIO, _ZstdReader(raw))
    raise SourceError(f"unsupported Content-Encoding {encoding!r}")


class _GzipReader(io.RawIOBase):
    """gzip decoding: one member, nothing after it, no more output per read than asked."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._decoder = zlib.decompressobj(wbits=31)
        self._input = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._decoder.eof:
                if self._decoder.unused_data or self._input or self._raw.read(1):
                    raise SourceError("the gzip body has data after its end")
                return 0
            if not self._input:
                self._input = self._raw.read(DECODE_READ) or b""
                if not self._input:
                    raise SourceError("the gzip body is truncated")
            try:
                data = self._decoder.decompress(self._input, len(buffer))
            except zlib.error as e:
                raise SourceError(f"the gzip body cannot be decoded: {e}") from None
            self._input = self._decoder.unconsumed_tail
            if data:
                buffer[: len(data)] = data
                return len(data)


class _ZstdReader(io.RawIOBase):
    """zstd decoding as the store reads its own frames (frame after frame), errors as SourceError."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._decoder = decoding_reader(raw, Codec.ZSTD)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n: int = self._decoder.readinto(buffer)  # type: ignore[attr-defined]
        except zstandard.ZstdError as e:
            raise SourceError(f"the zstd body cannot be decoded: {e}") from None
        return n
