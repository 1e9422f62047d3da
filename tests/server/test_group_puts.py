"""Group commit (castore/server/grouping.py): small puts that find the database busy are
stored together in one transaction, and each answers exactly as it would alone.

The server app tests hold SQLite's write lock from another connection (as another worker
process would) while puts queue, send them one at a time so that the queue's order is
known, then let the lock go; a second store takes the same requests one by one, each in a
thread of its own (no loop, no groups). Answers, retained versions and contents must be the
same, with every bad upload refused on its own. The :class:`GroupWriter` tests drive the
queue directly with plain functions.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from castore.metadata import engine, sqlite
from castore.server.app import create_app
from castore.server.grouping import MAX_GROUP_BYTES, MAX_GROUP_PUTS, GroupWriter
from castore.store import METADATA_FILE, Store

from ..store.test_faults import _fill, small_disk
from .test_loop_puts import (
    SEQUENCE,
    TEXT,
    V2,
    Request,
    _answer,
    _filetracker_put,
    _hold_write_lock,
    _state,
    q,
)

__all__ = ["small_disk"]  # the fixture (a 12 MiB tmpfs), used by name

SMALL_PUTS = [r for r in SEQUENCE if r[0] == "PUT" and "/large.bin" not in r[1]]
BAD_FRAME = next(r for r in SMALL_PUTS if r[1].startswith("/files/z.txt") and r[2]["Logical-Size"] != str(len(TEXT)))
"""A zstd body decoding past its Logical-Size: found while the group is prepared, so the whole
group is stored again put by put (each answered on its own), as for :data:`IN_THE_WAY`."""
IN_THE_WAY = _filetracker_put("/r.bin/under", TEXT, V2)  # below a file: found in the group's transaction
GOOD_AND_BAD = [r for r in SMALL_PUTS if r is not BAD_FRAME]
"""Every other bad upload is refused before the group is stored (its decoding and checks)."""


@pytest.fixture
def grouped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of puts in every group stored in one transaction (``Store.put_many``)."""
    sizes: list[int] = []
    original = Store.put_many

    def watched(self: Store, items: Any, **kwargs: Any) -> Any:
        names = original(self, items, **kwargs)
        sizes.append(len(names))
        return names

    monkeypatch.setattr(Store, "put_many", watched)
    return sizes


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every put that joined the group writer's queue, in order."""
    paths: list[str] = []
    original = GroupWriter.submit

    async def watched(self: GroupWriter[Any], put: Any) -> str:
        paths.append(put.path)
        return await original(self, put)

    monkeypatch.setattr(GroupWriter, "submit", watched)
    return paths


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _queued_while_locked(client: TestClient, database: Path, requests: Sequence[Request],
                         submitted: list[str]) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    """Send ``requests`` one at a time (each once queued) while another connection holds the
    write lock, then release it; their answers, in order."""
    release = threading.Event()
    holder = _hold_write_lock(database, 30, release)
    answers: list[Any] = [None] * len(requests)
    senders = []
    try:
        for i, request in enumerate(requests):
            def send(i: int = i, request: Request = request) -> None:
                answers[i] = _answer(client, request)

            sender = threading.Thread(target=send)
            sender.start()
            senders.append(sender)
            _wait_for(lambda i=i: len(submitted) > i, f"put {i} to be queued")  # type: ignore[misc]
    finally:
        release.set()
        holder.join()
        for sender in senders:
            sender.join(30)
    return answers


@pytest.mark.parametrize("requests", [GOOD_AND_BAD, SMALL_PUTS, [*GOOD_AND_BAD[:3], IN_THE_WAY, *GOOD_AND_BAD[3:]]],
                         ids=["good-and-bad", "a-bad-zstd-frame", "a-put-in-the-way"])
def test_grouped_puts_answer_as_puts_one_by_one(
    tmp_path: Path, requests: list[Request], grouped: list[int], submitted: list[str],
) -> None:
    first, second = tmp_path / "grouped", tmp_path / "alone"
    Store.open(first, create=True).close()
    shutil.copytree(first, second)  # one seed: the same ETags on both
    with Store.open(first) as group_store, Store.open(second) as alone_store, \
            TestClient(create_app(group_store), raise_server_exceptions=False) as group_client, \
            TestClient(create_app(alone_store, loop_puts=False), raise_server_exceptions=False) as alone_client:
        answers = _queued_while_locked(group_client, first / METADATA_FILE, requests, submitted)
        expected = [_answer(alone_client, request) for request in requests]
        for request, answer, wanted in zip(requests, answers, expected, strict=True):
            assert answer == wanted, request[:2]
        assert _state(group_store) == _state(alone_store)
        for get in ("/files/r.bin", "/files/r.bin@1000", "/files/z.txt", "/files/plain.txt", "/list/"):
            assert _answer(group_client, ("GET", get, {}, b"")) == _answer(alone_client, ("GET", get, {}, b""))
    assert submitted == [r[1].split("?")[0].removeprefix("/files") for r in requests]
    # the first put's group waited for the lock alone; the others queued meanwhile and went together
    if IN_THE_WAY in requests or BAD_FRAME in requests:
        assert grouped == [1]  # the second group failed as a whole: stored put by put
    else:
        assert grouped[0] == 1 and sum(grouped) < len(requests) and max(grouped) > 5
    statuses = [answer[0] for answer in answers]
    assert statuses.count(200) >= 8 and statuses.count(400) >= 7, statuses


def test_many_clients_at_once_lose_no_put(tmp_path: Path, grouped: list[int]) -> None:
    """Puts of many threads at once, to a few paths and versions, while another writer of the
    process keeps taking the write turn (so that puts queue and go in groups): each path ends at
    the newest version any put gave it, with its content, and the store checks clean."""
    with Store.open(tmp_path / "s", create=True) as store, TestClient(create_app(store)) as client:
        stop = threading.Event()

        def noise() -> None:
            while not stop.is_set():
                with store.metadata.write():
                    time.sleep(0.01)  # the turn held: puts meanwhile find the database busy
                time.sleep(0.002)

        noisy = threading.Thread(target=noise)
        noisy.start()
        def content(path: int, version: int) -> bytes:
            return f"{path}@{version} ".encode() * 500

        def putter(seed: int) -> None:
            for k in range(30):
                path, version = (seed + k) % 5, 1000 + (seed * 7 + k * 13) % 40
                response = client.put(f"/files/p{path}" + q(time.strftime(
                    "%a, %d %b %Y %H:%M:%S -0000", time.gmtime(version))), content=content(path, version))
                assert response.status_code == 200, response.headers.get("X-Exception")

        try:
            with ThreadPoolExecutor(12) as pool:
                list(pool.map(putter, range(12)))  # a failed put raises here
        finally:
            stop.set()
            noisy.join()
        for path in range(5):
            given = {1000 + (seed * 7 + k * 13) % 40 for seed in range(12) for k in range(30) if (seed + k) % 5 == path}
            newest = max(given)
            assert max(v.version for v in store.versions(f"/p{path}")) == newest
            assert store.read_bytes(f"/p{path}") == content(path, newest)
        assert store.check() == []
        assert sum(grouped) > 0  # the noise made puts wait: some were stored in groups


def test_a_group_on_a_full_disk_answers_each_put_on_its_own_and_leaves_nothing_half_written(
    small_disk: Path, submitted: list[str],
) -> None:
    """Puts queued while the disk fills: each answers 200 (and is there, whole) or 507 (and is
    not there), the store checks clean, and once there is room again the same puts are stored."""
    root = small_disk / "store"
    Store.open(root, create=True).close()
    bodies = {f"/full/{i}": os.urandom(3000) for i in range(40)}
    requests: list[Request] = [("PUT", f"/files{path}" + q(V2), {}, body) for path, body in bodies.items()]
    with Store.open(root) as store, TestClient(create_app(store), raise_server_exceptions=False) as client:
        _fill(small_disk, "filler")
        answers = _queued_while_locked(client, root / METADATA_FILE, requests, submitted)
        statuses = [status for status, _, _ in answers]
        assert set(statuses) <= {200, 507}, statuses
        assert 507 in statuses, "the disk was not full: nothing was refused"
        for (path, body), (status, headers, _) in zip(bodies.items(), answers, strict=True):
            if status == 200:
                assert store.read_bytes(path) == body
            else:
                assert dict(headers)["x-exception"].startswith("no space left"), headers
                assert not store.exists(path)
        os.unlink(small_disk / "filler")
        again = _queued_while_locked(client, root / METADATA_FILE, requests, submitted)
        assert [status for status, _, _ in again] == [200] * len(requests)
        assert all(store.read_bytes(path) == body for path, body in bodies.items())
        assert store.check() == []


@pytest.mark.parametrize("group_puts", [True, False], ids=["grouped", "thread"])
def test_a_group_that_finds_the_database_locked_throughout_fails_at_once_not_put_after_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group_puts: bool,
) -> None:
    """Another process holds the write lock past the busy timeout: each queued put gets a 503
    after one timeout of its group's wait, not after one more timeout per put before it (the
    group's puts are not retried one by one for an error each would meet alone too); puts
    stored each in a thread (no groups) answer the same."""
    timeout = 1.0
    monkeypatch.setattr(engine, "BUSY_TIMEOUT_MS", int(timeout * 1000))
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_MS", int(timeout * 1000))
    with Store.open(tmp_path / "s", create=True) as store, \
            TestClient(create_app(store, group_puts=group_puts), raise_server_exceptions=False) as client:
        release = threading.Event()
        holder = _hold_write_lock(tmp_path / "s" / METADATA_FILE, 60, release)
        start = time.monotonic()
        try:
            with ThreadPoolExecutor(6) as pool:
                answers = list(pool.map(
                    lambda i: (client.put(f"/files/locked/{i}" + q(V2), content=TEXT), time.monotonic() - start),
                    range(6)))
        finally:
            release.set()
            holder.join()
        # as one put alone answers a lock held past the timeout: 503, try again
        assert {(r.status_code, r.headers["Retry-After"]) for r, _ in answers} == {(503, "1")}
        assert all("locked by another process" in r.headers["X-Exception"] for r, _ in answers)
        assert max(seconds for _, seconds in answers) < 4 * timeout  # put after put: ~8 timeouts
        assert not any(store.exists(f"/locked/{i}") for i in range(6))
        assert client.put("/files/locked/0" + q(V2), content=TEXT).status_code == 200  # free again


# -- the queue itself ------------------------------------------------------------------------


def _writer(write_many: Callable[[Sequence[str]], Sequence[str | BaseException | None]],
            write_one: Callable[[str], str]) -> GroupWriter[str]:
    return GroupWriter(write_many, write_one, size=len)


def test_a_group_that_fails_as_a_whole_is_stored_put_by_put_each_with_its_own_answer() -> None:
    calls: list[Any] = []
    gate = threading.Event()

    def write_many(puts: Sequence[str]) -> list[str | BaseException | None]:
        calls.append(("many", list(puts)))
        if puts == ["gate"]:
            gate.wait(10)  # the puts after it queue meanwhile: the next group is all of them
        if "bad" in puts:
            raise RuntimeError("the transaction failed")
        return [f"{p}@1" if p != "alone" else None for p in puts]

    def write_one(put: str) -> str:
        calls.append(("one", put))
        if put == "bad":
            raise ValueError("bad put")
        return f"{put}@2"

    writer = _writer(write_many, write_one)

    async def phase(puts: Sequence[str]) -> list[Any]:
        first = asyncio.ensure_future(writer.submit("gate"))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(writer.submit(p)) for p in puts]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        gate.clear()
        return results[1:]

    good = asyncio.run(phase(["a", "alone", "b"]))
    failed = asyncio.run(phase(["c", "bad", "d"]))
    writer.close()
    assert good == ["a@1", "alone@2", "b@1"]  # "alone": left by the group to be stored by itself
    assert failed[0::2] == ["c@2", "d@2"] and isinstance(failed[1], ValueError)
    assert calls == [("many", ["gate"]), ("many", ["a", "alone", "b"]), ("one", "alone"),
                     ("many", ["gate"]), ("many", ["c", "bad", "d"]), ("one", "c"), ("one", "bad"), ("one", "d")]


def test_a_put_cancelled_while_queued_is_not_stored_and_the_rest_are() -> None:
    started, go = threading.Event(), threading.Event()
    stored: list[str] = []

    def write_many(puts: Sequence[str]) -> list[str | BaseException | None]:
        started.set()
        go.wait(10)
        stored.extend(puts)
        return [f"{p}@1" for p in puts]

    writer = _writer(write_many, lambda put: f"{put}@1")

    async def main() -> tuple[str, str, bool]:
        first = asyncio.ensure_future(writer.submit("first"))
        await asyncio.to_thread(started.wait, 10)  # "first" is being stored; the others queue
        cancelled = asyncio.ensure_future(writer.submit("cancelled"))
        last = asyncio.ensure_future(writer.submit("last"))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await asyncio.sleep(0.05)
        go.set()
        return await first, await last, cancelled.cancelled()

    assert asyncio.run(main()) == ("first@1", "last@1", True)
    writer.close()
    assert stored == ["first", "last"]


def test_closing_stores_what_is_queued_then_refuses_more() -> None:
    go = threading.Event()
    stored: list[str] = []

    def write_many(puts: Sequence[str]) -> list[str | BaseException | None]:
        go.wait(10)
        stored.extend(puts)
        return [f"{p}@1" for p in puts]

    writer = _writer(write_many, lambda put: f"{put}@1")

    async def main() -> list[str]:
        tasks = [asyncio.ensure_future(writer.submit(p)) for p in ("a", "b", "c")]
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(asyncio.to_thread(writer.close))
        await asyncio.sleep(0.05)
        go.set()
        await closing
        with pytest.raises(RuntimeError, match="stopping"):
            await writer.submit("late")
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(main()) == ["a@1", "b@1", "c@1"]
    assert stored == ["a", "b", "c"] and not writer.busy


def test_groups_are_bounded_in_puts_and_bytes() -> None:
    sizes: list[tuple[int, int]] = []
    go = threading.Event()

    def write_many(puts: Sequence[str]) -> list[str | BaseException | None]:
        go.wait(10)
        sizes.append((len(puts), sum(map(len, puts))))
        return [f"{p[:3]}@1" for p in puts]

    writer = _writer(write_many, lambda put: put)
    big = "x" * (6 << 20)

    async def main() -> None:
        tasks = [asyncio.ensure_future(writer.submit("000"))]
        await asyncio.sleep(0.05)  # its group is being stored (held): the rest queue meanwhile
        tasks += [asyncio.ensure_future(writer.submit(f"{i:03}")) for i in range(1, MAX_GROUP_PUTS + 10)]
        tasks += [asyncio.ensure_future(writer.submit(f"{i:03}{big}")) for i in range(4)]
        await asyncio.sleep(0.1)
        go.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    writer.close()
    assert sum(n for n, _ in sizes) == MAX_GROUP_PUTS + 14
    assert all(n <= MAX_GROUP_PUTS for n, _ in sizes)
    assert all(total <= MAX_GROUP_BYTES for _, total in sizes)
    assert sizes[0] == (1, 3)  # the first put started a group alone; the rest queued meanwhile
    assert sizes[1][0] == MAX_GROUP_PUTS


class _Died(BaseException):
    """Not an Exception: ends the writer thread (a bug's stand-in)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's end, on purpose
def test_a_writer_thread_that_dies_answers_its_group_and_a_new_one_takes_the_next_puts() -> None:
    def write_many(puts: Sequence[str]) -> list[str | BaseException | None]:
        if puts == ["dies"]:
            raise _Died()
        return [f"{p}@1" for p in puts]

    writer = _writer(write_many, lambda put: f"{put}@1")

    async def main() -> tuple[BaseException | str, str]:
        died = await asyncio.gather(writer.submit("dies"), return_exceptions=True)
        await asyncio.sleep(0.05)  # the thread has ended
        return died[0], await asyncio.wait_for(writer.submit("after"), 10)  # not queued forever

    died, after = asyncio.run(main())
    writer.close()
    assert isinstance(died, RuntimeError) and after == "after@1"


def test_a_writer_thread_that_cannot_start_refuses_the_put_and_queues_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    stored: list[str] = []

    def write_many(puts: Sequence[str]) -> list[str | BaseException | None]:
        stored.extend(puts)
        return [f"{p}@1" for p in puts]

    writer = _writer(write_many, lambda put: f"{put}@1")
    original = threading.Thread.start

    def cannot(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", cannot)
    with pytest.raises(RuntimeError, match="can't start"):
        asyncio.run(writer.submit("refused"))
    monkeypatch.setattr(threading.Thread, "start", original)
    assert asyncio.run(writer.submit("later")) == "later@1"
    writer.close()
    assert stored == ["later"] and not writer.busy
