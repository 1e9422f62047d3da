"""Moving in from a real Filetracker 2.3.3: import its data folder or its server, and migrate live.

The corpus is uploaded to Filetracker's own server (``.venv-filetracker``, installed by
``bash benchmarks/setup_filetracker.sh``): a few hundred files with several versions,
contents shared across paths, non-ASCII names (which 2.3.3 keeps double-encoded), an
empty file and a version in the future. Every test compares what castore ends up with
against what was uploaded.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from benchmarks.server import FT_VENV, filetracker_server, running
from castore.cli import cli
from castore.migration import FolderV2, Importer, Item, ServerSource
from castore.migration.live import migration_status
from castore.migration.sources import Opened
from castore.protocol import format_version
from castore.store import Store
from tests.server_process import castore_server

pytestmark = pytest.mark.skipif(
    not (FT_VENV / "bin/filetracker-server").exists(),
    reason="Filetracker's server is not installed (bash benchmarks/setup_filetracker.sh)",
)

ODD_NAMES = [
    "/names/zażółć/jaźń.in",  # 'ż' and 'ł' double-encode to text holding U+0085-like C1 characters
    "/names/są/Ångström.out",  # 'ą' and 'Å' double-encode to text holding U+0085 itself
    "/names/with space/a+b%c#d?e.in",
    "/names/日本/テスト.txt",
]
FUTURE = int(time.time()) + 10 * 365 * 86400


def _content(rng: random.Random, size: int) -> bytes:
    if rng.random() < 0.3:
        return rng.randbytes(size)
    return b"".join(b"%d " % rng.randrange(1000) for _ in range(size // 4))[:size]


def _corpus() -> tuple[dict[str, tuple[int, bytes]], list[tuple[str, int, bytes]]]:
    """``(expected: path -> (version, content), uploads in order)``."""
    rng = random.Random(12)
    uploads: list[tuple[str, int, bytes]] = []
    base = 1_600_000_000
    for i in range(180):
        uploads.append((f"/contests/c{i % 6}/tests/{i}.in", base + i, _content(rng, rng.randrange(1, 20_000))))
    originals = [u[2] for u in uploads[:40]]
    for k in range(40):  # the same contents under other paths
        uploads.append((f"/copies/{k % 4}/{k}.out", base + 1000 + k, originals[k % 40]))
    for k in range(20):  # several versions: the last (highest) one counts
        for v in range(3):
            uploads.append((f"/versions/{k}.txt", base + 2000 + 10 * v, b"version %d of %d\n" % (v, k)))
        uploads.append((f"/versions/{k}.txt", base + 1500, b"an older put: ignored\n"))
    for name in ODD_NAMES:
        uploads.append((name, base + 3000, name.encode() * 3))
    uploads.append(("/empty/e.in", base + 4000, b""))
    uploads.append(("/future/f.in", FUTURE, b"from the future\n"))
    for k in range(4):  # larger than castore's inline limit: stored as blob files, streamed
        uploads.append((f"/big/{k}.in", base + 5000 + k, _content(rng, 300_000 + k)))
    uploads.append(("/big/shared.in", base + 6000, uploads[-1][2]))
    expected: dict[str, tuple[int, bytes]] = {}
    for path, version, data in uploads:
        if path not in expected or expected[path][0] <= version:
            expected[path] = (version, data)
    return expected, uploads


EXPECTED, UPLOADS = _corpus()


def _upload(http: httpx.Client, path: str, version: int, data: bytes) -> None:
    """As Filetracker's own client uploads: gzipped, with SHA256-Checksum and Logical-Size."""
    headers = {"Content-Encoding": "gzip", "SHA256-Checksum": hashlib.sha256(data).hexdigest(),
               "Logical-Size": str(len(data))}
    response = http.put("/files" + quote(path), content=gzip.compress(data, 1), headers=headers,
                        params={"last_modified": format_version(version)})
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def filetracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A running Filetracker 2.3.3 server holding the corpus, and its data folder."""
    work = tmp_path_factory.mktemp("filetracker")
    with running(*filetracker_server(work / "data", work / "server.log")) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        for path, version, data in UPLOADS:
            _upload(http, path, version, data)
        yield url, work / "data"


@pytest.fixture
def castore_root(tmp_path: Path) -> Path:
    root = tmp_path / "castore"
    Store.open(root, create=True).close()
    return root


def _import(root: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(cli, ["--root", str(root), "import-filetracker", *args, "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    summary = json.loads(result.stdout.splitlines()[0])
    return result.exit_code, summary


def _assert_holds_corpus(root: Path, expected: dict[str, tuple[int, bytes]] = EXPECTED) -> None:
    with Store.open(root) as store:
        stored = {info.path: info.version for info in store.list("/")}
        assert stored == {path: version for path, (version, _) in expected.items()}
        for path, (version, data) in expected.items():
            assert store.read_bytes(f"{path}@{version}") == data, path


def test_filetracker_keeps_non_ascii_names_double_encoded(filetracker: tuple[str, Path]) -> None:
    """The trap the importer must undo: 2.3.3's links/ and /list/ hold mangled names."""
    url, data = filetracker
    mangled = "/".join(part.encode().decode("latin-1") for part in ["names", "są", "Ångström.out"])
    assert os.path.islink(os.fsencode(data / "links") + b"/" + mangled.encode())
    assert "\x85" in mangled
    assert mangled in httpx.get(url + "/list/", params={"last_modified": format_version(FUTURE + 1)}).text
    assert "future/f.in" not in httpx.get(url + "/list/").text  # without a cutoff: only versions up to now


def test_import_folder(filetracker: tuple[str, Path], castore_root: Path) -> None:
    _, data = filetracker
    code, summary = _import(castore_root, str(data), "--verify")
    assert code == 0, summary
    assert summary["imported"] == len(EXPECTED) and summary["problems"] == []
    assert summary["verified"] == len(EXPECTED)
    # the copies (and /big/shared.in) name blobs met before: linked without decompressing
    assert summary["linked"] >= 30
    _assert_holds_corpus(castore_root)
    with Store.open(castore_root) as store:
        distinct = {data for _, data in EXPECTED.values()}
        assert store.usage().blobs == len(distinct)
    # a second run finds everything there
    code, again = _import(castore_root, str(data))
    assert code == 0 and again["imported"] == 0 and again["already"] == len(EXPECTED)


def test_import_server(filetracker: tuple[str, Path], castore_root: Path) -> None:
    url, _ = filetracker
    code, summary = _import(castore_root, "--url", url, "--jobs", "4", "--verify")
    assert code == 0, summary
    assert summary["imported"] == len(EXPECTED) and summary["verified"] == len(EXPECTED)
    _assert_holds_corpus(castore_root)
    # a re-run (as after a kill) finds everything there, and verifies it too
    code, again = _import(castore_root, "--url", url, "--verify")
    assert code == 0, again
    assert again["already"] == len(EXPECTED) and again["verified"] == len(EXPECTED) and again["problems"] == []


class _CountingServer(ServerSource):
    """The real server source, counting the contents it downloads."""

    opened = 0

    def open(self, item: Item) -> Opened:
        type(self).opened += 1
        return super().open(item)


def test_import_server_rerun_downloads_only_what_is_left(filetracker: tuple[str, Path], castore_root: Path) -> None:
    url, _ = filetracker
    left = "/contests/c3/tests/3.in"
    with Store.open(castore_root) as store:
        first = Importer(store, _CountingServer(url)).run()
        assert first.imported == len(EXPECTED) and _CountingServer.opened == len(EXPECTED)
        store.delete(left)  # as if the first run had been killed before it
        _CountingServer.opened = 0
        again = Importer(store, _CountingServer(url)).run()
        assert (again.already, again.imported, again.problems) == (len(EXPECTED) - 1, 1, [])
        assert _CountingServer.opened == 1  # the others: a HEAD says castore has that version
    _assert_holds_corpus(castore_root)


def test_import_never_overwrites_a_newer_version(filetracker: tuple[str, Path], castore_root: Path) -> None:
    _, data = filetracker
    path, (version, _) = next(iter(EXPECTED.items()))
    with Store.open(castore_root) as store:
        store.put(path, b"newer in castore", version + 1)
        store.put("/versions/0.txt", b"older in castore", 1)
    code, summary = _import(castore_root, str(data))
    assert code == 0 and summary["newer_in_castore"] == 1
    with Store.open(castore_root) as store:
        assert store.read_bytes(path) == b"newer in castore"
        assert store.read_bytes("/versions/0.txt") == EXPECTED["/versions/0.txt"][1]
        assert [i.version for i in store.versions("/versions/0.txt")] == [EXPECTED["/versions/0.txt"][0], 1]


def _imported_paths(root: Path) -> int:
    with sqlite3.connect(root / "metadata.sqlite3", timeout=30) as db:
        return int(db.execute("SELECT count(*) FROM paths").fetchone()[0])


def test_import_resumes_after_kill_9(filetracker: tuple[str, Path], tmp_path: Path) -> None:
    _, data = filetracker
    for attempt in range(5):
        root = tmp_path / f"castore-{attempt}"
        Store.open(root, create=True).close()
        process = subprocess.Popen(
            [sys.executable, "-m", "castore", "--root", str(root), "import-filetracker", str(data), "--jobs", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        while process.poll() is None and _imported_paths(root) < 5:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.returncode == -signal.SIGKILL and _imported_paths(root) < len(EXPECTED):
            break
    else:
        pytest.fail("the import always finished before it could be killed")
    before = _imported_paths(root)
    code, summary = _import(root, str(data))
    assert code == 0, summary
    assert summary["already"] >= before - 1 and summary["imported"] + summary["already"] == len(EXPECTED)
    _assert_holds_corpus(root)


def test_broken_link_and_corrupt_blob_are_reported(filetracker: tuple[str, Path], tmp_path: Path,
                                                   castore_root: Path) -> None:
    _, data = filetracker
    damaged = tmp_path / "damaged"
    shutil.copytree(data / "links", damaged / "links", symlinks=True)
    shutil.copytree(data / "blobs", damaged / "blobs")
    source = FolderV2(damaged)
    items = {item.path: item for item in source.items() if isinstance(item, Item)}
    corrupt, broken = items["/contests/c1/tests/121.in"], items["/big/0.in"]  # contents of their own
    assert corrupt.content and broken.content
    blob = bytearray(Path(corrupt.content).read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 8] = b"\xff" * 8
    Path(corrupt.content).write_bytes(bytes(blob))
    os.unlink(broken.content)
    code, summary = _import(castore_root, str(damaged))
    assert code == 7
    problems = {p["where"]: p["reason"] for p in summary["problems"]}  # type: ignore[union-attr]
    assert set(problems) == {corrupt.where, broken.where}
    assert "corrupt" in problems[corrupt.where] and corrupt.content in problems[corrupt.where]
    assert "broken link" in problems[broken.where]
    healthy = {p: v for p, v in EXPECTED.items() if p not in ("/contests/c1/tests/121.in", "/big/0.in")}
    _assert_holds_corpus(castore_root, healthy)


def test_import_v1_folder(tmp_path: Path, castore_root: Path) -> None:
    folder = tmp_path / "ft1"
    files = {"/a/b.in": (1_500_000_000, b"b"), "/a/zażółć.out": (1_500_000_001, b"z" * 200_000),
             "/empty": (1_500_000_002, b"")}
    for path, (version, content) in files.items():
        target = folder / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        os.utime(target, (version, version))
    code, summary = _import(castore_root, str(folder), "--v1", "--verify")
    assert code == 0 and summary["imported"] == 3 and summary["verified"] == 3
    _assert_holds_corpus(castore_root, files)


def test_import_refuses_a_folder_that_is_not_filetracker(tmp_path: Path, castore_root: Path) -> None:
    result = CliRunner().invoke(cli, ["--root", str(castore_root), "import-filetracker", str(tmp_path)])
    assert result.exit_code == 2 and "no links/ folder" in result.output


# -- live migration ------------------------------------------------------------------------


def _metric(base: str, name: str) -> float:
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


@pytest.fixture
def migrating(filetracker: tuple[str, Path], castore_root: Path) -> Iterator[tuple[str, str, Path]]:
    old, _ = filetracker
    # one worker: the tests read /metrics, whose counters are per worker
    with castore_server(castore_root, "--migrate-from", old, "--workers", "1") as new:
        yield old, new, castore_root


def test_live_migration_reads(migrating: tuple[str, str, Path]) -> None:
    old, new, root = migrating
    for path in ["/contests/c0/tests/0.in", ODD_NAMES[0], ODD_NAMES[1], "/empty/e.in", "/big/1.in"]:
        version, data = EXPECTED[path]
        response = httpx.get(new + "/files" + quote(path))
        assert response.status_code == 200 and response.content == data
        assert response.headers["last-modified"] == format_version(version)
    head = httpx.head(new + "/files" + quote("/versions/3.txt"))
    assert head.status_code == 200 and int(head.headers["logical-size"]) == len(EXPECTED["/versions/3.txt"][1])
    assert httpx.get(new + "/files/not/anywhere").status_code == 404
    with Store.open(root) as store:  # stored with the old server's versions
        assert store.stat("/versions/3.txt").version == EXPECTED["/versions/3.txt"][0]
        assert store.read_bytes(ODD_NAMES[0]) == EXPECTED[ODD_NAMES[0]][1]
    assert _metric(new, "castore_migration_fetched_total") == 6
    assert _metric(new, "castore_migration_missing_total") == 1
    # a PUT goes to castore only
    assert httpx.put(new + "/files/only/new.in", content=b"new",
                     params={"last_modified": format_version(1_700_000_000)}).status_code == 200
    assert httpx.get(old + "/files/only/new.in").status_code == 404


def _read_at_once(url: str, path: str, clients: int) -> list[bytes]:
    """The bodies ``clients`` threads get for ``path``, all sent at once, each on a new connection
    (so that either worker of a multi-worker server may answer)."""
    barrier = threading.Barrier(clients)
    bodies: list[bytes] = []

    def read() -> None:
        with httpx.Client(timeout=30) as http:
            barrier.wait()
            bodies.append(http.get(url + "/files" + path).content)

    threads = [threading.Thread(target=read) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return bodies


def test_live_migration_fetches_once_for_8_clients(migrating: tuple[str, str, Path]) -> None:
    _, new, _ = migrating
    path = "/big/2.in"
    assert _read_at_once(new, path, 8) == [EXPECTED[path][1]] * 8
    assert _metric(new, "castore_migration_fetched_total") == 1


def test_live_migration_fetches_once_across_workers(filetracker: tuple[str, Path], castore_root: Path) -> None:
    """With 2 workers too: counted in the old server's access log, not in per-worker metrics."""
    old, data = filetracker
    paths = [f"/big/{k}.in" for k in range(4)] + ["/big/shared.in"]
    log = data.parent / "server.log"
    with castore_server(castore_root, "--migrate-from", old, "--workers", "2") as new:
        for path in paths:
            before = log.read_text().count(f"GET /files{path} ")
            assert _read_at_once(new, path, 8) == [EXPECTED[path][1]] * 8
            assert log.read_text().count(f"GET /files{path} ") - before == 1, path


def test_live_migration_delete_is_not_resurrected_and_lists_merge(migrating: tuple[str, str, Path]) -> None:
    old, new, root = migrating
    fetched, untouched = "/contests/c2/tests/2.in", "/contests/c2/tests/8.in"
    version = format_version(FUTURE)
    assert httpx.get(new + "/files" + fetched).status_code == 200
    assert httpx.delete(new + "/files" + fetched, params={"last_modified": version}).status_code == 200
    assert httpx.delete(new + "/files" + untouched, params={"last_modified": version}).status_code == 200
    assert httpx.delete(new + "/files/not/anywhere", params={"last_modified": version}).status_code == 404
    for path in (fetched, untouched):
        assert httpx.get(new + "/files" + path).status_code == 404
        assert httpx.head(new + "/files" + path).status_code == 404
        assert httpx.get(old + "/files" + path).status_code == 200  # the old server is left as it was
    assert httpx.put(new + "/files/contests/c2/tests/new.in", content=b"new",
                     params={"last_modified": format_version(1_700_000_000)}).status_code == 200
    listed = httpx.get(new + "/list/contests/c2").text.split("\n")
    on_old = {p.removeprefix("/contests/c2/") for p in EXPECTED if p.startswith("/contests/c2/")}
    assert set(filter(None, listed)) == (on_old - {"tests/2.in", "tests/8.in"}) | {"tests/new.in"}
    names = set(filter(None, httpx.get(new + "/list/names", params={"last_modified": version}).text.split("\n")))
    assert names == {p.removeprefix("/names/") for p in ODD_NAMES}
    assert httpx.get(new + "/list/nothing/here").status_code == 400
    # an import beside the server does not bring them back either, and finishes the move
    with Store.open(root) as store:
        status = migration_status(store, old)  # the far-future one is a problem: serve --migrate-from refuses it
        assert status.deleted == 2 and len(status.left) == len(EXPECTED) - 3
        assert status.problems == ["1 path has a version beyond the horizon (now + 1 day): /future/f.in"]
        source = ServerSource(old)
        try:
            report = Importer(store, source, jobs=4).run()
        finally:
            source.close()
        assert report.deleted_in_castore == 2 and report.problems == []
        assert not store.exists(fetched) and not store.exists(untouched)
        assert migration_status(store, old).left == []
    result = CliRunner().invoke(cli, ["--root", str(root), "--json", "migrate", "status", old])
    assert json.loads(result.output)["left"] == 0
