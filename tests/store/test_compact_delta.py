"""``castore compact`` stores a content that repeats another as a delta frame against it (#23).

A tail-changed test input keeps all but its last bytes of another stored input: zstd
compresses it against that content (a raw-content dictionary) to ~1 % of a plain frame.
The reference stays stored while a delta needs it, never is itself a delta, and every
read decodes the delta against the reference's verified content.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from castore.codec import Codec
from castore.compacting import DELTA_MIN_LEVEL, DELTA_SHARE
from castore.digests import CHUNK_SIZE
from castore.keys import frame_name
from castore.location import locate
from castore.maintenance import check
from castore.metadata.models import blobs
from castore.metadata.rows import BlobRow
from castore.moving import copy_store, verify_copy
from castore.opening import Location, open_store
from castore.store import Store

from ..conftest import Clock
from .test_compacting import numbers, row

SIZE = 2 * CHUNK_SIZE + 100_000
"""Above two chunks: contents of one chunk or less are left to a plain frame."""
LEVEL = DELTA_MIN_LEVEL
"""The fastest level deltas are tried at."""


def reference_content(seed: int = 1) -> bytes:
    """A compressible content of :data:`SIZE` bytes (contest-like lines of integers)."""
    data = numbers(seed, SIZE // 12)
    while len(data) < SIZE:
        data += data
    return data[:SIZE]


def tail_changed(base: bytes, seed: int, tail: int = 20_000) -> bytes:
    """``base`` with its last ``tail`` bytes replaced (the benchmark's "tail" kind)."""
    rnd = random.Random(seed)
    return base[:-tail] + bytes(rnd.choice(b"0123456789 \n") for _ in range(tail))


def put_in_order(store: Store, clock: Clock, contents: dict[str, bytes]) -> None:
    """Put ``contents`` in this order, each first stored 10 seconds after the one before."""
    for name, data in contents.items():
        clock.now += 10
        store.put(name, data, 1)


def test_a_tail_changed_content_becomes_a_delta_and_reads_back(store: Store, clock: Clock) -> None:
    base = reference_content()
    derived = tail_changed(base, 2)
    put_in_order(store, clock, {"/t/1.in": base, "/t/2.in": derived})
    before = row(store, "/t/2.in")
    report = store.compact(level=LEVEL)
    assert report.deltas == 1 and report.delta_bytes_saved > 0
    after = row(store, "/t/2.in")
    assert after.codec is Codec.ZSTD_DELTA and after.base == row(store, "/t/1.in").key
    assert after.stored_size <= before.stored_size * DELTA_SHARE
    assert row(store, "/t/1.in").base is None  # the reference stays a plain frame
    assert store.read_bytes("/t/2.in") == derived and store.read_bytes("/t/1.in") == base
    with store.open_entry(store.lookup("/t/2.in")) as reader:  # a Range: from the middle of a chunk
        reader.seek_content(CHUNK_SIZE + 5)
        assert reader.read(100) == derived[CHUNK_SIZE + 5:CHUNK_SIZE + 105]
    assert store.usage() == store.metadata.recount_usage()
    assert store.check() == []
    assert store.compact(level=LEVEL).contents == 0  # a run at the same level: nothing left


def test_gc_keeps_a_reference_while_a_delta_needs_it(store: Store, clock: Clock) -> None:
    base = reference_content()
    derived = tail_changed(base, 2)
    put_in_order(store, clock, {"/r": base, "/d": derived})
    assert store.compact(level=LEVEL).deltas == 1
    reference = row(store, "/r")
    store.delete("/r")
    store.collect_garbage()
    assert store.metadata.dedup_candidate(reference.key) is not None  # kept for /d
    assert store.read_bytes("/d") == derived
    assert store.check() == []
    store.put("/r2", base, 1)  # the same content again: the kept row is revived
    assert store.read_bytes("/r2") == base and store.read_bytes("/d") == derived
    store.delete("/r2")
    store.delete("/d")
    store.collect_garbage()
    assert store.metadata.dedup_candidate(reference.key) is None  # its last delta gone: collected
    assert store.usage().blobs == 0
    assert store.check() == []


def test_deltas_are_one_level_deep(store: Store, clock: Clock) -> None:
    base = reference_content()
    first = tail_changed(base, 2)
    second = tail_changed(first, 3, tail=10_000)
    put_in_order(store, clock, {f"/{number}": data for number, data in enumerate([base, first, second])})
    assert store.compact(level=LEVEL).deltas == 2
    rows = [row(store, f"/{number}") for number in range(3)]
    assert rows[0].base is None and rows[1].base == rows[2].base == rows[0].key
    for number, data in enumerate([base, first, second]):
        assert store.read_bytes(f"/{number}") == data


def _switch(store: Store, was: BlobRow, reference: BlobRow) -> bool:
    with store.metadata.write() as txn:
        return txn.settle_frame(was, codec=Codec.ZSTD_DELTA, stored_size=was.stored_size, data=was.data,
                                frame=0, reference=reference)


def test_the_switch_refuses_a_chain_and_a_dead_reference(store: Store, clock: Clock) -> None:
    base = reference_content()
    put_in_order(store, clock, {"/r": base, "/d": tail_changed(base, 2), "/e": tail_changed(base, 3)})
    assert store.compact(level=LEVEL, limit=2).deltas == 1  # /r plain, /d a delta of it
    r, d, e = (row(store, name) for name in ("/r", "/d", "/e"))
    assert not _switch(store, e, d)  # a delta is no reference
    assert not _switch(store, r, e)  # a reference does not become a delta
    store.delete("/e")
    assert not _switch(store, row(store, "/d"), e)  # the switch wants a live reference (and /d is settled)
    assert store.check() == []


def test_check_reports_a_delta_whose_reference_is_gone(store: Store, clock: Clock) -> None:
    base = reference_content()
    put_in_order(store, clock, {"/r": base, "/d": tail_changed(base, 2)})
    store.compact(level=LEVEL)
    with store.metadata.write() as txn:  # damage: the row names a reference the store lacks
        txn._c.execute(update(blobs).where(blobs.c.key == row(store, "/d").key).values(base="0" * 32))
    for verify in (False, True):  # found without reading a byte too
        problems = check(store, verify_content=verify).problems
        assert [p.kind for p in problems] == ["corrupt"] and "reference" in str(problems[0]), verify


@pytest.mark.backends("sqlite+file")
def test_migrate_store_copies_a_delta_as_its_content(store: Store, clock: Clock, tmp_path: Path) -> None:
    base = reference_content()
    derived = tail_changed(base, 2)
    put_in_order(store, clock, {"/r": base, "/d": derived})
    store.compact(level=LEVEL)
    target = locate(tmp_path / "copy")
    copy_store(store, target)
    assert verify_copy(store, target) == []
    with Store.open(tmp_path / "copy") as copy:
        assert copy.read_bytes("/d") == derived
        assert row(copy, "/d").codec is not Codec.ZSTD_DELTA and row(copy, "/d").base is None


def test_compact_and_du_say_what_deltas_did_and_keep(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from castore.cli import cli

    base = reference_content()
    root = tmp_path / "store"
    with Store.open(root, create=True, clock=lambda: 1_700_000_000) as store:
        store.put("/r", base, 1)
    with Store.open(root, clock=lambda: 1_700_000_010) as store:  # /d after /r: /r is the reference
        store.put("/d", tail_changed(base, 2), 2)

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--root", str(root), *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert re.search(r"1 as deltas saving [\d.]+ [KMG]?i?B", run("compact", "--level", str(LEVEL)))
    with Store.open(root) as store:
        store.delete("/r")
        store.collect_garbage()
    assert "collectable:    0 blobs (castore gc); 1 more kept for the delta frames" in run("du")
    assert json.loads(run("--json", "du"))["kept_references"] == 1


def test_deltas_of_one_reference_read_it_once(store: Store, clock: Clock) -> None:
    """Reading the deltas of one reference one after another reads the reference's bytes once (read MB/s)."""
    base = reference_content()
    put_in_order(store, clock, {"/r": base, "/d1": tail_changed(base, 2), "/d2": tail_changed(base, 3)})
    assert store.compact(level=LEVEL).deltas == 2
    reference = row(store, "/r")
    store._last_reference = None  # compact read it last (Store.reference_content): reads start without it
    opened: list[str] = []
    backend: Any = store.blobs
    real_open = backend.open
    backend.open = lambda name: opened.append(name) or real_open(name)
    for name in ("/d1", "/d2", "/d1"):
        assert store.read_bytes(name) == {"/d1": tail_changed(base, 2), "/d2": tail_changed(base, 3)}[name]
    assert opened.count(frame_name(reference.key, reference.frame)) == 1


def _until_waiting_or_done(txn: Any, done: list[bool]) -> None:
    """PostgreSQL: until another backend waits for a lock (the second switch, on the first's rows) or ``done``."""
    for _ in range(6000):
        if done or txn._c.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one():
            return
        time.sleep(0.01)


def test_a_switch_waits_for_one_under_way_and_makes_no_chain(
    store_location: Location, store: Store, clock: Clock
) -> None:
    """Two compactors at once: /b becoming a delta of /a, /c of /b. The second waits and is refused.

    The first switch's transaction is still open when the second starts (in a thread, in
    another store on the same metadata, as another process would): on PostgreSQL only the
    row locks make the second see the first.
    """
    base = reference_content()
    put_in_order(store, clock, {"/a": base, "/b": tail_changed(base, 2), "/c": tail_changed(base, 3)})
    a, b, c = (row(store, name) for name in ("/a", "/b", "/c"))
    second: list[bool] = []
    with open_store(metadata=store_location.metadata, blobs=store_location.blobs) as other:
        thread = threading.Thread(target=lambda: second.append(_switch(other, c, b)))
        with store.metadata.write() as txn:
            assert txn.settle_frame(b, codec=Codec.ZSTD_DELTA, stored_size=b.stored_size, data=b.data,
                                    frame=b.frame, reference=a)  # the row only: its bytes are not read here
            thread.start()
            if store_location.metadata.startswith("postgresql"):
                _until_waiting_or_done(txn, second)
        thread.join(60)
    assert second == [False] and row(store, "/c").base is None
