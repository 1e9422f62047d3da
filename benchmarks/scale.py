"""Every cost as the store grows: ``python -m benchmarks.scale [--scale small|default|large]``.

Builds stores of growing size (small: 2 k and 10 k paths; default: 100 k and 1 M;
large: 100 k, 1 M and 10 M) on SQLite and on PostgreSQL (a throw-away cluster on
127.0.0.1, started and stopped here as the tests do), then times, on each store, the point
operations (put 64 KiB, read, stat, list a 100-file folder; read and list twice: first
touch, then with their pages cached), the whole-store views
(``usage()``, ``dedup_report("/", depth=1)``), the report of one contest (10 k paths), and
the commands that walk everything, each run as its own ``castore`` process whose peak RSS is
measured: ``check`` with and without content, ``ls`` of a 100 k-file folder, ``gc`` with
nothing and with 1 % of the contents to free, ``import-filetracker`` of a generated
Filetracker 2.x folder (contents already stored, and new), plus ``/list/`` of the big folder
through a real ``castore serve`` (the server's peak RSS) and the database size per path.
Each figure is printed beside its ratio to the first (smallest) store's.

The store is contest-like: its contents are put through ``store.put`` (``/seeds/I``), then
the paths naming them are added as metadata only, no bytes per path: contest ``c`` holds
10 k paths, 80 problems of 100 tests plus 2,000 submissions; a content is named by about
100 paths (tests reused by the contests of one family of three, the same file in several
package versions, identical submissions); one content in ten is a 200 KiB file blob, the
others are kept inline. ``/big/`` holds the 100 k-file folder (fewer at ``--scale small``).
On SQLite the paths go through ``WriteTxn.bulk_add_paths`` (multi-row INSERTs: 10 M paths
in ~40 minutes); on PostgreSQL, where those INSERTs would take hours at 10 M, the same rows
are written with COPY, with the totals' triggers, the foreign keys and the secondary
indexes set aside and made again, refcounts and totals recounted, then ``VACUUM (ANALYZE)``
(``benchmarks/pgcopy.py``; a test compares such a store with one the INSERTs make). The
build's seconds, and on PostgreSQL each step's, are in ``results.json`` (``build_*``).
Results go to ``benchmarks/results/DATE-scale-SCALE/`` (``results.json``, ``report.md``).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.dedup_report import load, machine
from castore.keys import BlobKey
from castore.opening import Location, locate, migrate, open_store
from castore.store import Store

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCALES = {"small": [2_000, 10_000], "default": [100_000, 1_000_000], "large": [100_000, 1_000_000, 10_000_000]}
CONTEST = 10_000
"""Paths per contest: 80 problems x 100 tests, then 2,000 submissions."""
PER_CONTENT = 100
"""Paths naming one content, on average."""
BIG_FOLDER = 100_000
VERSION = 1_700_000_000
MiB = 1 << 20


# -- the store ------------------------------------------------------------------------------------------


def path_of(n: int) -> str:
    """The ``n``-th path of the store: contest ``n // CONTEST``, then a test or a submission."""
    contest, r = divmod(n, CONTEST)
    if r < 8_000:
        return f"/contests/c{contest:04d}/p{r // 100:02d}/tests/{r % 100:03d}.in"
    return f"/contests/c{contest:04d}/submissions/{r - 8_000:04d}.cpp"


def content_of(n: int, contents: int) -> int:
    """Which of ``contents`` contents path ``n`` names: the contests of a family of three share
    their tests, and within a contest a content repeats (package versions, copied submissions)."""
    contest, r = divmod(n, CONTEST)
    return ((contest // 3) * 7_919 + r * 31) % contents


def content_bytes(i: int, salt: bytes = b"") -> bytes:
    """Content ``i``: a test-like text of 1-4 KiB, or every tenth one a 200 KiB file blob."""
    line = b"%s%d %d %d\n" % (salt, i, i * 7, i * 13)
    size = 200 << 10 if i % 10 == 0 else 1024 + (i * 37) % 3072
    return (line * (size // len(line) + 1))[:size]


def seed(store: Store, count: int) -> list[BlobKey]:
    """Put the contents a store of ``count`` paths shares (``/seeds/I``, through ``store.put``); their keys."""
    keys: list[BlobKey] = []
    for i in range(max(count // PER_CONTENT, 100)):
        name = store.put(f"/seeds/{i}", content_bytes(i), VERSION)
        keys.append(store.stat(name).key)
    return keys


def batches(count: int, big: int, contents: int) -> Iterator[list[tuple[int, list[tuple[str, int]]]]]:
    """The store's paths in the write transactions :func:`build` gives them: each a list of
    ``(content, [(path, version), ...])``, the paths naming one content together, in that order."""
    chunk = max(100_000, contents * 10)
    for low in range(0, count, chunk):
        groups: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for n in range(low, min(low + chunk, count)):
            groups[content_of(n, contents)].append((path_of(n), VERSION))
        yield list(groups.items())
    for low in range(0, big, chunk):
        yield [(1, [(f"/big/f{n:07d}", VERSION) for n in range(low, min(low + chunk, big))])]


def build(store: Store, count: int, big: int) -> dict[str, float]:
    """Fill ``store`` with ``count`` contest paths and a ``big``-file folder; the seconds each part took."""
    started = time.perf_counter()
    keys = seed(store, count)
    puts = time.perf_counter() - started
    for batch in batches(count, big, len(keys)):
        with store.metadata.write() as txn:
            for i, rows in batch:
                txn.bulk_add_paths(rows, keys[i])
    return {"build_puts_s": puts, "build (bulk), s": time.perf_counter() - started, "contents": len(keys)}


def build_by_copy(store: Store, url: str, count: int, big: int) -> dict[str, float]:
    """:func:`build` on PostgreSQL, the same rows written with COPY (:func:`benchmarks.pgcopy.copy_paths`).

    The contents still go through ``store.put``; the figures also hold each step's seconds.
    """
    from benchmarks.pgcopy import copy_paths

    started = time.perf_counter()
    keys = seed(store, count)
    puts = time.perf_counter() - started
    steps = copy_paths(url, lambda: ((keys[i], rows) for batch in batches(count, big, len(keys)) for i, rows in batch))
    return {"build_puts_s": puts, **steps, "build (bulk), s": time.perf_counter() - started, "contents": len(keys)}


# -- measuring ------------------------------------------------------------------------------------------


def median_ms(action: Callable[[int], object], runs: int) -> float:
    times = []
    for i in range(runs):
        began = time.perf_counter()
        action(i)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def command(where: Location, *args: str) -> tuple[float, float, str]:
    """Run ``castore ARGS`` on the store: (seconds, peak RSS in MiB, stdout).

    The peak comes from GNU time (``/usr/bin/time -f %M``): a child forked straight from
    this process would count this process' own memory at the fork in its peak.
    """
    with tempfile.NamedTemporaryFile() as peak:
        argv = ["/usr/bin/time", "-f", "%M", "-o", peak.name, str(ROOT / ".venv/bin/castore"),
                "--metadata", where.metadata, "--blobs", where.blobs, *args]
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - began
        if done.returncode not in (0, 1):
            raise RuntimeError(f"castore {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
        kib = int(Path(peak.name).read_text().split()[-1])
    return seconds, kib / 1024, done.stdout


def _child_peak_mib(process: subprocess.Popen[bytes]) -> float:
    """The highest VmHWM among ``process`` and its children (a server's workers)."""
    peak = 0
    pids = [process.pid]
    for pid in list(pids):
        try:
            pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            continue
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


def http_list(where: Location, folder: str) -> tuple[float, float, int]:
    """``GET /list/FOLDER`` from a real ``castore serve``: (seconds, server peak RSS MiB, names)."""
    from benchmarks.server import free_port, stop_group, wait_ready

    port = free_port()
    argv = [str(ROOT / ".venv/bin/castore"), "--metadata", where.metadata, "--blobs", where.blobs, "serve",
            "--port", str(port), "--workers", "1"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        began = time.perf_counter()
        names = 0
        with httpx.stream("GET", f"{url}/list{folder}", timeout=600, headers={"Host": "127.0.0.1"}) as response:
            response.raise_for_status()
            for _ in response.iter_lines():
                names += 1
        seconds = time.perf_counter() - began
        return seconds, _child_peak_mib(process), names
    finally:
        stop_group(process)


def filetracker_folder(root: Path, prefix: str, count: int, *, salt: bytes) -> None:
    """A Filetracker 2.x data folder: ``count`` links below ``links/PREFIX`` to gzipped blobs.

    Paths and sharing follow the store's (``content_of``); with ``salt`` the contents are
    new to the store, without it they are the store's own (re-uploaded packages).
    """
    contents = max(count // PER_CONTENT, 100)
    digests = []
    for i in range(contents):
        data = content_bytes(i, salt)
        digest = hashlib.sha256(data).hexdigest()
        blob = root / "blobs" / digest[:2] / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(gzip.compress(data, 1))
        digests.append(digest)
    for n in range(count):
        link = root / "links" / prefix.strip("/") / path_of(n).lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        digest = digests[content_of(n, contents)]
        os.symlink(os.path.relpath(root / "blobs" / digest[:2] / digest, link.parent), link)
        os.utime(link, (VERSION + 5, VERSION + 5), follow_symlinks=False)


def database_bytes(where: Location) -> int:
    if where.metadata.startswith("sqlite"):
        base = where.metadata.removeprefix("sqlite:///")
        return sum(os.path.getsize(base + tail) for tail in ("", "-wal") if os.path.exists(base + tail))
    from sqlalchemy import create_engine, text

    engine = create_engine(where.metadata)
    try:
        with engine.connect() as c:
            return int(c.execute(text("select pg_database_size(current_database())")).scalar_one())
    finally:
        engine.dispose()


def built_copy(kept: Path, where: Location, count: int, big: int, say: Callable[[str], None]) -> dict[str, float]:
    """Copy the SQLite store ``kept`` holds into ``where`` (building it there first if it is not
    there yet); the figures of its build, which a copy reuses.

    A copy is measured, never the kept store, since the measuring changes it (puts, gc,
    imports). The copy is made with SQLite's backup API and ``shutil.copytree``, both
    of which read the whole store, so the copy's pages are as warm as a fresh build's.
    """
    figures_file = kept.with_suffix(".json")
    kept_at = locate(kept)
    if not figures_file.exists():
        with open_store(metadata=kept_at.metadata, blobs=kept_at.blobs, create=True) as store:
            figures_file.write_text(json.dumps(build(store, count, big)))
        say(f"built and kept in {kept}")
    target = Path(where.metadata.removeprefix("sqlite:///"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(kept_at.metadata.removeprefix("sqlite:///")) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    shutil.copytree(kept_at.blobs.removeprefix("file://"), where.blobs.removeprefix("file://"), dirs_exist_ok=True)
    before, now = migrate(where)  # a store kept by an older castore: its copy is upgraded, as a site's would be
    if before != now:
        say(f"the copy upgraded from schema {before} to {now}")
    figures: dict[str, float] = json.loads(figures_file.read_text())
    return figures


def measure(where: Location, count: int, big: int, imports: int, work: Path, say: Callable[[str], None],
            kept: Path | None = None) -> dict[str, float]:
    """Every figure of one store of ``count`` paths (built here, or copied from ``kept``: :func:`built_copy`)."""
    figures: dict[str, float] = {}
    rng = random.Random(count)
    if kept is not None:
        figures.update(built_copy(kept, where, count, big, say))
    with open_store(metadata=where.metadata, blobs=where.blobs, create=True) as store:
        if kept is None and where.metadata.startswith("postgresql"):
            figures.update(build_by_copy(store, where.metadata, count, big))
        elif kept is None:
            figures.update(build(store, count, big))
        figures["files in /big/"], figures["paths imported"] = big, imports
        say(f"built in {figures['build (bulk), s']:.0f} s")
        contents = int(figures["contents"])
        samples = [path_of(rng.randrange(count)) for _ in range(200)]
        payloads = [os.urandom(64 << 10) for _ in range(50)]
        figures["put 64 KiB, ms"] = median_ms(lambda i: store.put(f"/bench/put/{i}", payloads[i], VERSION), 50)
        figures["read, ms"] = median_ms(lambda i: store.read_bytes(samples[i]), 200)
        # the same paths again: their pages are in the caches now, so the figure above less this
        # one is what reading pages from the disk cost (a random path of a large store is cold)
        figures["read again, ms"] = median_ms(lambda i: store.read_bytes(samples[i]), 200)
        figures["stat, ms"] = median_ms(lambda i: store.stat(samples[i]), 200)
        full = [n for n in range(0, count - 99, 100) if n % CONTEST < 8_000]  # whole 100-test folders
        folders = [path_of(rng.choice(full)).rsplit("/", 1)[0] for _ in range(20)]
        figures["list a 100-file folder, ms"] = median_ms(lambda i: store.list_folder(folders[i]), 20)
        figures["list again, ms"] = median_ms(lambda i: store.list_folder(folders[i]), 20)
        figures["usage(), ms"] = median_ms(lambda i: store.usage(), 3)
        figures["dedup_report('/', depth=1), s"] = median_ms(lambda i: store.dedup_report("/", depth=1), 1) / 1000
        figures["du of one contest (10 k paths), ms"] = median_ms(
            lambda i: store.dedup_report(f"/contests/c{min(1, count // CONTEST - 1) if count >= CONTEST else 0:04d}",
                                         depth=1), 3)
        say("point operations done")
        for i in range(max(contents // 100, 1)):  # 1 % of the contents, to be freed by gc
            store.put(f"/scratch/{i}", content_bytes(i, b"gc"), VERSION)
            store.delete(f"/scratch/{i}")
    paths = count + big + 50
    seconds, rss, out = command(where, "--json", "check")
    figures["check (no content), s"] = seconds
    figures["check (no content), paths/s"] = paths / max(json.loads(out)["seconds"], 1e-6)  # its own time: no start-up
    figures["check (no content), peak RSS MiB"] = rss
    seconds, rss, _ = command(where, "--json", "check", "--verify-content")
    figures["check with content (all contents: 1 % of the paths), s"] = seconds
    figures["check with content, peak RSS MiB"] = rss
    say("check done")
    seconds, rss, out = command(where, "ls", "/big")
    assert out.count("\n") == big, (out.count("\n"), big)
    figures["ls of the big folder, s"], figures["ls, peak RSS MiB"] = seconds, rss
    seconds, rss, names = http_list(where, "/big")
    assert names == big, (names, big)
    figures["/list/ of the big folder over HTTP, s"] = seconds
    figures["/list/, server peak RSS MiB"] = rss
    say("listing done")
    seconds, rss, out = command(where, "--json", "gc")
    figures["gc with 1 % to free, s"], figures["gc with 1 % to free, peak RSS MiB"] = seconds, rss
    seconds, rss, out = command(where, "--json", "gc")
    figures["gc with nothing to free, s"], figures["gc with nothing to free, peak RSS MiB"] = seconds, rss
    say("gc done")
    for label, salt in (("contents stored", b""), ("new contents", b"new")):
        folder = work / f"ft-{label.split()[0]}"
        filetracker_folder(folder, f"/imported-{label.split()[0]}", imports, salt=salt)
        seconds, rss, out = command(where, "--json", "import-filetracker", str(folder))
        report = json.loads(out)
        assert report["imported"] == imports and not report["problems"], report
        figures[f"import, {label}, paths/s"] = imports / report["seconds"]
        figures[f"import, {label}, peak RSS MiB"] = rss
        shutil.rmtree(folder)
    say("import done")
    figures["database bytes per path"] = database_bytes(where) / (paths + 2 * imports)
    return figures


# -- backends, table, main ------------------------------------------------------------------------------


@contextmanager
def backends(names: list[str], work: Path) -> Iterator[dict[str, Callable[[str], Location]]]:
    """``name -> function(store name) -> Location`` for each backend asked for; a cluster is stopped after."""
    made: dict[str, Callable[[str], Location]] = {}
    cluster = None
    try:
        if "sqlite" in names:
            made["sqlite"] = lambda name: locate(work / name)
        if "postgresql" in names:
            from tests.backends import PostgresCluster

            cluster = PostgresCluster()
            pg = cluster
            made["postgresql"] = lambda name: Location(pg.new_database(), (work / name / "blobs").as_uri())
        yield made
    finally:
        if cluster is not None:
            cluster.stop()


def table(backend: str, sizes: list[int], rows: dict[int, dict[str, float]]) -> str:
    """One Markdown table: a row per figure, a column per store size with its ratio to the first."""
    first = sizes[0]
    head = "| " + backend + " | " + " | ".join(f"{n // 1000:,} k paths" for n in sizes) + " |"
    lines = [head, "|---" + "|---:" * len(sizes) + "|"]
    names = [name for name in rows[first] if not name.startswith("build_") and name != "contents"]
    constant = {"files in /big/", "paths imported", "database bytes per path"}
    for name in names:
        cells = []
        for n in sizes:
            value = rows[n].get(name)
            if value is None:
                cells.append("")
                continue
            text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
            base = rows[first].get(name)
            if n != first and base and name not in constant:
                text += f" ({value / base:.2f}x)"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=list(SCALES), default="default",
                        help="small: 2 k and 10 k paths (a minute per backend, for the test); default: 100 k and 1 M; "
                        "large: also 10 M")
    parser.add_argument("--import-paths", type=int, default=None,
                        help="paths in each generated Filetracker folder (default: 1 %% of the store's, at least 1,000)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default benchmarks/results/DATE-scale-SCALE)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="SQLite only: build each store once into this folder and keep it; every run (this one "
                        "too) measures a copy, and a later run skips the build (its figures are the first build's)")
    args = parser.parse_args()
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    if args.keep is not None and names != ["sqlite"]:
        parser.error("--keep keeps SQLite stores only: give --backends sqlite")
    sizes = SCALES[args.scale]
    out = args.out or RESULTS / f"{datetime.date.today().isoformat()}-scale-{args.scale}"
    work = Path(tempfile.mkdtemp(prefix="castore-scale-", dir=args.work))
    started = time.perf_counter()
    data: dict[str, Any] = {"scale": args.scale, "sizes": sizes, "load_start": load(), "machine": machine(work),
                            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                            "command": " ".join(["python -m benchmarks.scale", *sys.argv[1:]]), "backends": {}}
    try:
        with backends(names, work) as made:
            for backend, location in made.items():
                rows: dict[int, dict[str, float]] = {}
                for n in sizes:
                    def say(text: str, backend: str = backend, n: int = n) -> None:
                        print(f"[{time.perf_counter() - started:7.0f} s] {backend} {n:,}: {text} "
                              f"(load {load()})", flush=True)

                    where = location(f"{backend}-{n}")
                    big = min(BIG_FOLDER, n)
                    imports = args.import_paths or max(n // 100, 1_000)
                    kept = None if args.keep is None else args.keep.resolve() / f"{backend}-{n}"
                    rows[n] = measure(where, n, big, imports, work / f"scratch-{backend}-{n}", say, kept)
                    shutil.rmtree(work / f"{backend}-{n}", ignore_errors=True)  # the store (PostgreSQL: its blobs)
                data["backends"][backend] = {str(n): row for n, row in rows.items()}
                print(table(backend, sizes, rows), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data["seconds"] = time.perf_counter() - started
    data["load_end"] = load()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=1))
    summary = (f"`{data['command']}`; load {data['load_start']} at the start, {data['load_end']} at the end; "
               f"{data['seconds'] / 60:.0f} minutes; {data['machine']}")
    report = [f"# Scale benchmark, {data['date']}", "", summary, ""]
    for backend, rows_json in data["backends"].items():
        rows = {int(n): row for n, row in rows_json.items()}
        report += [table(backend, sizes, rows), ""]
    (out / "report.md").write_text("\n".join(report))
    print(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
