"""Attacks on delta frames (#23): damaged bytes and rows around a delta and its reference.

Every read must fail loudly or return the right bytes, never wrong ones; ``check`` must
name the damage; nothing loops. Hand-made damage stands for a failing disk or a bad edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from alembic import command
from castore.codec import Codec
from castore.compacting import MAX_REFERENCE
from castore.errors import IntegrityError
from castore.keys import frame_name
from castore.location import migrate
from castore.maintenance import check
from castore.metadata.migrate import SCHEMA_REVISION, alembic_config
from castore.metadata.models import blobs
from castore.metadata.rows import BlobRow
from castore.moving import copy_store, verify_copy
from castore.opening import Location, open_store
from castore.store import Store

from ..conftest import Clock
from .test_compact_delta import LEVEL, put_in_order, reference_content, tail_changed
from .test_compacting import numbers, row


def _pair(store: Store, clock: Clock) -> tuple[bytes, bytes]:
    """/r stored plain, /d a delta frame against it; their contents."""
    base = reference_content()
    derived = tail_changed(base, 2)
    put_in_order(store, clock, {"/r": base, "/d": derived})
    assert store.compact(level=LEVEL).deltas == 1
    assert row(store, "/d").codec is Codec.ZSTD_DELTA
    return base, derived


def _set(store: Store, key: str, **values: object) -> None:
    """Hand-made damage: change columns of one blob row."""
    with store.metadata.write() as txn:
        txn._c.execute(update(blobs).where(blobs.c.key == key).values(**values))


def _flip_file(store: Store, blob: BlobRow, at: int) -> None:
    """A failing disk: one byte of a blob file changes (blob folder only)."""
    path: Path = store.blobs.path_of(frame_name(blob.key, blob.frame))  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[at % len(data)] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def _flipped(data: bytes, at: int) -> bytes:
    changed = bytearray(data)
    changed[at % len(changed)] ^= 0x01
    return bytes(changed)


def _reads_fail(store: Store, name: str) -> None:
    """Every way of reading ``name`` raises an IntegrityError (never hands out bytes)."""
    store._last_reference = None  # as a fresh process: no reference kept from before
    with pytest.raises(IntegrityError):
        store.read_bytes(name)
    store._last_reference = None
    with pytest.raises(IntegrityError), store.open_entry(store.lookup(name)) as reader:  # a Range from the middle
        reader.seek_content(2 * 1024 * 1024 + 5)
        reader.read(100)


def _corrupt_subjects(store: Store) -> dict[str, str]:
    store._last_reference = None
    return {p.subject: p.detail for p in check(store, verify_content=True).problems if p.kind == "corrupt"}


@pytest.mark.backends("sqlite+file")
def test_a_flipped_byte_in_the_references_file_fails_every_read_of_both(store: Store, clock: Clock) -> None:
    _pair(store, clock)
    reference, delta = row(store, "/r"), row(store, "/d")
    assert reference.data is None
    _flip_file(store, reference, reference.stored_size // 2)
    _reads_fail(store, "/r")
    _reads_fail(store, "/d")
    found = _corrupt_subjects(store)
    assert reference.key in found  # check names the damaged content
    assert delta.key in found and reference.key in found[delta.key]  # and says why the delta cannot be read


@pytest.mark.backends("sqlite+file")
def test_a_flipped_byte_in_a_kept_references_file_is_named_by_check(store: Store, clock: Clock) -> None:
    """The reference is kept only for the delta (refcount 0): check still finds its damage through the delta."""
    _pair(store, clock)
    reference, delta = row(store, "/r"), row(store, "/d")
    store.delete("/r")
    store.collect_garbage()
    _flip_file(store, reference, reference.stored_size // 3)
    _reads_fail(store, "/d")
    found = _corrupt_subjects(store)
    assert delta.key in found and reference.key in found[delta.key]


def test_a_flipped_byte_in_the_delta_fails_its_reads(store: Store, clock: Clock) -> None:
    _pair(store, clock)
    delta = row(store, "/d")
    for at in (delta.stored_size // 2, delta.stored_size - 3):  # in the frame and in its checksum
        if delta.data is not None:
            _set(store, delta.key, data=_flipped(delta.data, at))
        elif hasattr(store.blobs, "path_of"):
            _flip_file(store, delta, at)
        else:
            pytest.skip("no way to damage an object's bytes on this backend")
        _reads_fail(store, "/d")
        assert delta.key in _corrupt_subjects(store)
        if delta.data is not None:
            _set(store, delta.key, data=delta.data)
        else:
            _flip_file(store, delta, at)
        store._last_reference = None
        assert check(store, verify_content=True).problems == []


def test_an_inline_reference_flipped_fails_the_deltas_reads(make_store, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    """A reference small enough to be kept inline (a store with a large inline_max)."""
    store: Store = make_store(inline_max=1 << 20, clock=clock)
    _pair(store, clock)
    reference, delta = row(store, "/r"), row(store, "/d")
    assert reference.data is not None
    _set(store, reference.key, data=_flipped(reference.data, len(reference.data) // 2))
    _reads_fail(store, "/r")
    _reads_fail(store, "/d")
    found = _corrupt_subjects(store)
    assert reference.key in found and delta.key in found


def test_a_delta_naming_itself_or_another_delta_is_refused_and_reported(store: Store, clock: Clock) -> None:
    base = reference_content()
    put_in_order(store, clock, {"/r": base, "/d": tail_changed(base, 2), "/e": tail_changed(base, 3)})
    assert store.compact(level=LEVEL).deltas == 2
    d, e = row(store, "/d"), row(store, "/e")
    for base_key in (d.key, e.key):  # itself; another delta
        _set(store, d.key, base=base_key)
        _reads_fail(store, "/d")
        problems = check(store).problems
        assert [p.subject for p in problems] == [d.key] and "delta itself" in problems[0].detail
    _set(store, d.key, base=None)  # a zdelta frame that names no reference
    _reads_fail(store, "/d")
    assert [p.subject for p in check(store).problems] == [d.key]


def test_a_delta_naming_another_plain_content_never_reads_wrong_bytes(store: Store, clock: Clock) -> None:
    """The base column changed to another stored content of the same first chunk: the decode must not pass."""
    base = reference_content()
    other = tail_changed(base, 7, tail=300_000)
    put_in_order(store, clock, {"/r": base, "/d": tail_changed(base, 2)})
    assert store.compact(level=LEVEL).deltas == 1
    clock.now += 10
    store.put("/o", other, 1)  # a plain content, not compacted
    _set(store, row(store, "/d").key, base=row(store, "/o").key)
    _reads_fail(store, "/d")
    assert row(store, "/d").key in _corrupt_subjects(store)


@pytest.mark.backends("sqlite+file")
def test_the_references_file_deleted_is_reported_and_reads_fail(store: Store, clock: Clock) -> None:
    _pair(store, clock)
    reference = row(store, "/r")
    store.blobs.delete(frame_name(reference.key, reference.frame))
    _reads_fail(store, "/d")
    kinds = {p.subject: p.kind for p in check(store).problems}
    assert kinds.get(reference.key) == "missing" and kinds.get(row(store, "/d").key) == "corrupt"


def test_the_references_digests_changed_fail_the_deltas_reads(store: Store, clock: Clock) -> None:
    _pair(store, clock)
    reference = row(store, "/r")
    assert reference.digests is not None
    _set(store, reference.key, digests=_flipped(reference.digests, 20))
    _reads_fail(store, "/d")
    assert row(store, "/d").key in _corrupt_subjects(store)


def _contents() -> dict[str, bytes]:
    """A reference and two tail-changed copies of it, and an unrelated content."""
    base = reference_content()
    return {"/t/1.in": base, "/t/2.in": tail_changed(base, 2), "/t/3.in": tail_changed(base, 3),
            "/u.in": reference_content(9)}


def _all_read_back(store: Store, contents: dict[str, bytes]) -> None:
    store._last_reference = None
    for name, data in contents.items():
        assert store.read_bytes(name) == data, name
    assert store.usage() == store.metadata.recount_usage()
    assert check(store, verify_content=True).problems == []


@pytest.mark.backends("sqlite+file", "postgresql+file")
def test_a_compacted_store_at_0009_upgraded_then_compacted_into_deltas(
    store_location: Location, clock: Clock
) -> None:
    """A store compacted before delta frames (revision 0009, recompressed frames) upgrades and makes deltas."""
    contents = _contents()
    first = {name: contents[name] for name in ("/t/1.in", "/u.in")}
    with open_store(metadata=store_location.metadata, blobs=store_location.blobs, create=True, clock=clock) as store:
        put_in_order(store, clock, first)
        assert store.compact(level=19).settled == 2  # plain frames <key>.<frame>: nothing to make a delta of
        put_in_order(store, clock, {name: data for name, data in contents.items() if name not in first})
    command.downgrade(alembic_config(store_location.metadata), "0009")
    assert migrate(store_location) == ("0009", SCHEMA_REVISION)
    with open_store(metadata=store_location.metadata, blobs=store_location.blobs, clock=clock) as store:
        _all_read_back(store, contents)
        assert store.compact(level=19).deltas == 2  # continues after the cursor of the run at 0009
        assert {row(store, name).codec for name in ("/t/2.in", "/t/3.in")} == {Codec.ZSTD_DELTA}
        _all_read_back(store, contents)


def test_compact_rerun_at_a_higher_level_over_deltas(store: Store, clock: Clock) -> None:
    """A run at level 20 over a store with deltas: the reference may be settled again, deltas stay, every byte reads."""
    contents = _contents()
    put_in_order(store, clock, contents)
    assert store.compact(level=LEVEL).deltas == 2
    deltas = {name: row(store, name) for name in ("/t/2.in", "/t/3.in")}
    report = store.compact(level=20)
    assert report.deltas == 0
    assert {name: row(store, name) for name in deltas} == deltas  # a delta is never looked at again
    _all_read_back(store, contents)
    assert store.compact(level=20).contents == 0


def test_migrate_store_of_deltas_to_every_backend(store: Store, clock: Clock, new_location: Any) -> None:
    """``migrate-store`` (copy_store) of a store holding deltas, also a kept reference, reads back every byte."""
    contents = _contents()
    put_in_order(store, clock, contents)
    assert store.compact(level=LEVEL).deltas == 2
    store.delete("/t/1.in")  # the reference now kept for its deltas only
    store.collect_garbage()
    del contents["/t/1.in"]
    target = new_location("copy")
    copy_store(store, target)
    assert verify_copy(store, target) == []
    with open_store(metadata=target.metadata, blobs=target.blobs) as copy:
        _all_read_back(copy, contents)
        assert copy.usage().blobs == len(contents)  # the kept reference was not copied


def _sized(seed: int, size: int) -> bytes:
    data = numbers(seed, 200_000)
    while len(data) < size:
        data += data
    return data[:size]


@pytest.mark.backends("sqlite+file")
def test_the_largest_reference_and_one_byte_more(store: Store, clock: Clock) -> None:
    """A reference of MAX_REFERENCE bytes serves a delta; one a byte larger is no candidate: a plain frame, no error."""
    at_bound, above = _sized(1, MAX_REFERENCE), _sized(2, MAX_REFERENCE + 1)
    contents = {"/a/1.in": at_bound, "/b/1.in": above,
                "/a/2.in": tail_changed(at_bound, 2), "/b/2.in": tail_changed(above, 3)}
    put_in_order(store, clock, contents)
    report = store.compact(level=LEVEL)
    assert report.deltas == 1 and report.damaged is None
    assert row(store, "/a/2.in").base == row(store, "/a/1.in").key
    assert row(store, "/b/2.in").base is None and row(store, "/b/2.in").codec is not Codec.ZSTD_DELTA
    _all_read_back(store, contents)


def test_a_kept_reference_revived_repaired_and_collected(store: Store, clock: Clock) -> None:
    """Reference kept at refcount 0, check --repair (grace 0) keeps its bytes, a put revives it, all collected at last."""
    base, derived = _pair(store, clock)
    store.delete("/r")
    store.collect_garbage()
    report = check(store, repair=True, grace=0)
    assert report.problems == [] and report.orphan_files_removed == 0  # the kept reference's bytes are needed
    _all_read_back(store, {"/d": derived})
    clock.now += 10
    store.put("/r2", base, 1)  # revives the kept row
    assert store.compact(level=LEVEL).deltas == 0  # the revived reference settles again as a plain frame, or stays
    assert row(store, "/r2").base is None and row(store, "/d").codec is Codec.ZSTD_DELTA
    check(store, repair=True, grace=0)  # removes the frame the revival left behind, if any
    _all_read_back(store, {"/r2": base, "/d": derived})
    store.delete("/d")
    store.collect_garbage()
    _all_read_back(store, {"/r2": base})
    store.delete("/r2")
    store.collect_garbage()
    assert store.usage().blobs == 0 and list(store.blobs) == []
    assert check(store, verify_content=True).problems == [] and store.usage() == store.metadata.recount_usage()


def test_a_put_of_a_deltas_content_shares_it(store: Store, clock: Clock) -> None:
    """The same content as a delta's put again (another path, the same path again): shared, read back, clean."""
    base, derived = _pair(store, clock)
    delta = row(store, "/d")
    blobs_before = store.usage().blobs
    store.put("/d2", derived, 1)
    store.put("/d", derived, 2)
    assert row(store, "/d2") == delta and row(store, "/d") == delta  # shared: the delta frame stays
    assert store.usage().blobs == blobs_before
    _all_read_back(store, {"/r": base, "/d": derived, "/d2": derived, "/d@1": derived})
    store.put("/r3", base, 1)  # and the reference's content again
    _all_read_back(store, {"/r3": base, "/d": derived})


@pytest.mark.backends("sqlite+file")
def test_a_read_only_store_reads_deltas(store_root: Path, store: Store, clock: Clock) -> None:
    base, derived = _pair(store, clock)
    with Store.open(store_root, read_only=True) as reader:
        assert reader.read_bytes("/d") == derived and reader.read_bytes("/r") == base
        assert check(reader, verify_content=True).problems == []


def test_a_failed_put_of_a_kept_references_content_loses_no_delta(store: Store, clock: Clock) -> None:
    """A put of the kept reference's content, dying if it publishes (kill -9 between its lease and its publish).

    Before the fix the put leased the kept row, which took the put's representation (frame
    0, no inline bytes) before any byte was published: killed there, the delta's reference
    was gone (MissingBlob), and check --repair removed its old frame as an orphan. Now the
    put shares the kept row, whose bytes it compared, and publishes nothing.
    """
    base, derived = _pair(store, clock)
    reference = row(store, "/r")
    store.delete("/r")
    store.collect_garbage()
    backend: Any = store.blobs

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # the process dies here: nothing after it runs

    backend.publish = killed
    store.put("/r2", base, 1)
    del backend.publish
    assert row(store, "/r2") == reference  # shared as it was: same frame, same bytes
    clock.now += 7200
    store.collect_garbage()
    check(store, repair=True, grace=0)
    _all_read_back(store, {"/d": derived, "/r2": base})
