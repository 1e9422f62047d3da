"""Core store benchmark: castore vs ``cp`` + ``sync`` on the same files, in one run.

Usage::

    .venv/bin/python benchmarks/core.py                 # full run (about a minute or two)
    .venv/bin/python benchmarks/core.py --paths 100000  # smaller metadata-scale part
    .venv/bin/python benchmarks/core.py --json out.json

Prints one table with each figure, the target from issue #3 and whether it is met.
Ratios are measured in the same run because this 2-core machine is noisy; absolute
MB/s vary run to run. Nothing here is a test: tests check behaviour, this measures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from castore.store import Store

MiB = 1 << 20
ROUNDS = 3
MB = 1e6


def contest_text(size: int, seed: int) -> bytes:
    """Lines of random integers, like a contest test input (first line: a count)."""
    rng = random.Random(seed)
    lines = [b"%d" % (size // 40)]
    total = 0
    while total < size:
        k = rng.randint(1, 20)
        if rng.random() < 0.5:
            line = b" ".join(b"%d" % rng.randint(0, 1000) for _ in range(k))
        else:
            line = b" ".join(b"%d" % rng.randint(1, 10**9) for _ in range(k))
        lines.append(line)
        total += len(line) + 1
    return (b"\n".join(lines) + b"\n")[:size]


def du_bytes(path: Path) -> int:
    """Disk bytes actually allocated below ``path`` (like ``du -sb`` on allocated blocks)."""
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_blocks * 512
    return total


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cp_and_sync(files: list[Path], dest: Path) -> float:
    """``cp`` the files into ``dest`` then ``sync`` the copies: castore's durability."""
    dest.mkdir()

    def run() -> None:
        subprocess.run(["cp", *map(str, files), str(dest)], check=True)
        subprocess.run(["sync", *[str(dest / f.name) for f in files]], check=True)

    return timed(run)


def drain(store: Store, names: list[str]) -> None:
    for name in names:
        with store.open_file(name) as reader:
            while reader.read(4 * MiB):
                pass


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def add(self, what: str, value: float, unit: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append({"what": what, "value": value, "unit": unit, "target": target, "ok": ok})
        mark = "" if ok is None else ("  ok" if ok else "  MISSED")
        print(f"{what:<58} {value:>12,.2f} {unit:<10} {target}{mark}", flush=True)


def bench_large(work: Path, report: Report, count: int) -> None:
    src = work / "src"
    src.mkdir()
    kinds = {
        "random": [os.urandom(16 * MiB) for _ in range(count)],
        "contest text": [contest_text(16 * MiB, seed) for seed in range(count)],
    }
    for kind, contents in kinds.items():
        files = []
        for i, data in enumerate(contents):
            f = src / f"{kind.replace(' ', '_')}{i}"
            f.write_bytes(data)
            files.append(f)
        total = sum(len(d) for d in contents)
        # Alternate cp and castore rounds and keep the median of each, so that a burst
        # of background I/O on this shared machine does not favour either side.
        cp_runs, put_runs, get_runs = [], [], []
        for round_ in range(ROUNDS):
            tag = f"{kind.replace(' ', '_')}-{round_}"
            cp_runs.append(cp_and_sync(files, work / f"cp-{tag}"))
            with Store.open(work / f"store-{tag}", create=True) as store:
                start = time.perf_counter()
                names = [store.put(f"/large/{f.name}", f, version=1) for f in files]
                put_runs.append(time.perf_counter() - start)
                start = time.perf_counter()
                drain(store, names)
                get_runs.append(time.perf_counter() - start)
                stored = store.usage().stored_bytes
            shutil.rmtree(work / f"cp-{tag}")
            shutil.rmtree(work / f"store-{tag}")
        cp_seconds, put_seconds, get_seconds = map(statistics.median, (cp_runs, put_runs, get_runs))
        cp_mbs = total / cp_seconds / MB
        put_mbs = total / put_seconds / MB
        report.add(f"cp + sync of {count} x 16 MiB {kind} (median of {ROUNDS})", cp_mbs, "MB/s")
        if kind == "random":
            report.add(f"put 16 MiB {kind}", put_mbs, "MB/s", ">= 0.5x cp+sync", put_mbs >= 0.5 * cp_mbs)
        else:
            report.add(f"put 16 MiB {kind}", put_mbs, "MB/s", ">= 250 MB/s", put_mbs >= 250)
        report.add(f"  put / (cp + sync), {kind}", put_mbs / cp_mbs, "x")
        report.add(f"get 16 MiB {kind} (decode + verify, to memory)", total / get_seconds / MB, "MB/s")
        if kind == "contest text":
            ratio = total / stored
            report.add("contest text: logical / stored bytes", ratio, "x", ">= 2x", ratio >= 2)


def bench_small(work: Path, report: Report, count: int) -> None:
    src = work / "small"
    src.mkdir()
    files = []
    for i in range(count):
        f = src / f"{i}.bin"
        f.write_bytes(os.urandom(64 * 1024))
        files.append(f)
    with Store.open(work / "store-small", create=True) as store:
        seconds = timed(lambda: [store.put(f"/small/{f.name}", f, version=1) for f in files])
        rate = count / seconds
        report.add(f"put {count} distinct 64 KiB files, one process", rate, "files/s", ">= 2,000/s", rate >= 2000)
        get_seconds = timed(lambda: [store.read_bytes(f"/small/{f.name}") for f in files])
        report.add(f"get {count} x 64 KiB, one process", count / get_seconds, "files/s")


def bench_dedup(work: Path, report: Report, copies: int) -> None:
    content = os.urandom(16 * MiB)
    local = work / "same.bin"
    local.write_bytes(content)
    root = work / "store-dedup"
    with Store.open(root, create=True) as store:
        empty = du_bytes(root)
        seconds = timed(lambda: [store.put(f"/contest{i}/tests/big.in", local, version=1) for i in range(copies)])
    used = du_bytes(root) - empty
    cp_dir = work / "cp-dedup"
    cp_dir.mkdir()
    for i in range(copies):
        shutil.copyfile(local, cp_dir / f"{i}.in")
    one = du_bytes(cp_dir) / copies
    report.add(f"disk bytes of {copies} identical 16 MiB files, castore", used / MiB, "MiB")
    report.add(f"disk bytes of {copies} identical 16 MiB files, cp", du_bytes(cp_dir) / MiB, "MiB")
    ratio = used / one
    report.add("  castore disk / one copy", ratio, "x", "<= 1.02x", ratio <= 1.02)
    report.add(f"put {copies} identical 16 MiB (hash-first, no write)", copies * len(content) / seconds / MB, "MB/s")


def bench_metadata(work: Path, report: Report, count: int) -> None:
    root = work / "store-meta"
    with Store.open(root, create=True) as store:
        store.put("/seed", b"one shared small content", version=1)
        key = store.stat("/seed").key
        batch = 20_000
        rng = random.Random(1)
        names = [f"/problems/{i // 1000}/tests/{i % 1000}.in" for i in range(count)]

        def insert() -> None:
            for start in range(0, count, batch):
                with store.metadata.write() as txn:
                    txn.bulk_add_paths([(n, 1) for n in names[start : start + batch]], key)

        seconds = timed(insert)
        report.add(f"batch insert {count:,} paths", count / seconds, "paths/s")
        sample = rng.sample(names, 20_000)
        seconds = timed(lambda: [store.stat(n) for n in sample])
        lookup_ms = seconds / len(sample) * 1000
        report.add(f"point lookup (stat) among {count:,} paths", lookup_ms, "ms", "< 1 ms", lookup_ms < 1)
        prefixes = [f"/problems/{rng.randrange(count // 1000)}" for _ in range(50)]
        seconds = timed(lambda: [list(store.list(p)) for p in prefixes])
        report.add("list(prefix) of a 1,000-file folder", seconds / len(prefixes) * 1000, "ms")
        seconds = timed(lambda: store.usage())
        report.add(f"usage() over {count:,} paths", seconds * 1000, "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=8, help="16 MiB files per kind (default 8)")
    parser.add_argument("--small", type=int, default=2000, help="64 KiB files (default 2000)")
    parser.add_argument("--copies", type=int, default=20, help="identical 16 MiB copies (default 20)")
    parser.add_argument("--paths", type=int, default=1_000_000, help="paths for the metadata part")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="castore-bench-", dir=args.work))
    report = Report()
    print(f"castore core benchmark, scratch {work}, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{'what':<58} {'value':>12} {'unit':<10} target")
    try:
        bench_large(work, report, args.large)
        bench_small(work, report, args.small)
        bench_dedup(work, report, args.copies)
        bench_metadata(work, report, args.paths)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report.rows, indent=1))


if __name__ == "__main__":
    main()
