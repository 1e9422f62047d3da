"""Deduplication: one blob per distinct content, kept while referenced, then collectable."""

from __future__ import annotations

import os
from pathlib import Path

from castore.keys import BlobKey
from castore.store import Store

FOUR_MIB = 4 << 20


def blob_files(store: Store) -> list[BlobKey]:
    """The keys the blob backend holds (files, objects)."""
    return sorted(store.blobs)


def test_same_content_under_twenty_paths_is_one_blob(store: Store, tmp_path: Path) -> None:
    content = os.urandom(FOUR_MIB)
    local = tmp_path / "big.bin"
    local.write_bytes(content)
    for i in range(20):
        source = local if i % 2 else content  # both the path and the bytes route
        store.put(f"/contest{i}/tests/1.in", source, version=1)
    files = blob_files(store)
    assert len(files) == 1
    assert store.blobs.stored_size(files[0]) == FOUR_MIB  # random data is stored raw
    usage = store.usage()
    assert usage.blobs == 1 and usage.logical_bytes == 20 * FOUR_MIB
    assert usage.stored_bytes == FOUR_MIB
    key = store.stat("/contest0/tests/1.in").key
    assert store.metadata.refcount(key) == 20

    for i in range(19):
        store.delete(f"/contest{i}/tests/1.in")
    assert store.metadata.refcount(key) == 1
    assert store.collect_garbage().blobs == 0
    assert store.read_bytes("/contest19/tests/1.in") == content

    store.delete("/contest19/tests/1.in")
    assert store.metadata.refcount(key) == 0
    assert store.usage().unreferenced_blobs == 1
    report = store.collect_garbage()
    assert report.blobs == 1 and report.stored_bytes == FOUR_MIB
    assert blob_files(store) == []
    assert store.metadata.refcount(key) is None


def test_a_collected_blob_can_be_stored_again(store: Store) -> None:
    content = os.urandom(300_000)
    store.put("/a", content, version=1)
    store.delete("/a")
    store.collect_garbage()
    store.put("/b", content, version=1)
    assert store.read_bytes("/b") == content
    assert len(blob_files(store)) == 1


def test_a_dead_blob_is_revived_even_if_its_file_is_gone(store: Store) -> None:
    """A GC killed between deleting the file and its commit leaves a row at 0 with no file."""
    content = os.urandom(300_000)
    store.put("/a", content, version=1)
    key = store.stat("/a").key
    store.delete("/a")
    store.blobs.delete(key)  # the file is gone, the row (refcount 0) is still there
    assert store.metadata.refcount(key) == 0
    store.put("/b", content, version=1)
    assert store.read_bytes("/b") == content
    assert store.check() == []


def test_compressible_content_is_stored_smaller(store: Store) -> None:
    text = b"".join(b"%d %d %d\n" % (i, i * 7919 % 1000003, i * i) for i in range(200_000))
    store.put("/t", text, version=1)
    info = store.stat("/t")
    assert info.codec == "zstd" and info.stored_size * 2 < info.size
    assert store.read_bytes("/t") == text


def test_small_files_live_inline(store: Store) -> None:
    store.put("/s", b"tiny", version=1)
    assert store.usage().inline_blobs == 1
    assert blob_files(store) == []


def test_blob_collected_between_hashing_and_recording(store: Store, tmp_path: Path) -> None:
    """A put that only hashed (the blob looked live) prepares again from the same file object."""
    content = os.urandom(300_000)
    local = tmp_path / "c.bin"
    local.write_bytes(content)
    store.put("/first", content, version=1)
    key = store.stat("/first").key
    store.delete("/first")
    store.collect_garbage()  # the blob is gone, but the put below is told it is live
    store._find_same = lambda k, size, digests, again: (key, 0)  # type: ignore[method-assign]
    with open(local, "rb") as f:
        assert store.put("/second", f, version=1) == "/second@1"
    assert store.read_bytes("/second") == content
    assert store.check() == []
