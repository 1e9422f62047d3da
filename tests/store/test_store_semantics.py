"""Filetracker semantics of the store: versions, deletes, history, listing, usage."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from castore.errors import InvalidName, InvalidVersion, NotFound, SourceError, StoreNotFound, VersionNotFound
from castore.opening import Location, open_store
from castore.store import Store

from ..conftest import Clock, snapshot, staging_leftovers
from .test_names import HOSTILE_NAMES


def test_put_returns_versioned_name_and_content_reads_back(store: Store) -> None:
    assert store.put("/a/b.txt", b"hello", version=10) == "/a/b.txt@10"
    assert store.read_bytes("/a/b.txt") == b"hello"
    assert store.read_bytes("/a/b.txt@10") == b"hello"


def test_put_without_version_uses_the_clock(store: Store, clock: Clock) -> None:
    clock.now = 1234.9
    assert store.put("/x", b"1") == "/x@1234"
    assert store.stat("/x").version == 1234


def test_older_version_is_ignored_and_returns_current(store: Store) -> None:
    store.put("/f", b"new", version=20)
    assert store.put("/f", b"old", version=10) == "/f@20"
    assert store.read_bytes("/f") == b"new"
    assert [v.version for v in store.versions("/f")] == [20]


def test_older_version_does_not_read_a_stream(store: Store) -> None:
    store.put("/f", b"new", version=20)

    class Exploding(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            raise AssertionError("the source of an ignored put was read")

    assert store.put("/f", Exploding(), version=5) == "/f@20"  # type: ignore[arg-type]


def test_equal_version_overwrites(store: Store) -> None:
    store.put("/f", b"one", version=20)
    assert store.put("/f@20", b"two") == "/f@20"
    assert store.read_bytes("/f") == b"two"
    assert [v.version for v in store.versions("/f")] == [20]
    assert store.usage().unreferenced_blobs == 1  # "one" is collectable


def test_newer_version_wins_and_history_is_kept(store: Store) -> None:
    store.put("/f", b"one", version=1)
    store.put("/f", b"two", version=2)
    assert store.read_bytes("/f") == b"two"
    assert store.read_bytes("/f@1") == b"one"
    assert [v.version for v in store.versions("/f")] == [2, 1]


def test_version_given_twice_must_agree(store: Store) -> None:
    assert store.put("/f@3", b"x", version=3) == "/f@3"
    with pytest.raises(InvalidVersion):
        store.put("/f@3", b"x", version=4)
    for bad in [-1, 2**63, "7", 1.5, True]:
        with pytest.raises(InvalidVersion):
            store.put("/g", b"x", version=bad)  # type: ignore[arg-type]


def test_retention_keeps_the_last_versions(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(retention=3)
    for v in range(1, 8):
        store.put("/f", b"v%d" % v, version=v)
    assert [i.version for i in store.versions("/f")] == [7, 6, 5]
    with pytest.raises(VersionNotFound) as e:
        store.read_bytes("/f@4")
    assert e.value.current == 7
    assert store.read_bytes("/f@5") == b"v5"
    assert store.usage().unreferenced_blobs == 4
    assert store.check() == []


def test_every_retained_version_reads_and_a_missing_one_names_the_retained(make_store) -> None:  # type: ignore[no-untyped-def]
    """Issue #21: ``path@version`` reads each retained version; another version says which are retained."""
    store = make_store(retention=3)
    for v in (10, 20, 30, 40):
        store.put("/p/1.in", b"v%d" % v, version=v)
    for v in (20, 30, 40):
        with store.open_file(f"/p/1.in@{v}") as reader:
            assert reader.read() == b"v%d" % v and reader.version == v
    for missing in (10, 25, 50):
        with pytest.raises(VersionNotFound) as e:
            store.open_file(f"/p/1.in@{missing}")
        assert str(e.value) == f"version {missing} of /p/1.in is not retained; retained versions: 40, 30, 20"
        assert e.value.retained == [40, 30, 20] and e.value.current == 40
    with pytest.raises(NotFound) as gone:
        store.open_file("/p/2.in@5")
    assert not isinstance(gone.value, VersionNotFound) and str(gone.value) == "not found: /p/2.in"


def test_default_retention_is_ten(store: Store) -> None:
    for v in range(15):
        store.put("/f", b"%d" % v, version=v)
    assert len(store.versions("/f")) == 10


def test_reading_missing_things(store: Store) -> None:
    with pytest.raises(NotFound):
        store.read_bytes("/missing")
    with pytest.raises(NotFound):
        store.stat("/missing@3")
    store.put("/f", b"x", version=5)
    with pytest.raises(VersionNotFound):
        store.open_file("/f@4")
    assert store.exists("/f") and store.exists("/f@5")
    assert not store.exists("/f@4") and not store.exists("/g")
    with pytest.raises(FileNotFoundError):  # NotFound is a FileNotFoundError
        store.versions("/g")


def test_delete_with_versions(store: Store) -> None:
    store.put("/f", b"x", version=10)
    store.put("/f", b"y", version=20)
    assert store.delete("/f@15") is False
    assert store.read_bytes("/f") == b"y"
    assert store.delete("/f", version=20) is True
    assert not store.exists("/f") and not store.exists("/f@10")
    with pytest.raises(NotFound):
        store.delete("/f")


def test_delete_with_newer_version_and_without_version(store: Store) -> None:
    store.put("/f", b"x", version=10)
    assert store.delete("/f@99") is True
    store.put("/g", b"x", version=10)
    assert store.delete("/g") is True
    assert list(store.list("/")) == []
    assert store.usage().unreferenced_blobs == 1


def test_delete_then_put_older_version_is_accepted(store: Store) -> None:
    store.put("/f", b"x", version=10)
    store.delete("/f")
    assert store.put("/f", b"old", version=5) == "/f@5"
    assert store.read_bytes("/f") == b"old"


def test_listing(store: Store) -> None:
    for path, version in [("/a/1", 5), ("/a/2", 15), ("/a/sub/3", 10), ("/ab", 1), ("/b/4", 1)]:
        store.put(path, path.encode(), version=version)
    assert [i.path for i in store.list("/a")] == ["/a/1", "/a/2", "/a/sub/3"]
    assert [i.path for i in store.list("/a/")] == ["/a/1", "/a/2", "/a/sub/3"]
    assert [i.name for i in store.list("/a", max_version=10)] == ["/a/1@5", "/a/sub/3@10"]
    assert [i.path for i in store.list()] == ["/a/1", "/a/2", "/a/sub/3", "/ab", "/b/4"]
    assert list(store.list("/nothing")) == []
    assert [i.size for i in store.list("/b")] == [4]


def test_listing_pages_through_many_paths(store: Store) -> None:
    store.metadata.LIST_PAGE = 7  # type: ignore[misc]
    for i in range(30):
        store.put(f"/p/{i:03d}", b"x", version=1)
    assert [i.path for i in store.list("/p")] == [f"/p/{i:03d}" for i in range(30)]


def test_usage_accounting(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(inline_max=1000)
    text = b"1 2 3 4 5 6 7 8 9 10\n" * 10_000  # compressible, above inline_max
    store.put("/t1", text, version=1)
    store.put("/t2", text, version=1)
    store.put("/small", b"abc", version=1)
    store.put("/small", b"abcd", version=2)
    usage = store.usage()
    assert usage.files == 3
    assert usage.logical_bytes == 2 * len(text) + 4
    assert usage.versions == 4
    assert usage.retained_bytes == 2 * len(text) + 3 + 4
    assert usage.blobs == 3 and usage.inline_blobs == 2
    assert usage.blob_bytes == len(text) + 7
    assert usage.stored_bytes < len(text) // 10
    assert usage.dedup_ratio > 20


def test_sources_bytes_file_path_and_stream(store: Store, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(b"from a path")
    store.put("/p", local, version=1)
    store.put("/s", str(local), version=1)
    with open(local, "rb") as f:
        store.put("/f", f, version=1)
    store.put("/m", memoryview(b"from memory"), version=1)
    store.put("/b", bytearray(b"from bytearray"), version=1)
    assert store.read_bytes("/p") == store.read_bytes("/s") == store.read_bytes("/f") == b"from a path"
    assert store.read_bytes("/m") == b"from memory" and store.read_bytes("/b") == b"from bytearray"
    with pytest.raises(SourceError):
        store.put("/missing", tmp_path / "nope", version=1)
    with pytest.raises(TypeError):
        store.put("/n", 12345, version=1)  # type: ignore[arg-type]


def test_expected_size_mismatch_stores_nothing(store: Store) -> None:
    before = snapshot(store)
    with pytest.raises(SourceError):
        store.put("/short", io.BytesIO(b"x" * 10), version=1, expected_size=11)
    with pytest.raises(SourceError):
        store.put("/long", io.BytesIO(b"y" * 300_000), version=1, expected_size=299_999)
    assert snapshot(store) == before
    assert staging_leftovers(store) == []


def test_empty_file(store: Store) -> None:
    assert store.put("/empty", b"", version=1) == "/empty@1"
    assert store.read_bytes("/empty") == b"" and store.stat("/empty").size == 0


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_invalid_names_change_nothing(store: Store, name: str) -> None:
    store.put("/keep", b"content", version=1)
    before = snapshot(store)
    for call in (
        lambda: store.put(name, b"evil", version=2),
        lambda: store.delete(name),
        lambda: store.read_bytes(name),
        lambda: store.stat(name),
        # A few of these are fine as listing prefixes (folders): "", "/", "/a/", "/a/b/".
        lambda: list(store.list(name)) if name not in ("", "/", "/a/", "/a/b/") else store.stat(name),
    ):
        with pytest.raises(InvalidName):
            call()
    assert snapshot(store) == before


def test_opening_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        Store.open(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_reopening_keeps_content_and_seed(store_location: Location, store: Store) -> None:
    store.put("/f", b"persisted", version=3)
    seed = store.seed
    with open_store(metadata=store_location.metadata, blobs=store_location.blobs) as again:
        assert again.read_bytes("/f") == b"persisted"
        assert again.seed == seed
    with open_store(metadata=store_location.metadata, blobs=store_location.blobs, create=True) as again:
        assert again.seed == seed


def test_stores_get_different_seeds(make_store) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(name="a"), make_store(name="b")
    assert a.seed != b.seed
    assert a.put("/f", b"same", version=1) and b.put("/f", b"same", version=1)
    assert a.stat("/f").key != b.stat("/f").key


def test_unknown_or_conflicting_settings_raise(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="retension"):
        Store.open(tmp_path / "s", create=True, retension=3)
    assert not (tmp_path / "s").exists()  # nothing was created
    with Store.open(tmp_path / "s", create=True, retention=3, inline_max=10, zstd_level=3) as s:
        assert s.settings() == {"retention": 3, "inline_max": 10, "zstd_level": 3}
    with pytest.raises(ValueError, match="retention=3"):
        Store.open(tmp_path / "s", create=True, retention=5)
    with pytest.raises(ValueError, match="create=True"):
        Store.open(tmp_path / "s", retention=3)
    with pytest.raises(ValueError, match="zstd_level"):
        Store.open(tmp_path / "t", create=True, zstd_level=0)
    assert not (tmp_path / "t").exists()


def test_list_is_in_byte_order(store: Store) -> None:
    names = ["/d/B", "/d/a", "/d/\u00e9", "/d/z", "/d/_", "/d/a b", "/d/\u4e2d"]
    for i, name in enumerate(names):
        store.put(name, b"x", version=i)
    listed = [info.path for info in store.list("/d/")]
    assert listed == sorted(names, key=lambda n: n.encode())


def test_writers_racing_on_new_paths_all_succeed(store_location: Location, store: Store) -> None:
    """Two connections creating the same new paths at once: one wins each race, none fails."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        with open_store(metadata=store_location.metadata, blobs=store_location.blobs) as mine:
            try:
                for i in range(40):
                    barrier.wait()
                    mine.put(f"/race/{i}", b"v%d" % (i + offset), version=i + offset)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                barrier.abort()

    threads = [threading.Thread(target=writer, args=(offset,)) for offset in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(40):
        assert store.read_bytes(f"/race/{i}") == b"v%d" % (i + 1)
    assert store.metadata.recount() == {}
