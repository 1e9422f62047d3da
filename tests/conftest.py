"""Shared fixtures: fresh stores on real SQLite files in a temporary folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from castore.blobs.memory import MemoryBlobBackend
from castore.metadata.repo import MetadataRepo
from castore.store import Store


class Clock:
    """A settable clock, so that unversioned puts get predictable versions."""

    def __init__(self, now: float = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_root: Path, clock: Clock) -> Iterator[Store]:
    """A new store with the file blob backend and SQLite metadata."""
    with Store.open(store_root, create=True, clock=clock) as s:
        yield s


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[..., Store]]:
    """Build extra stores: ``make_store(memory=True, retention=3, inline_max=...)``."""
    made: list[Store] = []

    def make(*, memory: bool = False, name: str = "extra", **options: object) -> Store:
        root = tmp_path / name
        if memory:
            root.mkdir(parents=True, exist_ok=True)
            repo = MetadataRepo(f"sqlite:///{root / 'metadata.sqlite3'}")
            Store.init_metadata(repo, **options)  # type: ignore[arg-type]
            s = Store(repo, MemoryBlobBackend())
        else:
            s = Store.open(root, create=True, **options)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def snapshot(store: Store) -> tuple[object, ...]:
    """Everything observable about a store's content, to compare before and after."""
    files = [(i.path, i.version, i.key, i.size) for i in store.list("/")]
    history = {i.path: [(v.version, v.key) for v in store.versions(i.path)] for i in store.list("/")}
    usage = store.usage()
    blobs = sorted(store.blobs)
    return files, history, usage, blobs
