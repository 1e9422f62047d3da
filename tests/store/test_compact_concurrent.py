"""Two compactors on one store at once (two servers on one PostgreSQL), beside puts and deletes (#23).

Each content is switched by at most one of them (a compare-and-swap); the other's work is
thrown away, its new file removed. Nothing is lost, nothing is left behind, and the
totals equal a recount.
"""

from __future__ import annotations

import multiprocessing
import os

from castore.keys import frame_name
from castore.opening import Location, open_store
from castore.store import Store

from .test_compacting import numbers

FORK = multiprocessing.get_context("fork")


def _compact(where: tuple[str, str], start: multiprocessing.synchronize.Event) -> None:
    """Child: wait for the start, compact the whole store once, exit 0 when it did."""
    store = open_store(metadata=where[0], blobs=where[1])
    start.wait(30)
    report = store.compact()
    store.close()
    os._exit(0 if report.finished else 3)


def test_two_compactors_and_a_writer_at_once(store_location: Location, store: Store) -> None:
    model = {f"/c/{i}.in": numbers(200 + i, (300, 6000, 30_000)[i % 3]) for i in range(12)}  # inline, moves in, file
    for name, data in model.items():
        store.put(name, data, 1)
    where = (store_location.metadata, store_location.blobs)
    start = FORK.Event()
    children = [FORK.Process(target=_compact, args=(where, start)) for _ in range(2)]
    for child in children:
        child.start()
    start.set()
    for i in range(0, 12, 4):  # meanwhile: one content replaced, one deleted, one new
        store.put(f"/c/{i}.in", numbers(900 + i, 500), 2)
        model[f"/c/{i}.in"] = numbers(900 + i, 500)
        store.delete(f"/c/{i + 1}.in")
        del model[f"/c/{i + 1}.in"]
        store.put(f"/new/{i}.in", numbers(700 + i, 8000), 1)
        model[f"/new/{i}.in"] = numbers(700 + i, 8000)
    for child in children:
        child.join(300)
        assert child.exitcode == 0
    assert store.compact().settled >= 0  # whatever the children left (the new contents, maybe)
    store.collect_garbage()
    assert all(store.read_bytes(name) == data for name, data in model.items())
    assert store.check() == [] and store.usage() == store.metadata.recount_usage()
    needed = {frame_name(info.key, store.lookup(info.name).blob.frame) for info in store.list("/")
              if store.lookup(info.name).blob.data is None}
    assert set(store.blobs) == needed  # no frame of the loser left behind
