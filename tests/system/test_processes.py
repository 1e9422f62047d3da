"""Several processes on one store, and processes killed with SIGKILL in the middle of puts."""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

import pytest

from castore.opening import Location
from castore.store import Store

from .. import _workers
from ..conftest import staging_leftovers

SPAWN = multiprocessing.get_context("spawn")
FORK = multiprocessing.get_context("fork")  # ~0.5 s cheaper a round than spawn: the code is imported once
KILL_ROUNDS = 50
REMOTE_KILL_ROUNDS = 12  # PostgreSQL and S3 rounds cost several times more; the 50 run on SQLite


@pytest.mark.slow
def test_sigkill_during_large_puts_leaves_a_consistent_store(store_location: Location, store: Store) -> None:
    # The child opens its own store after the fork; the parent's connections are never used there.
    rng = random.Random(7)
    where = (store_location.metadata, store_location.blobs)
    rounds = KILL_ROUNDS if store_location.metadata.startswith("sqlite") else REMOTE_KILL_ROUNDS
    for round_ in range(rounds):
        ready = FORK.Event()
        child = FORK.Process(target=_workers.put_forever, args=(where, rng.choice([1, 3]) << 20, ready))
        child.start()
        assert ready.wait(60), "the child did not complete its first put"
        time.sleep(rng.uniform(0.0, 0.25))
        child.kill()
        child.join(10)
        assert child.exitcode == -9
        with _workers._open(where) as reopened:
            problems = reopened.check()
            assert problems == [], f"round {round_}: {problems}"
            for info in reopened.list("/crash"):
                # Every path names a complete blob whose bytes hash to its key.
                assert len(reopened.read_bytes(info.name)) == info.size
    with _workers._open(where) as reopened:
        assert len(list(reopened.list("/crash"))) > 0, "no put ever completed"
        reopened.collect_garbage(staging_grace=0)
        assert reopened.check() == []
        assert staging_leftovers(reopened) == []


def test_four_processes_end_with_the_highest_version_per_path(
    store_location: Location, store: Store, tmp_path: Path
) -> None:
    logs = [tmp_path / f"log{i}" for i in range(4)]
    where = (store_location.metadata, store_location.blobs)
    children = [
        SPAWN.Process(target=_workers.put_random_versions, args=(where, i, 12, 80, str(logs[i])))
        for i in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    highest: dict[str, int] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            path, version = line.split()
            highest[path] = max(highest.get(path, -1), int(version))
    listed = {info.path: info for info in store.list("/mp")}
    assert set(listed) == set(highest)
    for path, version in highest.items():
        assert listed[path].version == version
        assert store.read_bytes(path) == _workers.content_for(path, version)
    assert store.metadata.recount() == {}
    assert store.check() == []
