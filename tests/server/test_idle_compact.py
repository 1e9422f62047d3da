"""``serve --compact-when-idle``: slices run while no request comes, and a request stops one at once (#23)."""

from __future__ import annotations

import multiprocessing
import os
import re
import tempfile
from pathlib import Path

import anyio
import httpx
import pytest

from castore.compacting import backlog
from castore.server.idle import Activity, Pacer, Touching
from castore.store import Store

from ..server_process import castore_server, wait_for
from ..store.test_compacting import numbers

CONTENTS = {f"/idle/{i}.in": numbers(40 + i, 120_000) for i in range(6)}
"""~1.2 MB each: at level 19 a slice takes many seconds over them, far longer than a test's request."""


def _figure(url: str, name: str) -> int:
    text = httpx.get(url + "/metrics", timeout=10).text
    found = re.search(rf"^castore_idle_compact_{name} (\d+)$", text, re.MULTILINE)
    assert found, text
    return int(found.group(1))


def _fill(root: Path) -> None:
    with Store.open(root, create=True) as store:
        for name, data in CONTENTS.items():
            store.put(name, data, 1)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_request_during_a_slice_is_answered_and_stops_it(tmp_path: Path, workers: str) -> None:
    root = tmp_path / "store"
    _fill(root)
    with castore_server(root, "--workers", workers, "--compact-when-idle", "--compact-idle", "0.3",
                        "--compact-cpu", "0.5") as url:
        wait_for(lambda: _figure(url, "running") == 1, "a slice starts once the server is idle")  # /metrics is quiet
        answer = httpx.get(url + "/files/idle/3.in", headers={"Host": "127.0.0.1", "Accept-Encoding": "identity"})
        assert answer.status_code == 200 and answer.content == CONTENTS["/idle/3.in"]
        wait_for(lambda: _figure(url, "stopped_total") == 1, "the request stopped the slice")
        # had the request waited for the slice, the slice would have ended only when all was done
        assert _figure(url, "contents_total") < len(CONTENTS)
        wait_for(lambda: _figure(url, "running") == 1, "another slice once the server is idle again")
    # the server stopped with a slice under way: what it was doing is left as it was
    with Store.open(root) as store:
        assert store.check() == [] and store.usage() == store.metadata.recount_usage()
        assert all(store.read_bytes(name) == data for name, data in CONTENTS.items())


def test_slices_settle_the_store_and_stop_when_nothing_is_left(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        for i in range(20):
            store.put(f"/small/{i}.in", numbers(i, 400), 1)  # kept inline: quick to settle
    with castore_server(root, "--compact-when-idle", "--compact-idle", "0.2", "--compact-cpu", "1") as url:
        wait_for(lambda: _figure(url, "contents_total") == 20, "the slices look at every content")
        wait_for(lambda: _figure(url, "running") == 0, "the last slice ends")
        saved = _figure(url, "saved_bytes_total")
        assert saved > 0
    with Store.open(root) as store:
        assert backlog(store).contents == 0
        assert store.check() == [] and store.usage() == store.metadata.recount_usage()


def test_off_by_default(tmp_path: Path) -> None:
    with castore_server(tmp_path / "s") as url:
        assert "castore_idle_compact" not in httpx.get(url + "/metrics").text


def test_read_only_refuses_it(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from castore.cli import cli

    _fill(tmp_path / "s")
    result = CliRunner().invoke(cli, ["--root", str(tmp_path / "s"), "serve", "--read-only", "--compact-when-idle"])
    assert result.exit_code == 2 and "--read-only" in result.output


def test_the_pacer_rests_in_proportion_to_the_cpu_used() -> None:
    used = [0.0]
    pacer = Pacer(0.25, cpu=lambda: used[0])
    used[0] = 0.1
    assert pacer.owed() == pytest.approx(0.3)  # 0.1 s of work, then 0.3 s of rest: a quarter of a core
    assert pacer.owed() == 0
    assert Pacer(1.0, cpu=lambda: used[0]).owed() == 0
    with pytest.raises(ValueError):
        Pacer(0)


def test_health_and_metrics_are_not_activity() -> None:
    anyio.run(_health_and_metrics_are_not_activity)


async def _health_and_metrics_are_not_activity() -> None:
    now = [100.0]
    activity = Activity(clock=lambda: now[0])

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    touching = Touching(app, activity, prefix="/ft")
    activity.touch()
    now[0] = 200.0
    for path in ("/ft/health", "/ft/metrics"):
        await touching({"type": "http", "path": path}, None, None)  # type: ignore[arg-type]
    assert activity.get("last") == 100.0
    await touching({"type": "http", "path": "/ft/files/a"}, None, None)  # type: ignore[arg-type]
    assert activity.get("last") == 200.0


def _hold_the_lead(fd: int, held: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event) -> None:
    activity = Activity(fd)  # kept open: closing any descriptor of the file drops a process's POSIX locks
    assert activity.lead()
    held.set()
    done.wait(20)
    activity.close()


def test_one_worker_at_a_time_leads() -> None:
    fork = multiprocessing.get_context("fork")
    with tempfile.TemporaryFile() as page:
        os.ftruncate(page.fileno(), 4096)
        held, done = fork.Event(), fork.Event()
        other = fork.Process(target=_hold_the_lead, args=(page.fileno(), held, done))
        other.start()
        try:
            assert held.wait(20)
            assert not Activity(page.fileno()).lead()  # the other process leads
        finally:
            done.set()
            other.join(20)
        assert Activity(page.fileno()).lead()  # its lock went with it


def test_the_landing_page_shows_how_much_is_settled(tmp_path: Path) -> None:
    """Counted in the background (a scan of the contents not looked at yet), at most once per interval."""
    import asyncio

    from starlette.applications import Starlette

    from castore.server import ui

    store = Store.open(tmp_path / "s", create=True)
    for i in range(4):
        store.put(f"/settle/{i}.in", numbers(i, 400), 1)
    now = [1000.0]
    app = Starlette(routes=[ui.ui_mount(store, clock=lambda: now[0])])

    async def settled(http: httpx.AsyncClient, wanted: str) -> str:
        for _ in range(1000):  # until the background count is done
            found = re.search(r'<dd id="settled">(.*?)</dd>', (await http.get("/ui/")).text, re.DOTALL)
            assert found
            if wanted in found.group(1):
                return found.group(1)
            await asyncio.sleep(0.01)
        raise AssertionError(f"{wanted!r} not in {found.group(1)!r}")

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
            first = await settled(http, "0 % of the contents (0 of 4) looked at by")
            assert "at zstd 19; 4 waiting" in first
            store.compact(limit=3)
            assert "(0 of 4)" in await settled(http, "of the contents")  # the last count, within the interval
            now[0] += ui.REPORT_TTL + 1
            assert "1 waiting" in await settled(http, "75 % of the contents (3 of 4)")
            store.compact(level=22, limit=1)  # another level: settled means that level's now
            now[0] += ui.REPORT_TTL + 1
            assert "at zstd 22; 3 waiting" in await settled(http, "25 % of the contents (1 of 4)")

    asyncio.run(scenario())
    store.close()


def test_the_server_starting_counts_as_activity(tmp_path: Path) -> None:
    """A fresh page says no request for ever: the first slice must still wait ``idle`` seconds."""
    from castore.server.idle import IdleCompactor

    now = [5000.0]
    activity = Activity(clock=lambda: now[0])
    assert activity.get("last") == 0
    with Store.open(tmp_path / "s", create=True) as store:
        compactor = IdleCompactor(store, activity, idle=3600, cpu=1.0, level=19)
        compactor.start()
        try:
            assert activity.get("last") == 5000.0
        finally:
            compactor.close()
    assert activity.get("slices") == 0
