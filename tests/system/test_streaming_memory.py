"""Walking a huge folder or import costs bounded memory: ``ls``, ``/list/`` and the import; gc shows progress (#22).

Each test measures memory (tracemalloc's peak, or a server's peak RSS) on a small and a
large input and checks that the large one does not cost what it holds; no timing is asserted.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from castore.cli import cli
from castore.migration import FolderV2, Importer, importer, sources
from castore.store import Store

from ..server_process import free_port

MiB = 1 << 20


def fill(root: Path, folder: str, count: int) -> None:
    """A store at ``root`` whose ``folder`` holds ``count`` files (metadata only, one shared content)."""
    with Store.open(root, create=True) as store:
        key = store.stat(store.put("/seed", b"shared\n", 1)).key
        for low in range(0, count, 50_000):
            with store.metadata.write() as txn:
                txn.bulk_add_paths([(f"{folder}/{n:07d}-{'x' * 40}", 1) for n in range(low, min(low + 50_000, count))],
                                   key)


def traced_peak(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def ls_to_devnull(root: Path, folder: str) -> None:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        cli.main(["--root", str(root), "ls", folder], standalone_mode=False)


def test_ls_of_a_huge_folder_runs_in_bounded_memory(tmp_path: Path) -> None:
    fill(tmp_path / "small", "/big", 2_000)
    fill(tmp_path / "large", "/big", 40_000)
    ls_to_devnull(tmp_path / "small", "/big")  # imports and caches warmed up
    small = traced_peak(lambda: ls_to_devnull(tmp_path / "small", "/big"))
    large = traced_peak(lambda: ls_to_devnull(tmp_path / "large", "/big"))
    # 38,000 more names of ~60 characters: ~4 MiB more if they were all held at once
    assert large - small < 1 * MiB, (small, large)


def _peak_rss_kib(pid: int) -> int:
    """The highest VmHWM of ``pid`` and its children (the server's workers)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    peak = 0
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak


def test_list_of_a_huge_folder_is_streamed_by_the_server(tmp_path: Path) -> None:
    count = 300_000
    fill(tmp_path / "store", "/big", count)
    with Store.open(tmp_path / "store") as store:
        for n in range(10):
            store.put(f"/few/{n}", b"few\n", 1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "castore", "--root", str(tmp_path / "store"), "serve",
                               "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/version/", timeout=1, headers={"Host": "127.0.0.1"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with httpx.Client(base_url=url, timeout=300, headers={"Host": "127.0.0.1"}) as http:
            assert http.get("/list/few").text.count("\n") == 10  # the listing's code warmed up
            before = _peak_rss_kib(server.pid)
            names = 0
            with http.stream("GET", "/list/big") as response:
                assert response.status_code == 200
                assert "content-length" not in response.headers  # sent as it is read, not built first
                for line in response.iter_lines():
                    names += line != ""
            grown = _peak_rss_kib(server.pid) - before
        assert names == count
        # 300,000 names of ~50 bytes: 15 MiB as one body, ~40 MiB more as a list of str
        assert grown < 8 * 1024, f"the server grew by {grown} KiB"
    finally:
        server.terminate()
        server.wait(timeout=30)


def filetracker_folder(root: Path, count: int) -> None:
    """A Filetracker 2.x data folder of ``count`` links, each to a content of its own."""
    for n in range(count):
        data = b"content %d\n" % n
        digest = hashlib.sha256(data).hexdigest()
        blob = root / "blobs" / digest[:2] / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(gzip.compress(data, 1))
        link = root / "links" / "contest" / f"p{n // 500}" / f"{n:06d}-{'t' * 40}.in"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
        os.utime(link, (1000, 1000), follow_symlinks=False)


def test_import_runs_in_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "BLOBS_SEEN", 100)  # the blob files known to exist: bounded too
    monkeypatch.setattr(importer, "LINK_BATCH", 100)  # batches in flight are a bounded buffer: keep it small here
    filetracker_folder(tmp_path / "ft-small", 300)
    filetracker_folder(tmp_path / "ft-large", 3_000)

    runs = iter(range(10))

    def run(folder: str) -> None:
        with Store.open(tmp_path / f"store-{next(runs)}", create=True) as store:
            importer = Importer(store, FolderV2(tmp_path / folder), jobs=2)
            importer.SEEN_MAX = 100  # type: ignore[misc]  # remember few contents: the bound is what is tested
            report = importer.run()
            assert report.imported == report.files and not report.problems
            assert not importer.verify()

    run("ft-small")  # warmed up
    small = traced_peak(lambda: run("ft-small"))
    large = traced_peak(lambda: run("ft-large"))
    # 2,700 more items (path, link, digest, blob: ~600 bytes each): ~1.5 MiB if all kept
    assert large - small < 512 * 1024, (small, large)


def test_gc_shows_the_blobs_it_removes_on_a_progress_bar(tmp_path: Path) -> None:
    from click.testing import CliRunner

    with Store.open(tmp_path / "store", create=True) as store:
        for n in range(3):
            store.put(f"/gone/{n}", b"gone %d\n" % n, 1)
            store.delete(f"/gone/{n}")
    result = CliRunner().invoke(cli, ["--root", str(tmp_path / "store"), "gc"], env={"CASTORE_PROGRESS": "1"})
    assert result.exit_code == 0, result.output
    assert "removed 3 blobs" in result.stdout
    assert "gc: " in result.stderr and " blobs" in result.stderr  # the bar: "gc: N blobs [...]"
