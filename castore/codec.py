"""How blob bytes are encoded at rest: ``raw``, ``zstd`` or ``zdelta``, and when compressing pays.

``zdelta`` (written only by ``castore compact``) is one zstd frame compressed against
another stored content, its *reference*, used as a raw-content dictionary (zstd's
"patch-from"): decoding needs the reference's content (:func:`delta_decompressor`).

Level 1 is the default because on contest-style text (lines of integers) it
compresses about 7x faster than level 3 at the same ratio (~2.2, see
``shared/reference/machine-limits.md`` §2b). Whether compression pays is decided
from a sample before the whole blob is compressed, so incompressible data
(random bytes, archives) costs one small trial and is then stored as is.
"""

from __future__ import annotations

import enum
import io
import threading
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

import zstandard

__all__ = [
    "DEFAULT_LEVEL",
    "DELTA_CHAIN_LOG",
    "DELTA_HASH_LOG",
    "MAX_WINDOW_LOG",
    "MIN_SAVING",
    "PROBE_SIZE",
    "SAMPLE_SIZE",
    "SEND_RAW_MAX",
    "Codec",
    "StreamCompressor",
    "compress_if_worth",
    "compressed_chunks",
    "decode_bytes",
    "decoding_reader",
    "delta_compressor",
    "delta_decompressor",
    "pack_for_sending",
    "pays",
    "worth_compressing",
    "zstd_chunks",
    "zstd_compressor",
]

DEFAULT_LEVEL = 1
MIN_SAVING = 0.05
"""Compression must save at least this fraction of the bytes to be used."""

SAMPLE_SIZE = 128 * 1024
"""Bytes of the start of a large blob compressed to decide its codec."""
PROBE_SIZE = 4 * 1024
"""Bytes of a small content compressed first to tell incompressible data cheaply."""
SEND_RAW_MAX = 4 * 1024
"""Contents up to this size are uploaded raw: zstd would save the wire at most a few KiB,
while checking a zstd frame costs the server more CPU than compressing the raw bytes
itself (measured on an embedded store: ~0.1 ms more per 512 B-4 KiB put)."""

_per_thread = threading.local()


def zstd_compressor(level: int = DEFAULT_LEVEL) -> zstandard.ZstdCompressor:
    """This thread's one-shot zstd compressor at ``level`` (with content checksums), made once.

    Making a compressor costs more than compressing 64 KiB with it, and one is not
    thread-safe: hence one per thread. For ``compress()`` only: streams
    (:func:`zstd_chunks`) get their own, as a suspended stream must not share it.
    """
    compressors: dict[int, zstandard.ZstdCompressor] | None = getattr(_per_thread, "compressors", None)
    if compressors is None:
        compressors = _per_thread.compressors = {}
    compressor = compressors.get(level)
    if compressor is None:
        compressor = compressors[level] = zstandard.ZstdCompressor(level=level, write_checksum=True)
    return compressor


class Codec(str, enum.Enum):
    """Encoding of a blob's stored bytes."""

    RAW = "raw"
    ZSTD = "zstd"
    ZSTD_DELTA = "zdelta"
    """A zstd frame compressed against the content of the row's ``base`` (a reference)."""


MAX_WINDOW_LOG = 27
"""The largest window a delta frame uses (128 MiB: zstd's default limit for decoders)."""
DELTA_HASH_LOG = 20
DELTA_CHAIN_LOG = 23
"""log2 of the entries of a delta frame's match-finder tables, at most (hash, chain).

Level 19 takes 2^22 and 2^24 for a reference and a content of 12 MiB each, and the
dictionary holds tables of its own: on the benchmark's largest tail-changed input (12 MiB)
177 MiB of RSS more than the two contents, against 89 MiB with these, for a delta of
53.4 KB against 52.3 KB. The chain table (zstd's binary tree at this level) must cover most
of the reference: with 2^22 entries the same delta came to 1.8 MB."""


def delta_compressor(reference: bytes, level: int, size: int) -> zstandard.ZstdCompressor:
    """A compressor of a ``size``-byte content against ``reference`` (a raw-content dictionary).

    The window covers the reference and the content, as ``zstd --patch-from`` sets it,
    so that a match anywhere in the reference is in reach.
    """
    window_log = min(MAX_WINDOW_LOG, max(10, (len(reference) + size).bit_length()))
    given = {"source_size": size, "window_log": window_log, "write_checksum": 1, "write_content_size": 1}
    params = zstandard.ZstdCompressionParameters.from_level(level, **given)
    params = zstandard.ZstdCompressionParameters.from_level(  # smaller match-finder tables: see DELTA_HASH_LOG
        level, chain_log=min(params.chain_log, DELTA_CHAIN_LOG), hash_log=min(params.hash_log, DELTA_HASH_LOG),
        **given)
    return zstandard.ZstdCompressor(dict_data=_dictionary(reference), compression_params=params)


def delta_decompressor(reference: bytes) -> zstandard.ZstdDecompressor:
    """The decompressor of frames made by :func:`delta_compressor` against ``reference``."""
    return zstandard.ZstdDecompressor(dict_data=_dictionary(reference), max_window_size=1 << MAX_WINDOW_LOG)


def _dictionary(reference: bytes) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(reference, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def pays(original: int, compressed: int) -> bool:
    """Whether storing ``compressed`` bytes instead of ``original`` saves :data:`MIN_SAVING`.

    Never for an empty content: zero bytes of zstd (an upload with no frame at all) decode
    to it, but are no zstd stream for any other decoder, so it is kept raw.
    """
    return original > 0 and compressed <= original * (1 - MIN_SAVING)


def worth_compressing(sample: bytes | memoryview, level: int = DEFAULT_LEVEL) -> bool:
    """True when zstd at ``level`` saves at least :data:`MIN_SAVING` on ``sample``."""
    head = bytes(sample[:SAMPLE_SIZE])
    if not head:
        return False
    return pays(len(head), len(zstd_compressor(level).compress(head)))


def compress_if_worth(data: bytes, level: int = DEFAULT_LEVEL) -> tuple[Codec, bytes]:
    """Compress a small blob whole; keep it raw when that does not pay.

    As :func:`pack_for_sending` decides: a content above twice :data:`PROBE_SIZE` whose
    first :data:`PROBE_SIZE` bytes do not compress (random data, archives, a Filetracker
    client's output files) is kept raw at the cost of that probe alone.
    """
    if not data:
        return Codec.RAW, data
    packed = _compressed_if_it_pays(data, level)
    return (Codec.RAW, data) if packed is None else (Codec.ZSTD, packed)


def _compressed_if_it_pays(data: bytes, level: int) -> bytes | None:
    """``data`` as one zstd frame when that pays, else None; probed first when it is large enough.

    A content above twice :data:`PROBE_SIZE` whose first :data:`PROBE_SIZE` bytes do
    not compress is given up at the cost of that probe alone.
    """
    compressor = zstd_compressor(level)
    if len(data) > 2 * PROBE_SIZE and not pays(PROBE_SIZE, len(compressor.compress(data[:PROBE_SIZE]))):
        return None
    packed = compressor.compress(data)
    return packed if pays(len(data), len(packed)) else None


def pack_for_sending(data: bytes, level: int = DEFAULT_LEVEL) -> bytes | None:
    """A small content as one zstd frame when that pays, else None (send it raw).

    Decided from its size and a cheap check: a content of at most :data:`SEND_RAW_MAX`
    bytes is sent raw; one above twice :data:`PROBE_SIZE` whose first :data:`PROBE_SIZE`
    bytes do not compress (random data, archives) is sent raw at the cost of that probe
    alone; anything else is compressed once, whole. A "raw" costs only bytes on the
    wire: the server still compresses what it stores when that pays.
    """
    if len(data) <= SEND_RAW_MAX:
        return None
    return _compressed_if_it_pays(data, level)


class StreamCompressor(Protocol):
    """A streaming compressor: ``zstandard``'s ``compressobj()`` or ``zlib.compressobj()``."""

    def compress(self, data: bytes | memoryview, /) -> bytes: ...

    def flush(self) -> bytes: ...


def compressed_chunks(chunks: Iterable[bytes | memoryview], compressor: StreamCompressor) -> Iterator[bytes]:
    """``chunks`` compressed as one stream, yielding each non-empty piece of output.

    Written once for every streamed compression: zstd uploads from the client, zstd
    blobs staged by the store, gzip responses from the server.
    """
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    if out := compressor.flush():
        yield out


def zstd_chunks(chunks: Iterable[bytes | memoryview], level: int = DEFAULT_LEVEL) -> Iterator[bytes]:
    """``chunks`` compressed as one zstd frame with its content checksum."""
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
    return compressed_chunks(chunks, compressor)


def decoding_reader(stored: BinaryIO, codec: Codec, reference: bytes | None = None) -> BinaryIO:
    """Wrap a reader of stored bytes so that it yields the original bytes.

    ``reference``: for a ``zdelta`` frame, the content of the row's reference.
    """
    if codec is Codec.RAW:
        return stored
    if codec is Codec.ZSTD_DELTA:
        if reference is None:
            raise ValueError("a zdelta frame decodes only with its reference's content")
        return delta_decompressor(reference).stream_reader(stored, read_across_frames=True)
    return zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True)


def decode_bytes(stored: bytes, codec: Codec) -> bytes:
    """Decode a whole small blob held in memory."""
    if codec is Codec.RAW:
        return stored
    with decoding_reader(io.BytesIO(stored), codec) as reader:
        return reader.read()
