"""HTTP content codings (``identity``, ``gzip``, ``zstd``) decoded with bounded memory.

One decoder for every body castore reads: uploads on the server, downloads in the
client, and zstd frames the store keeps as they came. A read never returns more than it
was asked for, so a small body that expands enormously (a "zip bomb") costs no more
memory than any other. Every failure is a :class:`~castore.errors.SourceError`.

A zstd decoder allocates a window as large as the frame header asks for (up to 2 GiB):
``max_window`` bounds it, and :class:`ZstdFrameWalker` reads the frame headers as the
bytes go by, so a frame asking for more is refused with a clear message before the
decoder sees it. The walker also follows block sizes to the end of every frame: a body
cut anywhere inside a frame, even inside its 4-byte checksum, is an error (the zstd
library's streaming reader returns what it decoded and stays silent).

What the decoder cannot tell by itself: a zstd stream cut at a frame boundary, or a
plain body cut short. :class:`Sized` tells it, written once for every caller (uploads on
the server, downloads in the client, zstd frames the store keeps): it counts the decoded
bytes, stops with :class:`SizeMismatch` as soon as they pass the promised size (a bomb
costs at most one read), and again when the content ends short of it.
"""

from __future__ import annotations

import io
import zlib
from typing import Any, BinaryIO, cast

import zstandard

from .errors import SourceError
from .sizes import IO_BUFFER

__all__ = [
    "CODINGS", "DECODE_READ", "MAX_ZSTD_WINDOW", "SizeMismatch", "Sized", "ZstdFrameWalker", "decoded", "max_frame_size",
]

CODINGS = ("identity", "gzip", "zstd")
DECODE_READ = IO_BUFFER
"""Compressed bytes the gzip decoder pulls from the body at a time."""
MAX_ZSTD_WINDOW = 1 << 23
"""Default largest zstd window accepted in an upload (8 MiB: zstd levels 1-19 stay below)."""


def max_frame_size(size: int) -> int:
    """The most bytes of zstd frame(s) accepted for a content of ``size`` bytes.

    Above zstd's worst case (incompressible data): a frame may be a little larger than
    its content, never much larger (e.g. padded with skippable frames). The store
    refuses more (:meth:`castore.ingest.Ingest.prepare_zstd`), and so does the check of
    a ``PUT /batch/`` before anything of the batch is stored (:mod:`castore.batch`).
    """
    return size + size // 128 + 65536


def decoded(raw: BinaryIO, encoding: str, *, max_window: int | None = None) -> BinaryIO:
    """A reader of ``raw`` decoded from ``encoding``; SourceError for an unknown coding.

    ``max_window``: the largest zstd window a frame may ask for (None: zstd's default
    limit, 128 MiB).
    """
    if encoding == "identity":
        return raw
    if encoding == "gzip":
        return cast(BinaryIO, _GzipReader(raw))
    if encoding == "zstd":
        return cast(BinaryIO, _ZstdReader(raw, max_window))
    raise SourceError(f"unsupported Content-Encoding {encoding!r}")


class SizeMismatch(SourceError):
    """A content decoded to more (``longer``) or fewer bytes than it was promised to hold.

    Callers that speak to someone else (an HTTP client, a Filetracker caller) catch it
    and say it in their own words; its own message is a plain one.
    """

    def __init__(self, delivered: int, promised: int, *, longer: bool) -> None:
        self.delivered, self.promised, self.longer = delivered, promised, longer
        if longer:
            super().__init__(f"the content decodes to more than the {promised} bytes promised")
        else:
            super().__init__(f"the content is truncated: {delivered} of {promised} bytes")


class Sized(io.RawIOBase):
    """A decoded content checked against the size it was promised, as it is read.

    ``size=None`` promises nothing (the bytes are only counted, in :attr:`delivered`).
    A read that passes ``size`` raises :class:`SizeMismatch` at once; so does the read
    that finds the end before ``size`` bytes came. Decoding errors pass through as they are.
    """

    def __init__(self, decoded: BinaryIO, size: int | None) -> None:
        super().__init__()
        self._decoded = decoded
        self.size = size
        self.delivered = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._decoded.readinto(buffer)  # type: ignore[attr-defined]
        self.delivered += n
        if self.size is not None:
            if self.delivered > self.size:
                raise SizeMismatch(self.delivered, self.size, longer=True)
            if n == 0 and self.delivered < self.size and len(buffer):
                raise SizeMismatch(self.delivered, self.size, longer=False)
        return n


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


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


class ZstdFrameWalker:
    """Follows the structure of zstd frames (RFC 8878) fed to it byte run by byte run.

    It decodes nothing: it reads frame headers (window size, checksum flag), block
    headers and skippable-frame sizes, and so knows where every frame ends. ``feed``
    raises SourceError for a bad magic number, a reserved bit or block type, or a
    window above ``max_window``; ``finish`` raises unless the bytes ended exactly at
    the end of a frame.
    """

    _MAGIC = b"\x28\xb5\x2f\xfd"

    def __init__(self, max_window: int | None = None) -> None:
        self.max_window = max_window
        self._pending = bytearray()  # bytes of a header not yet complete
        self._skip = 0  # bytes of block content, checksum or skippable frame to pass over
        self._state = "magic"  # magic, skippable_size, frame_header, block_header, skipping
        self._after_skip = "magic"
        self._checksum = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                if not self._skip:
                    self._state = self._after_skip
                continue
            need = self._needed()
            take = min(need - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == self._needed():
                self._step()

    def _needed(self) -> int:
        """Bytes the current header needs (a frame header's size depends on its first bytes)."""
        if self._state in ("magic", "skippable_size"):
            return 4
        if self._state == "block_header":
            return 3
        # frame header: descriptor byte, then window, dictionary id and content size fields
        if not self._pending:
            return 1
        descriptor = self._pending[0]
        single = descriptor >> 5 & 1
        fcs = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
        dictionary = (0, 1, 2, 4)[descriptor & 3]
        return 1 + (0 if single else 1) + dictionary + fcs

    def _step(self) -> None:
        header, self._pending = bytes(self._pending), bytearray()
        if self._state == "magic":
            if header == self._MAGIC:
                self._state = "frame_header"
            elif header[1:] == b"\x2a\x4d\x18" and header[0] & 0xF0 == 0x50:
                self._state = "skippable_size"
            else:
                raise SourceError("the zstd body cannot be decoded: data that is not a zstd frame (bad magic number)")
        elif self._state == "skippable_size":
            self._skip_then(int.from_bytes(header, "little"), "magic")
        elif self._state == "frame_header":
            self._frame_header(header)
        else:
            self._block_header(header)

    def _skip_then(self, count: int, state: str) -> None:
        self._after_skip = state
        self._skip = count
        self._state = "skipping" if count else state

    def _frame_header(self, header: bytes) -> None:
        descriptor = header[0]
        if descriptor & 0x08:
            raise SourceError("the zstd body cannot be decoded: a frame header has its reserved bit set")
        self._checksum = bool(descriptor & 0x04)
        single = descriptor >> 5 & 1
        if single:
            fcs_size = (1, 2, 4, 8)[descriptor >> 6]
            window = int.from_bytes(header[len(header) - fcs_size :], "little") + (256 if fcs_size == 2 else 0)
        else:
            exponent, mantissa = header[1] >> 3, header[1] & 7
            base = 1 << (10 + exponent)
            window = base + (base >> 3) * mantissa
        if self.max_window is not None and window > self.max_window:
            raise SourceError(
                f"the zstd body needs a {_mib(window)} window; this server accepts at most "
                f"{_mib(self.max_window)} (use a lower compression level)"
            )
        self._state = "block_header"

    def _block_header(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        last, kind, size = value & 1, value >> 1 & 3, value >> 3
        if kind == 3:
            raise SourceError("the zstd body cannot be decoded: a block of the reserved type")
        content = 1 if kind == 1 else size
        if last:
            self._skip_then(content + (4 if self._checksum else 0), "magic")
        else:
            self._skip_then(content, "block_header")

    def finish(self) -> None:
        """Raise SourceError unless the bytes fed so far end exactly at a frame's end."""
        if self._skip or self._pending or self._state != "magic":
            raise SourceError("the zstd body is truncated: it ends inside a frame")


class _Walked(io.RawIOBase):
    """Passes the bytes of ``raw`` through, feeding each to a frame walker."""

    def __init__(self, raw: BinaryIO, walker: ZstdFrameWalker) -> None:
        super().__init__()
        self._raw = raw
        self.walker = walker

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        if not data:
            return 0
        self.walker.feed(data)
        buffer[: len(data)] = data
        return len(data)


class _ZstdReader(io.RawIOBase):
    """zstd decoding frame after frame, each frame's structure checked; errors as SourceError."""

    def __init__(self, raw: BinaryIO, max_window: int | None) -> None:
        super().__init__()
        self._walked = _Walked(raw, ZstdFrameWalker(max_window))
        decompressor = zstandard.ZstdDecompressor(max_window_size=max_window or 0)  # 0: zstd's default
        self._decoder = decompressor.stream_reader(cast(BinaryIO, self._walked), read_across_frames=True)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n: int = self._decoder.readinto(buffer)
        except zstandard.ZstdError as e:
            raise SourceError(f"the zstd body cannot be decoded: {e}") from None
        if n == 0:
            self._walked.walker.finish()
        return n
