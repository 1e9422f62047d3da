"""Store.put_zstd: a content that arrives as a zstd frame is verified, then kept as it came."""

from __future__ import annotations

import io
import os
import struct

import pytest
import zstandard

from castore.errors import SourceError
from castore.store import Store

from ..conftest import snapshot, staging_leftovers


def frame_of(data: bytes, level: int = 1) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data)


@pytest.mark.parametrize("size", [1000, 100_000, 3_000_000])
def test_the_frame_becomes_the_stored_bytes(store: Store, size: int) -> None:
    content = (b"12 345 6789\n" * (size // 12 + 1))[:size]
    frame = frame_of(content, level=5)  # not what the store would have made at its level 1
    name = store.put_zstd("/z/a", io.BytesIO(frame), 7, size=size)
    assert name == "/z/a@7"
    info = store.stat(name)
    assert info.codec == "zstd" and info.stored_size == len(frame) and info.size == size
    assert store.read_bytes(name) == content
    assert store.check() == []


def test_small_incompressible_content_is_stored_raw(store: Store) -> None:
    content = os.urandom(5000)
    store.put_zstd("/z/noise", io.BytesIO(frame_of(content)), 1, size=len(content))
    info = store.stat("/z/noise")
    assert info.codec == "raw" and info.stored_size == len(content)
    assert store.read_bytes("/z/noise") == content


def test_same_content_by_put_and_put_zstd_is_one_blob(store: Store) -> None:
    content = b"7 8 9\n" * 100_000
    store.put("/z/plain", content, 1)
    store.put_zstd("/z/framed", io.BytesIO(frame_of(content)), 1, size=len(content))
    assert store.stat("/z/plain").key == store.stat("/z/framed").key
    assert store.usage().blobs == 1


def test_several_frames_decode_as_one_content(store: Store) -> None:
    parts = [b"a b c\n" * 200_000, b"d e f\n" * 200_000]
    body = b"".join(frame_of(p) for p in parts)
    store.put_zstd("/z/two", io.BytesIO(body), 1, size=sum(map(len, parts)))
    assert store.read_bytes("/z/two") == b"".join(parts)


def skippable(n: int) -> bytes:
    return struct.pack("<II", 0x184D2A50, n) + b"\0" * n


@pytest.mark.parametrize("size", [50_000, 2_000_000])
@pytest.mark.parametrize("case", ["truncated", "longer", "shorter", "garbage", "corrupt", "padded", "empty"])
def test_bad_frames_store_nothing(store: Store, size: int, case: str) -> None:
    content = (b"4 5 6\n" * (size // 6 + 1))[:size]
    frame, claimed = frame_of(content), size
    if case == "truncated":
        frame = frame[: len(frame) - 20]
    elif case == "longer":
        claimed = size - 1
    elif case == "shorter":
        claimed = size + 1
    elif case == "garbage":
        frame += b"trailing garbage"
    elif case == "corrupt":
        middle = len(frame) // 2
        frame = frame[:middle] + bytes([frame[middle] ^ 0x55]) + frame[middle + 1:]
    elif case == "padded":
        frame += skippable(3 * size)  # decodes to nothing, but is far larger than the content
    else:
        frame = b""
    before = snapshot(store)
    with pytest.raises(SourceError):
        store.put_zstd("/z/bad", io.BytesIO(frame), 1, size=claimed)
    assert snapshot(store) == before
    assert staging_leftovers(store) == []


def test_an_older_version_does_not_read_the_frame(store: Store) -> None:
    store.put("/z/v", b"new", 10)

    class Unreadable(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise AssertionError("read although the put is ignored")

    assert store.put_zstd("/z/v", Unreadable(), 5, size=3) == "/z/v@10"  # type: ignore[arg-type]
