"""CPU per 64 KiB file, client and server: what bounds the many-client figures.

Run::

    .venv/bin/python benchmarks/cpu.py    # --files 300 --rounds 3

Wall-clock rates on a small shared machine drift by tens of percent from one minute to
the next; CPU time per file drifts much less, and it says what several clients at once
can reach at most: when the clients and the server share the machine's cores, every file
costs the client's CPU plus the server's, so ``cores / (client + server)`` files per
second is the ceiling, however the work is spread. ``castore serve --workers 1`` on a new
folder on 127.0.0.1; each round, with fresh names, both clients put then get the files
(castore's client also with ``put_files``, batched), and the server worker's CPU time is
read from ``/proc`` before and after (Linux). Prints medians of the rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.server import ROOT, free_port, make_client, put_many, stop_group, wait_ready


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(fn: Callable[[], object], server: int) -> tuple[float, float, float]:
    """(client CPU s, server CPU s, wall s) of ``fn``."""
    client, worker, wall = time.process_time(), cpu_seconds(server), time.perf_counter()
    with redirect_stdout(StringIO()):  # the Filetracker client prints "Settled for protocol version 2"
        fn()
    return time.process_time() - client, cpu_seconds(server) - worker, time.perf_counter() - wall


def one_round(kind: str, url: str, folder: str, files: list[Path], work: Path,
              server: int) -> dict[str, tuple[float, float, float]]:
    """One client of ``kind`` putting then getting ``files`` below ``folder``: :func:`measure` of each operation."""
    client = make_client(kind, url)
    measure(lambda: client.put_file(f"{folder}/warm", str(files[0])), server)  # connection, version
    runs: dict[str, Callable[[], object]] = {
        "put": lambda: [client.put_file(f"{folder}/{f.name}", str(f)) for f in files],
        "get": lambda: [client.get_file(f"{folder}/{f.name}", str(work / "out")) for f in files],
    }
    if kind == "castore":
        runs["put_files"] = lambda: put_many(client, f"{folder}/batched", files)
    return {operation: measure(run, server) for operation, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="castore-cpu-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(ROOT / ".venv/bin/castore"), "--root", str(work / "store"), "serve", "--init",
                               "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    try:
        wait_ready(url, server)
        files = []
        for i in range(args.files):
            f = work / f"f{i}"
            f.write_bytes(os.urandom(64 * 1024))
            files.append(f)
        for round_ in range(args.rounds):
            for kind in ("filetracker", "castore"):
                for operation, spent in one_round(kind, url, f"/cpu/{round_}/{kind}", files, work, server.pid).items():
                    results.setdefault((kind, operation), []).append(spent)
    finally:
        stop_group(server)
        shutil.rmtree(work, ignore_errors=True)

    cores = len(os.sched_getaffinity(0))
    n = args.files
    print(f"{n} x 64 KiB random files, castore serve --workers 1, medians of {args.rounds} rounds, {cores} cores")
    print(f"{'client':<12} {'operation':<10} {'client CPU':>11} {'server CPU':>11} {'files/s':>9} "
          f"{'ceiling':>9}   (ms per file; ceiling: {cores} cores / (client + server CPU), files/s)")
    for (kind, operation), rows in results.items():
        client_ms = 1000 * statistics.median(r[0] for r in rows) / n
        server_ms = 1000 * statistics.median(r[1] for r in rows) / n
        rate = n / statistics.median(r[2] for r in rows)
        ceiling = cores * 1000 / (client_ms + server_ms)
        print(f"{kind:<12} {operation:<10} {client_ms:>11.3f} {server_ms:>11.3f} {rate:>9.1f} {ceiling:>9.1f}")


if __name__ == "__main__":
    main()
