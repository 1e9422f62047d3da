"""``Store.compact``: contents settled at a high zstd level read back the same, on every backend."""

from __future__ import annotations

import os
import random

import zstandard

from castore.codec import Codec
from castore.compacting import CURSOR_SETTING, KEEP_SAVING, keeps
from castore.keys import frame_name
from castore.maintenance import check
from castore.metadata.rows import BlobRow
from castore.store import Store

from ..conftest import staging_leftovers


def numbers(seed: int, lines: int) -> bytes:
    """Contest-like text: lines of integers, many repeated (level 19 saves 4-7 % over level 1 on it)."""
    rnd = random.Random(seed)
    common = [" ".join(str(rnd.randrange(1000)) for _ in range(5)) for _ in range(64)]
    return "\n".join(f"{rnd.choice(common)} {rnd.randrange(10)}" for _ in range(lines)).encode()


def probe_defeated(size: int) -> bytes:
    """A content stored raw by a put (its first 4 KiB do not compress) that zstd shrinks to almost nothing."""
    return os.urandom(4096) + b"\0" * (size - 4096)


def row(store: Store, name: str) -> BlobRow:
    return store.lookup(name).blob


def test_compact_settles_inline_contents_and_reads_them_back(store: Store) -> None:
    contents = {f"/p/{i}.in": numbers(i, 300 + 50 * i) for i in range(8)}
    for name, data in contents.items():
        store.put(name, data, 1)
    before = {name: row(store, name) for name in contents}
    assert all(b.codec is Codec.ZSTD and b.data is not None for b in before.values())
    report = store.compact()
    assert report.contents == 8 and report.settled == 8 and report.finished
    assert report.bytes_after < report.bytes_before == sum(b.stored_size for b in before.values())
    for name, data in contents.items():
        after = row(store, name)
        assert after.stored_size < before[name].stored_size * (1 - KEEP_SAVING)
        assert after.data is not None and len(after.data) == after.stored_size
        assert store.read_bytes(name) == data
    assert store.usage().stored_bytes == sum(row(store, n).stored_size for n in contents)
    assert store.check() == []


def test_raw_contents_are_tried_again(store: Store) -> None:
    data = probe_defeated(60_000)
    store.put("/raw", data, 1)
    assert row(store, "/raw").codec is Codec.RAW
    assert store.compact().settled == 1
    settled = row(store, "/raw")
    assert settled.codec is Codec.ZSTD and settled.stored_size < 5000
    assert store.read_bytes("/raw") == data
    assert store.check() == []


def test_a_file_that_shrinks_enough_moves_inline_and_old_readers_finish(store: Store) -> None:
    data = numbers(3, 16_000)  # above the inline bound: a file, whatever it compresses to
    store.put("/big", data, 1)
    entry = store.lookup("/big")
    assert entry.blob.data is None and len(data) > 131072 > entry.blob.stored_size
    early = store.open_entry(entry)  # holds the file open
    totals = store.usage()
    report = store.compact()
    assert (report.settled, report.moved_inline) == (1, 1)
    assert store.usage() == store.metadata.recount_usage()  # the totals follow the row out of the backend
    assert store.usage().inline_blobs == totals.inline_blobs + 1
    assert store.usage().stored_bytes == totals.stored_bytes - (report.bytes_before - report.bytes_after)
    assert row(store, "/big").data is not None
    assert store.blobs.__contains__(entry.blob.key) is False
    assert early.read() == data  # opened before: finishes with the old bytes
    early.close()
    with store.open_entry(entry) as late:  # the row read before, the file gone since: reads the row again
        assert late.read() == data
    assert store.read_bytes("/big") == data
    assert store.check() == []


def test_not_worth_it_is_left_alone(store: Store) -> None:
    data = os.urandom(50_000)
    store.put("/random", data, 1)
    before = row(store, "/random")
    report = store.compact()
    assert (report.contents, report.settled) == (1, 0)
    assert row(store, "/random") == before
    assert not keeps(BlobRow(before.key, 100, 100, Codec.ZSTD, b""), 98)
    assert keeps(BlobRow(before.key, 100, 100, Codec.ZSTD, b""), 97)
    assert not keeps(BlobRow(before.key, 100, 100, Codec.RAW, b""), 96)


def test_slices_continue_where_the_last_stopped(store: Store, clock) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        store.put(f"/s/{i}", numbers(100 + i, 400), 1)
        clock.now += 10
    first = store.compact(limit=2)
    assert (first.contents, first.finished) == (2, False)
    assert store.metadata.settings()[CURSOR_SETTING].startswith("19 ")
    assert store.compact(budget=0).contents == 0
    rest = store.compact()
    assert (rest.contents, rest.finished) == (3, True)
    assert store.compact().contents == 0  # nothing new
    store.put("/s/new", numbers(999, 400), 1)
    assert store.compact(min_age=60).contents == 0  # too fresh
    clock.now += 61
    assert store.compact(min_age=60).contents == 1
    assert store.compact(level=22).contents == 6  # another level starts over


def test_a_row_changed_meanwhile_is_not_switched(store: Store) -> None:
    data = numbers(7, 500)
    store.put("/c", data, 1)
    stale = row(store, "/c")
    frame = zstandard.ZstdCompressor(level=19).compress(data)
    store.delete("/c")
    with store.metadata.write() as txn:
        assert not txn.settle_frame(stale, codec=Codec.ZSTD, stored_size=len(frame), data=frame, frame=0)
    store.put("/c", data, 2)
    with store.metadata.write() as txn:
        assert txn.settle_frame(stale, codec=Codec.ZSTD, stored_size=len(frame), data=frame, frame=0)
        assert not txn.settle_frame(stale, codec=Codec.ZSTD, stored_size=len(frame), data=frame, frame=0)  # done
    assert store.read_bytes("/c") == data


def test_a_large_file_gets_a_new_frame_under_a_new_name(store: Store) -> None:
    data = numbers(4, 80_000)  # ~2 MiB: three chunks, its level-19 frame too large to keep inline
    store.put("/huge.in", data, 1)
    entry = store.lookup("/huge.in")
    assert entry.blob.data is None and entry.blob.frame == 0
    early = store.open_entry(entry)
    first = early.read(1000)
    report = store.compact()
    assert (report.settled, report.moved_inline) == (1, 0), report
    settled = row(store, "/huge.in")
    assert settled.data is None and settled.frame != 0 and settled.stored_size < entry.blob.stored_size
    assert entry.blob.key not in store.blobs and frame_name(settled.key, settled.frame) in store.blobs
    assert first + early.read() == data  # opened before the switch: finishes with the old frame
    early.close()
    with store.open_entry(entry) as late:  # the old row in hand, its file gone: reads the new frame
        assert late.read() == data
    assert store.read_bytes("/huge.in") == data
    assert store.check() == []
    store.delete("/huge.in")
    assert store.collect_garbage(staging_grace=0).blobs == 1
    assert frame_name(settled.key, settled.frame) not in store.blobs


def test_a_frame_left_behind_is_an_orphan_that_repair_removes(store: Store) -> None:
    data = numbers(5, 80_000)
    store.put("/huge.in", data, 1)
    store.compact()
    settled = row(store, "/huge.in")
    store.delete("/huge.in")
    store.put("/again.in", data, 2)  # revives the row before gc: the put's own frame, under the key
    assert row(store, "/again.in").frame == 0 and store.read_bytes("/again.in") == data
    report = check(store, verify_content=True, repair=True, grace=0)
    assert report.orphan_files == 1 and report.orphan_files_removed == 1 and report.exit_code in (0, 1)
    assert frame_name(settled.key, settled.frame) not in store.blobs
    assert store.read_bytes("/again.in") == data and store.check() == []


def test_should_stop_leaves_a_content_in_the_middle_as_it_was(store: Store) -> None:
    data = numbers(6, 80_000)  # several chunks: asked again after its first piece
    store.put("/huge.in", data, 1)
    before = row(store, "/huge.in")
    calls = iter([False, True])
    report = store.compact(should_stop=lambda: next(calls, True))
    assert (report.contents, report.settled, report.finished) == (0, 0, False)
    assert row(store, "/huge.in") == before and staging_leftovers(store) == []
    assert store.compact().settled == 1  # looked at again, from the start
    assert store.read_bytes("/huge.in") == data
