"""A name is a file or a folder, never both (issue #21): a put onto a folder, or below a file, is refused.

Filetracker 2.3.3's server refuses both too (its links are a real folder tree: it answers
500 with ``Is a directory`` / ``Not a directory`` and stores nothing); castore refuses
them with :class:`~castore.errors.PathConflict` (HTTP 409), inside the put's write
transaction, so that two writers racing on ``/a`` and ``/a/b`` never both win.
"""

from __future__ import annotations

import threading

import pytest

from castore.errors import PathConflict
from castore.opening import Location, open_store
from castore.store import Store

from ..conftest import snapshot


@pytest.mark.parametrize("stored, refused, why", [
    (["/problems/1/a.in", "/problems/1/sub/b.in"], ["/problems/1", "/problems/1/sub", "/problems"],
     "it is a folder (files are stored below it)"),
    (["/problems/1"], ["/problems/1/a.in", "/problems/1/deep/er/b.in"], "/problems/1 is a file"),
])
def test_a_put_onto_a_folder_or_below_a_file_is_refused_and_changes_nothing(
        store: Store, stored: list[str], refused: list[str], why: str) -> None:
    for name in stored:
        store.put(name, b"stored", version=10)
    before = snapshot(store)
    for name in refused:
        with pytest.raises(PathConflict) as refusal:
            store.put(name, b"refused", version=20)
        assert str(refusal.value) == f"cannot store {name}: {why}"
    assert snapshot(store) == before


def test_every_kind_of_put_keeps_the_rule(store: Store) -> None:
    import io

    import zstandard

    store.put("/f/x", b"x", version=1)
    key = store.stat("/f/x").key
    with pytest.raises(PathConflict):
        store.put_zstd("/f", io.BytesIO(zstandard.compress(b"zz")), 2, size=2)
    with pytest.raises(PathConflict):
        store.put_existing("/f/x/y", key, 2)
    with pytest.raises(PathConflict):
        store.put_many([("/g/ok", 3, b"fine", None), ("/f/x/z", 3, b"below a file", None)])
    with pytest.raises(PathConflict):
        store.put("/f", b"y" * (store.settings()["inline_max"] + 1), version=2)  # a large blob: leased, then refused
    assert not {"/f", "/f/x/y", "/f/x/z"} & {i.path for i in store.list("/")}
    assert store.metadata.recount() == {}


def test_neighbours_of_a_folder_are_free(store: Store) -> None:
    """Only the folder itself and the names below a file are taken: /p/1 and /p/10, /p/1.in, /p/1-x coexist."""
    store.put("/p/1/a", b"a", version=1)
    for name in ("/p/10", "/p/1.in", "/p/1-x", "/p/0", "/p/1a/b"):
        assert store.put(name, b"n", version=1) == f"{name}@1"
    store.put("/q/10/a", b"a", version=1)
    store.put("/q/1.in/a", b"a", version=1)
    assert store.put("/q/1", b"n", version=1) == "/q/1@1"


def test_a_file_keeps_its_own_name_and_a_freed_name_is_free(store: Store) -> None:
    store.put("/p/1", b"one", version=1)
    assert store.put("/p/1", b"two", version=2) == "/p/1@2"  # an existing file: no folder check at all
    store.delete("/p/1")
    assert store.put("/p/1/a", b"now a folder", version=3) == "/p/1/a@3"
    store.delete("/p/1/a")
    assert store.put("/p/1", b"a file again", version=4) == "/p/1@4"


def test_writers_racing_on_a_folder_and_a_file_below_it_never_both_win(store_location: Location,
                                                                         store: Store) -> None:
    """Two connections: one puts /race/N, the other /race/N/a, at once; at most one of them is stored."""
    rounds = 30
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(suffix: str) -> None:
        with open_store(metadata=store_location.metadata, blobs=store_location.blobs) as mine:
            try:
                for i in range(rounds):
                    barrier.wait()
                    try:
                        mine.put(f"/race/{i}{suffix}", b"x", version=1)
                    except PathConflict:
                        pass
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                barrier.abort()

    threads = [threading.Thread(target=writer, args=(suffix,)) for suffix in ("", "/a")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(rounds):
        stored = [p for p in (f"/race/{i}", f"/race/{i}/a") if store.exists(p)]
        assert len(stored) == 1, stored
