"""How long the dedup report (``castore du PREFIX --by DEPTH``) takes on a large store.

Usage::

    .venv/bin/python benchmarks/report.py                    # 1,000,000 paths
    .venv/bin/python benchmarks/report.py --paths 100000
    .venv/bin/python benchmarks/report.py --work /tmp/big --keep   # build once, time again

The store is filled through ``WriteTxn.bulk_add_paths`` (metadata only, as in
``benchmarks/core.py``): ``/contests/c<i>/p<j>/t<k>.in``, 100 tests per problem,
100 problems per contest. Contests of the same parity share their tests, so every
content is named by many paths in many contests, and one path in 100 has a second,
retained version of its own: the report has real sharing to untangle. Then it times
the report at depths 1, 2 and 3, wall and CPU time (SQLite runs in this process, so
the CPU time is what the report costs when the machine is not shared).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from castore.store import Store

TESTS = 100
PROBLEMS = 100


def build(root: Path, count: int) -> None:
    contests = max(count // (TESTS * PROBLEMS), 2)
    started = time.perf_counter()
    with Store.open(root, create=True) as store:
        # one content per (problem, test, parity): contests of one parity share them
        keys = {}
        for j in range(PROBLEMS):
            for k in range(TESTS):
                for parity in (0, 1):
                    name = store.put(f"/seeds/{j}/{k}/{parity}", b"%d %d %d\n" % (j, k, parity) * 40, 1)
                    keys[j, k, parity] = store.stat(name).key
        for (j, k, parity), key in keys.items():
            rows = [
                (f"/contests/c{i:03d}/p{j:02d}/t{k:02d}.in", 1)
                for i in range(parity, contests, 2)
                if (i * PROBLEMS + j) * TESTS + k < count
            ]
            if rows:
                with store.metadata.write() as txn:
                    txn.bulk_add_paths(rows, key)
        # one path in 100 gets a second version of its own content
        for n in range(0, count, 100):
            i, rest = divmod(n, PROBLEMS * TESTS)
            j, k = divmod(rest, TESTS)
            store.put(f"/contests/c{i:03d}/p{j:02d}/t{k:02d}.in", b"new %d\n" % n, 2)
    print(f"built {count:,} paths in {time.perf_counter() - started:.1f} s at {root}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=None, help="store folder (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the store in --work")
    args = parser.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="castore-report-")) / "store"
    try:
        if not (root / "metadata.sqlite3").exists():
            build(root, args.paths)
        with Store.open(root) as store:
            usage = store.usage()
            print(f"{usage.files:,} paths, {usage.versions:,} versions, {usage.blobs:,} blobs")
            for prefix, depth in (("/contests", 1), ("/contests", 2), ("/", 3), ("/contests/c001", 1)):
                started, cpu = time.perf_counter(), time.process_time()
                report = store.dedup_report(prefix, depth=depth, top=10)
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                print(f"castore du {prefix} --by {depth}: {len(report.groups):,} groups, "
                      f"{len(report.shared)} shared contents, {seconds:.2f} s ({cpu:.2f} s CPU)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root.parent if args.work is None else root, ignore_errors=True)


if __name__ == "__main__":
    main()
