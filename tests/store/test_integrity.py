"""Damaged data is detected, and collisions are refused without changing anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from castore.errors import CorruptBlob, MissingBlob
from castore.keys import BlobKey, Hasher
from castore.store import Store

pytestmark = pytest.mark.backends("sqlite+file", "postgresql+file")  # damages blob files in place


def _blob_path(store: Store, name: str) -> Path:
    return store.blobs.path_of(store.stat(name).key)  # type: ignore[attr-defined, no-any-return]


def test_flipped_byte_is_detected(store: Store) -> None:
    content = os.urandom(500_000)
    store.put("/f", content, version=1)
    path = _blob_path(store, "/f")
    path.chmod(0o644)
    damaged = bytearray(path.read_bytes())
    damaged[1234] ^= 0xFF
    path.write_bytes(damaged)
    with pytest.raises(CorruptBlob):
        store.read_bytes("/f")
    assert any("does not match its digest" in p for p in store.check())


def test_truncated_blob_is_detected(store: Store) -> None:
    store.put("/f", os.urandom(500_000), version=1)
    path = _blob_path(store, "/f")
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CorruptBlob):
        store.read_bytes("/f")


def test_missing_blob_is_reported(store: Store) -> None:
    store.put("/f", os.urandom(500_000), version=1)
    _blob_path(store, "/f").unlink()
    with pytest.raises(MissingBlob):
        store.read_bytes("/f")
    assert len(store.check()) == 1


def test_hash_collision_is_stored_apart(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("/first", b"first content", version=1)
    key = store.stat("/first").key
    # Pretend every content hashes to the same key.
    monkeypatch.setattr(Hasher, "key", lambda self: BlobKey(key))
    store.put("/second", b"other, longer content", version=1)
    store.put("/third", b"first content", version=1)
    assert store.read_bytes("/first") == store.read_bytes("/third") == b"first content"
    assert store.read_bytes("/second") == b"other, longer content"
    assert store.stat("/second").key != key and store.stat("/third").key == key
    assert store.usage().blobs == 2 and store.check() == []


def test_refcounts_match_versions_after_mixed_operations(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(retention=2, inline_max=100)
    for v in range(5):
        store.put("/a", b"%d" % (v % 2) * 200, version=v)
        store.put("/b", b"%d" % (v % 3) * 50, version=v)
        store.put("/b", b"same" * 50, version=v)
    store.delete("/a@3")
    store.delete("/a@4")
    assert store.metadata.recount() == {}
    assert store.check() == []
