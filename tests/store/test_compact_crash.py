"""kill -9 in the middle of ``castore compact`` leaves a clean store, and the next run goes on (#23).

The child process kills itself with SIGKILL at the N-th step of its compaction (N drawn
by the parent): before or after staging a new frame, publishing it, the row's switch (inside
the transaction, before its commit), the old frame's removal, or saving the cursor. No
timing: every point between two steps is reached by counting steps, not by sleeping. The
first rounds add tail-changed copies of one content (delta frames, #23), and the parent
deletes their reference and then one of them, with gc, between two kills.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from collections.abc import Callable
from typing import Any

from castore.keys import frame_name
from castore.maintenance import check
from castore.metadata.txn import WriteTxn
from castore.opening import Location, open_store
from castore.store import Store

from .test_compact_delta import reference_content, tail_changed
from .test_compacting import numbers

FORK = multiprocessing.get_context("fork")
ROUNDS = 10
REMOTE_ROUNDS = 4


def _killing(method: Callable[..., Any], steps: list[int], kill_at: int) -> Callable[..., Any]:
    """``method``, counting a step before and after each call, and SIGKILL at step ``kill_at``."""
    def step() -> None:
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        step()
        result = method(*args, **kwargs)
        step()
        return result

    return wrapper


def _compact_until_killed(where: tuple[str, str], kill_at: int) -> None:
    """Child: compact the store, killing itself at step ``kill_at`` (exit 0 if it finished first)."""
    store = open_store(metadata=where[0], blobs=where[1])
    steps = [0]
    blobs: Any = store.blobs
    for name in ("stage", "publish", "delete"):
        setattr(blobs, name, _killing(getattr(blobs, name), steps, kill_at))
    metadata: Any = store.metadata
    metadata.set_setting = _killing(metadata.set_setting, steps, kill_at)
    WriteTxn.settle_frame = _killing(WriteTxn.settle_frame, steps, kill_at)  # type: ignore[method-assign]
    store.compact()
    os._exit(0)


BASE = reference_content()
DELTA_ROUNDS = 4
"""Rounds that add a tail-changed copy of :data:`BASE` (a delta frame's content)."""


def _contents(round_: int) -> dict[str, bytes]:
    """New contents for a round: kept inline, in a file that moves inline, in a file that stays one.

    The first rounds add a content compact stores as a delta against ``/base.in`` too.
    """
    contents = {
        f"/r{round_}/small.in": numbers(round_ * 10 + 1, 2000),
        f"/r{round_}/medium.in": numbers(round_ * 10 + 2, 12_000),
        f"/r{round_}/large.in": numbers(round_ * 10 + 3, 30_000),
    }
    if round_ == 0:
        contents["/base.in"] = BASE
    if round_ < DELTA_ROUNDS:
        contents[f"/r{round_}/tail.in"] = tail_changed(BASE, round_ + 2)
    return contents


def _delete_and_collect(store: Store, model: dict[str, bytes], round_: int) -> None:
    """Between kills: delete the deltas' reference (round 2), then one delta (round 3), and collect."""
    gone = {2: "/base.in", 3: "/r1/tail.in"}.get(round_)
    if gone is not None and gone in model:
        store.delete(gone)
        del model[gone]
        store.collect_garbage()


def _backend_names(store: Store) -> set[str]:
    return set(store.blobs)


def _needed_names(store: Store) -> set[str]:
    return {frame_name(info.key, store.lookup(info.name).blob.frame) for info in store.list("/")
            if store.lookup(info.name).blob.data is None}


def test_sigkill_at_any_step_of_compact_leaves_a_clean_store(store_location: Location, store: Store) -> None:
    rng = random.Random(23)
    where = (store_location.metadata, store_location.blobs)
    rounds = ROUNDS if store_location.metadata.startswith("sqlite") else REMOTE_ROUNDS
    model: dict[str, bytes] = {}
    killed = 0
    for round_ in range(rounds):
        for name, data in _contents(round_).items():
            store.put(name, data, 1)
            model[name] = data
        _delete_and_collect(store, model, round_)
        child = FORK.Process(target=_compact_until_killed, args=(where, rng.randrange(1, 18)))
        child.start()
        child.join(300)
        assert child.exitcode in (0, -signal.SIGKILL), child.exitcode
        killed += child.exitcode == -signal.SIGKILL
        with open_store(metadata=where[0], blobs=where[1]) as reopened:
            assert reopened.check() == [], f"round {round_}"
            assert reopened.usage() == reopened.metadata.recount_usage(), f"round {round_}"
            for name, data in model.items():
                assert reopened.read_bytes(name) == data, (round_, name)
    assert killed > rounds // 2
    # The next run goes on and finishes; what the kills left behind is only orphans that repair removes.
    report = store.compact()
    assert report.finished
    assert any(store.lookup(name).blob.base is not None for name in model)  # deltas were made and kept
    assert store.compact().contents == 0
    assert all(store.read_bytes(name) == data for name, data in model.items())
    repaired = check(store, verify_content=True, repair=True, grace=0)
    assert repaired.problems == [] or repaired.exit_code == 1
    assert _backend_names(store) == _needed_names(store)
    assert store.check() == [] and all(problem.kind != "totals" for problem in repaired.problems)
    assert store.usage() == store.metadata.recount_usage()
