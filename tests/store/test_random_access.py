"""BlobReader.random_access(): seeking in a raw blob, every byte still from a verified chunk."""

from __future__ import annotations

import io
import os
import zipfile

import pytest
import zstandard

from castore.codec import Codec
from castore.digests import CHUNK_SIZE, ChunkDigester
from castore.errors import CorruptBlob
from castore.keys import Hasher
from castore.reading import BlobReader, RandomAccess


class CountingBytes(io.BytesIO):
    """Stored bytes that count the reads made of them."""

    reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)


def reader_of(stored: bytes, content: bytes, codec: Codec = Codec.RAW, *, refetch: list[bytes] | None = None,
              key_mode: bool = False, stored_stream: io.BytesIO | None = None) -> BlobReader:
    digester = ChunkDigester()
    digester.update(content)
    hasher = Hasher(7)
    hasher.update(content)
    copies = list(refetch or [])
    return BlobReader(stored_stream if stored_stream is not None else io.BytesIO(stored), codec=codec,
                      key=hasher.key(), size=len(content), stored_size=len(stored),
                      digests=None if key_mode else digester.digests(), name="/r@1", version=1,
                      key_hasher=lambda: Hasher(7),
                      refetch=lambda: io.BytesIO(copies.pop(0)) if copies else None)


def damaged(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def test_reads_and_seeks_anywhere_give_the_content() -> None:
    content = os.urandom(3 * CHUNK_SIZE + 123)
    view = reader_of(content, content).random_access()
    assert isinstance(view, RandomAccess) and view.seekable() and view.size == len(content)
    assert view.seek(-5, io.SEEK_END) == len(content) - 5 and view.read() == content[-5:]
    assert view.read(10) == b"" and view.tell() == len(content)
    view.seek(CHUNK_SIZE - 3)
    assert view.read(6) == content[CHUNK_SIZE - 3:CHUNK_SIZE + 3]  # across a chunk boundary
    assert view.seek(-6, io.SEEK_CUR) == CHUNK_SIZE - 3
    view.seek(len(content) + 10)
    assert view.read(1) == b""
    view.seek(0)
    assert view.read() == content
    with pytest.raises(OSError, match="negative seek position -1"):
        view.seek(-1)
    with pytest.raises(ValueError, match="invalid whence"):
        view.seek(0, 7)


def test_a_zip_reads_through_it() -> None:
    buffer = io.BytesIO()
    members = {f"m{i}": os.urandom(300_000) for i in range(10)}
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    content = buffer.getvalue()
    view = reader_of(content, content).random_access()
    assert not zipfile.is_zipfile(reader_of(b"1 2", b"1 2").random_access())  # shorter than a zip's end
    assert view is not None and zipfile.is_zipfile(view)
    with zipfile.ZipFile(view) as archive:
        assert {n: archive.read(n) for n in reversed(archive.namelist())} == members


def test_reads_within_the_chunk_held_touch_no_stored_byte() -> None:
    content = os.urandom(CHUNK_SIZE + 10)
    stored = CountingBytes(content)
    view = reader_of(content, content, stored_stream=stored).random_access()
    assert view is not None
    view.seek(100)
    view.read(10)
    reads = stored.reads
    for offset in (0, 500, 7, CHUNK_SIZE - 1):
        view.seek(offset)
        view.read(1)
    assert stored.reads == reads


def test_a_damaged_chunk_is_never_handed_out_and_the_others_still_are() -> None:
    content = os.urandom(3 * CHUNK_SIZE)
    view = reader_of(damaged(content, 2 * CHUNK_SIZE + 5), content).random_access()
    assert view is not None
    view.seek(CHUNK_SIZE)
    assert view.read(10) == content[CHUNK_SIZE:CHUNK_SIZE + 10]
    view.seek(2 * CHUNK_SIZE + 100)
    with pytest.raises(CorruptBlob, match="does not match its digest at bytes 2097152-3145727"):
        view.read(1)
    view.seek(0)
    assert view.read(10) == content[:10]


def test_a_damaged_chunk_is_read_again_from_a_fresh_copy() -> None:
    content = os.urandom(2 * CHUNK_SIZE + 50)
    view = reader_of(damaged(content, CHUNK_SIZE + 1), content, refetch=[content]).random_access()
    assert view is not None
    view.seek(CHUNK_SIZE)
    assert view.read() == content[CHUNK_SIZE:]
    view.seek(0)
    assert view.read() == content


def test_only_raw_seekable_blobs_with_digests_before_reading_have_one() -> None:
    content = b"x" * 5000
    assert reader_of(zstandard.ZstdCompressor().compress(content), content, Codec.ZSTD).random_access() is None
    assert reader_of(content, content, key_mode=True).random_access() is None
    started = reader_of(content, content)
    started.read(1)
    assert started.random_access() is None

    class Unseekable(io.BytesIO):
        def seekable(self) -> bool:
            return False

    assert reader_of(content, content, stored_stream=Unseekable(content)).random_access() is None


def test_closing_the_view_closes_the_stored_bytes() -> None:
    stored = io.BytesIO(b"abc")
    view = reader_of(b"abc", b"abc", stored_stream=stored).random_access()
    assert view is not None
    with view:
        assert view.read() == b"abc"
    assert stored.closed and view.closed and not view.seekable()
    for operation in (view.tell, lambda: view.seek(0), lambda: view.read(1)):
        with pytest.raises(ValueError, match="closed file"):
            operation()
