"""The writers' turn: writers of one process queued behind SQLite's busy timeout each fail
within one timeout; writers of several processes take turns on a file lock.

Another process holding the database (``castore gc``, a local ``castore put``) makes a
server's writer wait out SQLite's busy timeout. Threads queued behind it on the
process-local write turn must not wait one timeout after another (the k-th failing after
k timeouts, holding a server thread all along): found by an attack review.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from castore.errors import WouldWait
from castore.metadata import engine, sqlite
from castore.store import Store

WRITERS = 8


def test_queued_writers_fail_within_one_busy_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "BUSY_TIMEOUT_MS", 1000)
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_MS", 1000)
    store = Store.open(tmp_path / "s", create=True)
    store.put("/warm", b"x", 1)
    other = sqlite3.connect(str(tmp_path / "s" / "metadata.sqlite3"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer
    results: list[tuple[str, float]] = []

    def put(i: int) -> None:
        started = time.monotonic()
        try:
            store.put(f"/f{i}", b"data %d" % i, 10)
            results.append(("stored", time.monotonic() - started))
        except OperationalError as e:
            results.append((str(e.orig), time.monotonic() - started))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.rollback()
        other.close()
    assert [r for r, _ in results] == ["database is locked"] * WRITERS
    # One timeout each (1 s), not one after another (up to 8 s): a wide margin for a busy machine.
    assert max(seconds for _, seconds in results) < WRITERS / 2
    assert store.put("/after", b"y", 1) == "/after@1"  # the turn is free again
    assert [info.path for info in store.list("/")] == ["/after", "/warm"]
    store.close()


HOLDER = """
import sys
from castore.store import Store
store = Store.open(sys.argv[1])
turn = store.metadata._write_turn
with turn:  # the turn, between taking it and its transaction's BEGIN (a writer descheduled there)
    print("holding", flush=True)
    sys.stdin.readline()
    store.put("/a", b"from the other process", 2)  # its own write, inside its turn
print("released", flush=True)
store.close()
"""
"""Another process of the store: takes the writers' turn, says so, waits for a line, writes /a, gives the turn back."""

SYS_FLOCK = {"x86_64": 73, "aarch64": 32}


@contextmanager
def _other_process_holding_the_turn(root: Path) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "holding\n"
        yield holder
    finally:
        if holder.poll() is None:
            holder.stdin.write("\n")
            holder.stdin.flush()
        holder.wait(30)


def _a_thread_waits_for_a_file_lock() -> bool:
    """Whether a thread of this process sleeps in ``flock`` (read from /proc: the system call each is in)."""
    for task in Path("/proc/self/task").iterdir():
        try:
            syscall = (task / "syscall").read_text().split()[0]
        except (OSError, IndexError):
            continue
        if syscall == str(SYS_FLOCK[os.uname().machine]):
            return True
    return False


def test_a_loop_put_does_not_go_ahead_while_another_process_holds_the_turn(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", create=True)
    try:
        with _other_process_holding_the_turn(tmp_path / "s"):
            with pytest.raises(WouldWait), store.metadata.not_waiting():
                store.put("/b", b"mine", 1)
            assert not store.exists("/b")
        with store.metadata.not_waiting():  # given back: written at once
            assert store.put("/b", b"mine", 1) == "/b@1"
    finally:
        store.close()


@pytest.mark.skipif(os.uname().machine not in SYS_FLOCK, reason="reads flock's system call number from /proc")
def test_a_writer_waits_in_the_kernel_for_another_process_s_turn_and_goes_after_it(tmp_path: Path) -> None:
    """A writer does not slip past another process's writer holding the turn (the database still free),
    and waits for it on the turn's file lock, woken when it is given back, not in SQLite's busy handler."""
    store = Store.open(tmp_path / "s", create=True)
    seen: list[bool] = []

    def put() -> None:
        store.put("/b", b"mine", 1)
        seen.append(store.exists("/a"))  # /a is written just before the other process gives its turn back

    try:
        with _other_process_holding_the_turn(tmp_path / "s") as holder:
            writer = threading.Thread(target=put)
            writer.start()
            deadline = time.monotonic() + 60
            while writer.is_alive() and not _a_thread_waits_for_a_file_lock() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert writer.is_alive(), "a writer went ahead while another process held the writers' turn"
            assert _a_thread_waits_for_a_file_lock()
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline() == "released\n"
            writer.join()
        assert seen == [True]
        assert store.read_bytes("/b") == b"mine"
    finally:
        store.close()


def test_a_writer_waits_for_another_process_s_turn_at_most_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped while holding the turn (SIGSTOP, a hung disk) makes the others' writers fail
    after the busy timeout, as SQLite's own lock did, instead of waiting for ever; the turn given back,
    writing goes on."""
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_MS", 500)
    store = Store.open(tmp_path / "s", create=True)
    outcome: list[str] = []

    def put() -> None:
        try:
            store.put("/b", b"mine", 1)
            outcome.append("stored")
        except OperationalError as e:
            outcome.append(str(e.orig))

    try:
        with _other_process_holding_the_turn(tmp_path / "s"):
            writer = threading.Thread(target=put)
            writer.start()
            writer.join(60)  # a generous bound for a busy machine: without the timeout it never ends
            assert not writer.is_alive(), "a writer waited for ever for another process's turn"
            assert outcome == ["database is locked"]
            assert not store.exists("/b")
        assert store.put("/b", b"mine", 1) == "/b@1"
    finally:
        store.close()
