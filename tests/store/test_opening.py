"""open_store: a store named by a folder or by URLs; explicit settings; creation under a lock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import castore
from castore.blobs.fs import FileBlobBackend
from castore.blobs.memory import MemoryBlobBackend
from castore.errors import StoreNotFound
from castore.opening import initialize, locate, open_store
from castore.server.tokens import create_token, revoke_token
from castore.store import Store

from ..backends import PostgresCluster


def test_root_is_the_short_form_of_two_urls(tmp_path: Path) -> None:
    where = locate(tmp_path / "s")
    assert where.metadata == f"sqlite:///{tmp_path / 's' / 'metadata.sqlite3'}"
    assert where.blobs == f"file://{tmp_path / 's' / 'blobs'}"
    with open_store(tmp_path / "s", create=True) as store:
        store.put("/a", b"x", 1)
    with open_store(metadata=where.metadata, blobs=where.blobs) as store:
        assert store.read_bytes("/a") == b"x"
        assert isinstance(store.blobs, FileBlobBackend)


def test_a_url_beside_root_replaces_that_part(tmp_path: Path) -> None:
    with open_store(tmp_path / "s", blobs="memory://", create=True) as store:
        assert isinstance(store.blobs, MemoryBlobBackend)
    assert not (tmp_path / "s" / "blobs").exists()


def test_store_open_and_open_store_are_one_way_in(tmp_path: Path) -> None:
    assert castore.open_store is open_store
    with Store.open(tmp_path / "s", create=True, retention=3) as store:
        assert store.retention == 3
        store.put("/f", b"content", 1)
        with store.open_file("/f") as reader:
            assert reader.read() == b"content"


def test_unknown_settings_raise(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="retension"):
        Store.open(tmp_path / "s", create=True, retension=3)
    with pytest.raises(TypeError):
        open_store(tmp_path / "s", create=True, retension=3)  # type: ignore[call-arg]
    assert not (tmp_path / "s").exists()


def test_settings_of_an_existing_store_cannot_change_silently(tmp_path: Path) -> None:
    open_store(tmp_path / "s", create=True, retention=3).close()
    with pytest.raises(ValueError, match="create=True"):
        open_store(tmp_path / "s", retention=1)
    with pytest.raises(ValueError, match="already exists with retention=3"):
        open_store(tmp_path / "s", create=True, retention=1)
    with open_store(tmp_path / "s", create=True, retention=3) as store:  # the same value is fine
        assert store.retention == 3


def test_bad_settings_and_urls_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retention"):
        open_store(tmp_path / "s", create=True, retention=0)
    for metadata in ("sqlite://", "sqlite:///:memory:", "mysql://db/x", str(tmp_path / "m.sqlite3")):
        with pytest.raises(ValueError, match="metadata URL"):
            open_store(metadata=metadata, blobs="memory://", create=True)
    for blobs in ("file://relative/x", "ftp://host/x", "s3:///no-bucket", str(tmp_path / "b")):
        with pytest.raises(ValueError, match="blobs URL"):
            open_store(tmp_path / "s", blobs=blobs, create=True)
    with pytest.raises(ValueError, match="give a store folder"):
        open_store(metadata=f"sqlite:///{tmp_path / 'm.sqlite3'}")
    assert list(tmp_path.iterdir()) == []


def test_no_store_is_not_created_by_opening(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound, match=r"castore --root .* init"):
        open_store(tmp_path / "nothing")
    with pytest.raises(StoreNotFound, match="castore init"):
        open_store(metadata=f"sqlite:///{tmp_path / 'x.sqlite3'}", blobs="memory://")
    assert list(tmp_path.iterdir()) == []


def test_concurrent_creation_makes_one_store(tmp_path: Path) -> None:
    where = locate(tmp_path / "s")
    errors: list[BaseException] = []

    def create() -> None:
        try:
            initialize(where)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_store(tmp_path / "s") as store:
        seed = store.seed
    initialize(where)  # again: keeps the seed (the keys of every stored blob depend on it)
    with open_store(tmp_path / "s") as store:
        assert store.seed == seed


def test_a_recycled_test_database_is_as_new(postgres: PostgresCluster) -> None:
    """The test fixtures reuse PostgreSQL databases (TRUNCATE, not CREATE DATABASE): a reused
    one holds nothing of the test before, and one whose schema a test changed is not reused."""
    url = postgres.new_database()
    with open_store(metadata=url, blobs="memory://", create=True, retention=2) as store:
        store.put("/a", b"x" * 10_000, 1)
        create_token(store.metadata, "read", "reader")
        seed = store.seed
        held = create_engine(url).connect()  # a connection left open by the test before
    postgres.recycle(url)
    assert postgres.new_database() == url
    with open_store(metadata=url, blobs="memory://", create=True, retention=5) as store:
        assert store.retention == 5 and store.seed != seed
        assert list(store.list("/")) == [] and store.usage().versions == 0
        assert store.metadata.recount() == {} and not revoke_token(store.metadata, "reader")
    held.close()
    with create_engine(url).begin() as c:
        c.execute(text("CREATE TABLE stray (x int)"))
    postgres.recycle(url)
    assert postgres.new_database() != url
