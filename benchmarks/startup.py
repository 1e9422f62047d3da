"""Start-up benchmark: how soon each castore command answers, and Filetracker's server beside it.

Run::

    .venv/bin/python benchmarks/startup.py            # --runs 7
    .venv/bin/python benchmarks/startup.py --no-filetracker   # without .venv-filetracker

Each round runs every case once, interleaved, so that a busy moment of a shared machine
slows all of them alike; the table prints the median and the fastest of ``--runs`` rounds:

* ``castore --help``: start to exit;
* ``castore --url URL cat NAME``: start to exit, one small file from a running server;
* ``castore serve --workers 2`` on an existing store: start to the first answer of
  ``GET /version/``;
* ``castore serve --init`` on a new folder (default ``--workers``): the same;
* Filetracker 2.3.3's server on a new folder (its defaults): the same (needs
  ``bash benchmarks/setup_filetracker.sh``).

The CPU column is the median user + system time of the command's processes until they
exit (CLI commands only), less sensitive to other jobs than the wall clock. The load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.server import free_port, stop_group

CASTORE = ROOT / ".venv/bin/castore"
FT_VENV = ROOT / ".venv-filetracker"

Case = Callable[[int], tuple[float, float | None]]
"""One measurement for round ``i``: (wall seconds, CPU seconds or None)."""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""Commands run as installed: with bytecode caches (written by the first, unmeasured round)."""


def run_command(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of a command run to its exit (which must be 0)."""
    cpu = children_cpu()
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - started, children_cpu() - cpu


def first_answer(port: int, process: subprocess.Popen[bytes], started: float) -> float:
    """Seconds from ``started`` until ``GET /version/`` on ``port`` answers 200."""
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/version/")
            if connection.getresponse().status == 200:
                return time.perf_counter() - started
        except (ConnectionError, http.client.HTTPException, OSError):
            pass
        finally:
            connection.close()
        if process.poll() is not None or time.perf_counter() - started > 60:
            raise RuntimeError("the server did not start")
        time.sleep(0.002)


def time_server(command: list[str], port: int, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env or ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return first_answer(port, process, started)
    finally:
        stop_group(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-filetracker", action="store_true", help="Skip Filetracker's server.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="castore-startup-"))
    try:
        existing = work / "existing"
        subprocess.run([str(CASTORE), "--root", str(existing), "init"], check=True, capture_output=True, env=ENV)
        (work / "a.txt").write_bytes(b"hello\n")
        subprocess.run([str(CASTORE), "--root", str(existing), "put", str(work / "a.txt"), "/a.txt"], check=True,
                       capture_output=True)
        # the server `cat` reads from: another store, so that the serve cases start on an idle one
        served = work / "served"
        shutil.copytree(existing, served)
        port = free_port()
        server = subprocess.Popen([str(CASTORE), "--root", str(served), "serve", "--port", str(port),
                                   "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            first_answer(port, server, time.perf_counter())
            url = f"http://127.0.0.1:{port}"

            def serve_existing(i: int) -> tuple[float, None]:
                p = free_port()
                return time_server([str(CASTORE), "--root", str(existing), "serve", "--workers", "2", "--port",
                                    str(p)], p), None

            def serve_new(i: int) -> tuple[float, None]:
                p = free_port()
                return time_server([str(CASTORE), "--root", str(work / f"new{i}"), "serve", "--init", "--port",
                                    str(p)], p), None

            def filetracker(i: int) -> tuple[float, None]:
                p = free_port()
                data = work / f"ft{i}"
                data.mkdir()
                env = {**ENV, "PATH": f"{FT_VENV / 'bin'}:{os.environ['PATH']}"}
                return time_server([str(FT_VENV / "bin/filetracker-server"), "-l", "127.0.0.1", "-p", str(p), "-d",
                                    str(data), "-D", "-L", str(work / f"ft{i}.log")], p, env), None

            cases: dict[str, Case] = {
                "castore --help": lambda i: run_command([str(CASTORE), "--help"]),
                "castore --url URL cat NAME": lambda i: run_command([str(CASTORE), "--url", url, "cat", "/a.txt"]),
                "serve --workers 2, existing store": serve_existing,
                "serve --init, new folder": serve_new,
            }
            if not args.no_filetracker:
                cases["Filetracker server, new folder"] = filetracker
            before = load()
            walls: dict[str, list[float]] = {name: [] for name in cases}
            cpus: dict[str, list[float]] = {name: [] for name in cases}
            for i in range(-1, args.runs):  # round -1 writes the bytecode caches: not counted
                for name, case in cases.items():
                    wall, cpu = case(i)
                    if i >= 0:
                        walls[name].append(wall)
                        if cpu is not None:
                            cpus[name].append(cpu)
        finally:
            stop_group(server)
        print(f"load average before: {before}, after: {load()}; {args.runs} rounds")
        print(f"{'case':<36} {'median s':>9} {'fastest s':>9} {'CPU s':>7}")
        for name in cases:
            cpu = f"{statistics.median(cpus[name]):>7.3f}" if cpus[name] else f"{'':>7}"
            print(f"{name:<36} {statistics.median(walls[name]):>9.3f} {min(walls[name]):>9.3f} {cpu}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
