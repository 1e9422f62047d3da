"""Taking a reference on a blob row at refcount 0 revives it with the new content unless a
delta frame decodes against *that* row (not: against any row of the store)."""

from __future__ import annotations

from sqlalchemy import select, update

from castore.codec import Codec
from castore.keys import BlobKey
from castore.metadata.models import blobs
from castore.store import Store

DEAD = BlobKey("d" * 32)
BASE = BlobKey("b" * 32)
DELTA = BlobKey("e" * 32)


def _row(store: Store, key: BlobKey, data: bytes, refcount: int, base: BlobKey | None = None) -> None:
    with store.metadata.write() as txn:
        txn.acquire_blob(key, size=len(data), stored_size=len(data), codec=Codec.RAW, data=data, digests=None, now=1)
        txn._c.execute(update(blobs).where(blobs.c.key == key).values(refcount=refcount, base=base, frame=3))


def _state(store: Store, key: BlobKey) -> tuple[int, bytes, int, str]:
    with store.metadata.write() as txn:
        row = txn._c.execute(select(blobs.c.refcount, blobs.c.data, blobs.c.frame, blobs.c.codec)
                             .where(blobs.c.key == key)).one()
    return int(row[0]), bytes(row[1]), int(row[2]), str(row[3])


def _take(store: Store, key: BlobKey, data: bytes) -> None:
    with store.metadata.write() as txn:
        txn.acquire_blob(key, size=len(data), stored_size=len(data), codec=Codec.RAW, data=data, digests=None, now=2)


def test_a_dead_row_takes_the_new_content_though_another_row_is_a_delta_reference(store: Store) -> None:
    _row(store, BASE, b"base", 1)
    _row(store, DELTA, b"delta", 1, base=BASE)  # a delta of BASE: some other row is a reference
    _row(store, DEAD, b"old bytes", 0)  # dead: no reference, and no delta decodes against it
    _take(store, DEAD, b"new")
    assert _state(store, DEAD) == (1, b"new", 0, Codec.RAW.value)  # revived whole: frame 0, the new bytes


def test_a_row_a_delta_decodes_against_keeps_its_bytes(store: Store) -> None:
    _row(store, BASE, b"base", 0)  # at refcount 0 but a delta's reference: not dead
    _row(store, DELTA, b"delta", 1, base=BASE)
    _take(store, BASE, b"base")
    assert _state(store, BASE) == (1, b"base", 3, Codec.RAW.value)  # its own frame kept
