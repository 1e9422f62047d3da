"""Shared fixtures: fresh stores on every storage combination, on real servers.

``store``, ``store_location`` and ``make_store`` are parametrized by ``store_backend``: each test
using them runs on SQLite + a blob folder, PostgreSQL + a blob folder and PostgreSQL + S3
(``tests/backends.py`` starts PostgreSQL and an S3 server, moto, on 127.0.0.1
once per session).
A test that depends on one combination narrows the list with
``@pytest.mark.backends("sqlite+file")``. ``CASTORE_TEST_BACKENDS=sqlite+file`` runs only
the listed ones (quick local runs; ``sqlite+s3`` is available there too). ``+s3-radosgw``
(``postgresql+s3-radosgw``, ``sqlite+s3-radosgw``) puts the blobs on Ceph's radosgw, a real S3
implementation, instead of moto; scripts/test.sh runs the S3 tests so in a part of their own.

Tests of the S3 backend itself take ``s3_server``: moto, or radosgw when the selected
backends name ``s3-radosgw`` (both when both are named).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from castore.opening import Location, locate, open_store
from castore.store import Store

from .backends import MotoServer, PostgresCluster, RadosGateway, S3Server

BACKENDS = ("sqlite+file", "postgresql+file", "postgresql+s3")
"""The metadata+blobs combinations the store's tests run against by default."""

KNOWN_BACKENDS = (*BACKENDS, "sqlite+s3", "postgresql+s3-radosgw", "sqlite+s3-radosgw")
"""Also runnable with CASTORE_TEST_BACKENDS (sqlite+s3 adds little the others do not cover;
``+s3-radosgw``: the blobs on radosgw, as scripts/test.sh's radosgw part runs them)."""

S3_SERVERS = ("s3", "s3-radosgw")
"""The blobs part of a backend name that is an S3 server: moto, radosgw."""


def selected_backends() -> tuple[str, ...]:
    wanted = os.environ.get("CASTORE_TEST_BACKENDS")
    if not wanted:
        return BACKENDS
    chosen = tuple(b.strip() for b in wanted.split(","))
    unknown = set(chosen) - set(KNOWN_BACKENDS)
    if unknown:
        raise pytest.UsageError(f"CASTORE_TEST_BACKENDS: unknown {sorted(unknown)}; known: {KNOWN_BACKENDS}")
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*names): run this test only on these storage combinations")
    config.addinivalue_line(
        "markers", "slow: a long test (crash rounds, memory, hostile and slow clients, full disks); -m slow runs only these"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        allowed = marker.args if marker is not None else KNOWN_BACKENDS
        allowed = (*allowed, *(b + "-radosgw" for b in allowed if b.endswith("+s3")))  # +s3 runs on either
        metafunc.parametrize("store_backend", [b for b in selected_backends() if b in allowed])
    if "s3_server" in metafunc.fixturenames:
        named = [b.split("+", 1)[1] for b in selected_backends()]
        metafunc.parametrize("s3_server", [s for s in S3_SERVERS if s in named] or ["s3"], indirect=True)


class Clock:
    """A settable clock, so that unversioned puts get predictable versions."""

    def __init__(self, now: float = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def radosgw() -> Iterator[RadosGateway]:
    server = RadosGateway()
    yield server
    server.stop()


@pytest.fixture
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """The S3 server of this test's parameter: moto (``s3``) or radosgw (``s3-radosgw``)."""
    server: S3Server = request.getfixturevalue("moto" if request.param == "s3" else "radosgw")
    return server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


class Locations:
    """``locations(name)``: where a new store of this test's backend goes (nothing made yet).

    Its PostgreSQL databases are emptied for later tests by :meth:`release`, or when the
    test is over (its stores are closed by then: fixtures that use this one end first).
    """

    def __init__(self, backend: str, folder: Path, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self.folder = folder
        self.request = request
        self.databases: list[str] = []

    def __call__(self, name: str) -> Location:
        folder = self.folder / name
        if self.backend == "sqlite+file":
            return locate(folder)
        if self.backend.startswith("sqlite"):
            metadata = locate(folder).metadata
        else:
            metadata = self.request.getfixturevalue("postgres").new_database()
            self.databases.append(metadata)
        if self.backend.endswith("+file"):
            return Location(metadata, (folder / "blobs").as_uri())
        server = "radosgw" if self.backend.endswith("+s3-radosgw") else "moto"
        return Location(metadata, self.request.getfixturevalue(server).new_bucket())

    def release(self, where: Location) -> None:
        """Done with the store at ``where`` (closed): its database may serve another store."""
        if where.metadata in self.databases:
            self.databases.remove(where.metadata)
            self.request.getfixturevalue("postgres").recycle(where.metadata)

    def release_all(self) -> None:
        for url in list(self.databases):
            self.release(Location(url, ""))


@pytest.fixture
def new_location(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Locations]:
    """Where new stores of this test's backend go: see :class:`Locations`."""
    locations = Locations(store_backend, tmp_path, request)
    yield locations
    locations.release_all()


@pytest.fixture
def store_location(new_location: Callable[[str], Location]) -> Location:
    """Where this test's ``store`` lives: ``tmp_path/store`` on SQLite, else a new database/bucket."""
    return new_location("store")


@pytest.fixture
def store(store_location: Location, clock: Clock) -> Iterator[Store]:
    """A new store on this test's backend, with a settable clock."""
    with open_store(metadata=store_location.metadata, blobs=store_location.blobs, create=True, clock=clock) as s:
        yield s


@pytest.fixture
def make_store(new_location: Callable[[str], Location]) -> Iterator[Callable[..., Store]]:
    """Build extra stores: ``make_store(memory=True, retention=3, inline_max=...)``."""
    made: list[Store] = []

    def make(*, memory: bool = False, name: str = "extra", **options: object) -> Store:
        where = new_location(name)
        s = open_store(metadata=where.metadata, blobs="memory://" if memory else where.blobs, create=True,
                       **options)  # type: ignore[arg-type]
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def staging_leftovers(store: Store) -> list[Path]:
    """Files left in a blob folder's staging area (none for backends without one)."""
    directory = getattr(store.blobs, "directory", None)
    return [p for p in (directory / ".staging").iterdir()] if directory is not None else []


def snapshot(store: Store) -> tuple[object, ...]:
    """Everything observable about a store's content, to compare before and after."""
    files = [(i.path, i.version, i.key, i.size) for i in store.list("/")]
    history = {i.path: [(v.version, v.key) for v in store.versions(i.path)] for i in store.list("/")}
    usage = store.usage()
    blobs = sorted(store.blobs)
    return files, history, usage, blobs
