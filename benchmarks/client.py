"""Client benchmark: castore's client on many small files, and its own share of the time.

Run (needs ``bash benchmarks/setup_filetracker.sh`` once, for Filetracker's server)::

    .venv/bin/python benchmarks/client.py    # --files 300 --size 64K --rounds 3 --jobs 1,4,8

Each round, with fresh names, on 127.0.0.1:

* the Filetracker 2.3.3 client putting the files to Filetracker's server, one by one
  (the baseline), in one process and in 4 processes at once;
* castore's client putting them to ``castore serve`` with ``put_file`` one by one, and
  with ``Client.put_files(pairs, jobs=N)`` for each N; in 4 processes at once too;
* castore's client getting them back (uncached, one by one);
* both clients against a server that answers at once and stores nothing: what each
  client can do at most, and castore's client CPU time per put and per get.

Prints medians of the rounds. Random contents by default (the case where the client's
compression check must cost least); ``--kind text`` for contest-style text.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.core import contest_text
from benchmarks.null_server import null_server
from benchmarks.server import FT_VENV, castore_server, filetracker_server, running
from castore.client import Client as CastoreClient
from castore.sizes import parse_size

PROCESSES = 4


def _ft_client(url: str) -> object:
    from filetracker.client import Client as FiletrackerClient

    return FiletrackerClient(local_store=None, remote_url=url)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of this process for ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    with redirect_stdout(StringIO()):  # the Filetracker client prints "Settled for protocol version 2"
        fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _put_one_by_one(which: str, url: str, files: list[Path], tag: str) -> None:
    client: object = CastoreClient(local_store=None, remote_url=url) if which == "castore" else _ft_client(url)
    with redirect_stdout(StringIO()):
        for f in files:
            client.put_file(f"/bench/{tag}/{f.name}", str(f))  # type: ignore[attr-defined]


def in_processes(which: str, url: str, files: list[Path], tag: str) -> float:
    """Puts/s of :data:`PROCESSES` client processes, each putting all ``files`` under its own names."""
    context = multiprocessing.get_context("fork")
    start = time.perf_counter()
    workers = [context.Process(target=_put_one_by_one, args=(which, url, files, f"{tag}-{i}"))
               for i in range(PROCESSES)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return PROCESSES * len(files) / (time.perf_counter() - start)


def one_round(urls: dict[str, str], files: list[Path], jobs: list[int], out: Path, tag: str) -> dict[str, float]:
    n = len(files)
    results: dict[str, float] = {}
    ft = _ft_client(urls["filetracker"])
    wall, _ = timed(lambda: [ft.put_file(f"/bench/{tag}/ft/{f.name}", str(f)) for f in files])  # type: ignore[attr-defined]
    results["FT client -> FT: put/s"] = n / wall
    results[f"FT client -> FT, {PROCESSES} processes: put/s"] = in_processes("ft", urls["filetracker"], files, f"{tag}ftp")

    castore = CastoreClient(local_store=None, remote_url=urls["castore"])
    wall, cpu = timed(lambda: [castore.put_file(f"/bench/{tag}/one/{f.name}", str(f)) for f in files])
    results["castore put_file: put/s"] = n / wall
    results["castore put_file: client ms CPU/put"] = 1000 * cpu / n
    wall, cpu = timed(lambda: [castore.get_file(f"/bench/{tag}/one/{f.name}", str(out / "o")) for f in files])
    results["castore get_file: get/s"] = n / wall
    results["castore get_file: client ms CPU/get"] = 1000 * cpu / n
    for j in jobs:
        pairs = [(f"/bench/{tag}/jobs{j}/{f.name}", str(f)) for f in files]
        wall, cpu = timed(lambda p=pairs, j=j: castore.put_files(p, jobs=j))  # type: ignore[misc]
        results[f"castore put_files jobs={j}: put/s"] = n / wall
    results[f"castore put_file, {PROCESSES} processes: put/s"] = in_processes("castore", urls["castore"], files,
                                                                             f"{tag}cp")
    castore.close()

    null = CastoreClient(local_store=None, remote_url=urls["null"])
    wall, cpu = timed(lambda: [null.put_file(f"/null/{f.name}@1000", str(f)) for f in files])
    results["castore client -> null server: put/s"] = n / wall
    results["castore client -> null server: ms CPU/put"] = 1000 * cpu / n
    wall, cpu = timed(lambda: [null.get_file(f"/null/{f.name}", str(out / "n")) for f in files])
    results["castore client -> null server: get/s"] = n / wall
    results["castore client -> null server: ms CPU/get"] = 1000 * cpu / n
    ft_null = _ft_client(urls["null"])
    wall, cpu = timed(lambda: [ft_null.put_file(f"/null/{f.name}@1000", str(f)) for f in files])  # type: ignore[attr-defined]
    results["FT client -> null server: put/s"] = n / wall
    results["FT client -> null server: ms CPU/put"] = 1000 * cpu / n
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--size", type=parse_size, default=64 * 1024)
    parser.add_argument("--kind", choices=("random", "text"), default="random")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", default="1,4,8", help="put_files job counts, comma-separated")
    args = parser.parse_args()
    if not (FT_VENV / "bin/filetracker-server").exists():
        sys.exit("Filetracker's server is not installed: run bash benchmarks/setup_filetracker.sh")
    jobs = [int(j) for j in args.jobs.split(",") if j]
    work = Path(tempfile.mkdtemp(prefix="castore-client-bench-"))
    try:
        files = []
        for i in range(args.files):
            f = work / f"test{i}.in"
            f.write_bytes(os.urandom(args.size) if args.kind == "random" else contest_text(args.size, seed=i))
            files.append(f)
        out = work / "out"
        out.mkdir()
        runs: list[dict[str, float]] = []
        with running(*castore_server(work / "castore")) as castore_url, \
                running(*filetracker_server(work / "filetracker", work / "ft.log")) as ft_url, \
                null_server(args.size) as null_url:
            urls = {"castore": castore_url, "filetracker": ft_url, "null": null_url}
            for round_ in range(args.rounds):
                runs.append(one_round(urls, files, jobs, out, f"r{round_}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.files} x {args.size} B {args.kind} files, medians of {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.1f}")
    base = statistics.median(run["FT client -> FT: put/s"] for run in runs)
    base4 = statistics.median(run[f"FT client -> FT, {PROCESSES} processes: put/s"] for run in runs)
    for figure in runs[0]:
        value = statistics.median(run[figure] for run in runs)
        ratio = ""
        if figure.endswith("put/s") and "null" not in figure and "FT client" not in figure:
            ratio = f"{value / (base4 if 'processes' in figure else base):6.2f}x FT"
        print(f"{figure:<48} {value:>9.2f} {ratio}")


if __name__ == "__main__":
    main()
