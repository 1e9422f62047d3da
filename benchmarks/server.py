"""Server benchmark: castore serve vs Filetracker 2.3.3's server, same client, same run.

Setup once (installs Berkeley DB headers with apt-get and Filetracker's server into
``.venv-filetracker``)::

    bash benchmarks/setup_filetracker.sh

Run::

    .venv/bin/python benchmarks/server.py            # --small 500 --large 5 by default

Both servers run on 127.0.0.1 on free ports, each with its own data folder; the
unmodified ``filetracker.client.Client`` (remote only, as judging machines use it) talks
to each in turn, and the table prints the castore/Filetracker ratio for each figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path

import httpx
from filetracker.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.core import contest_text

ROOT = Path(__file__).resolve().parents[1]
FT_VENV = ROOT / ".venv-filetracker"
MiB = 1 << 20
MB = 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/version/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not start")


@contextmanager
def running(command: list[str], url: str, env: dict[str, str]) -> Iterator[str]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        wait_ready(url, process)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def castore_server(data: Path) -> tuple[list[str], str, dict[str, str]]:
    port = free_port()
    command = [str(ROOT / ".venv/bin/castore"), "--root", str(data), "serve", "--port", str(port), "--workers", "2"]
    return command, f"http://127.0.0.1:{port}", dict(os.environ)


def filetracker_server(data: Path, log: Path) -> tuple[list[str], str, dict[str, str]]:
    port = free_port()
    data.mkdir(parents=True)
    env = {**os.environ, "PATH": f"{FT_VENV / 'bin'}:{os.environ['PATH']}"}
    command = [str(FT_VENV / "bin/filetracker-server"), "-l", "127.0.0.1", "-p", str(port), "-d", str(data),
               "-D", "-L", str(log)]
    return command, f"http://127.0.0.1:{port}", env


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    with redirect_stdout(StringIO()):  # the Filetracker client prints "Settled for protocol version 2"
        fn()
    return time.perf_counter() - start


def run_suite(url: str, files: dict[str, list[Path]], out: Path, tag: str) -> dict[str, float]:
    client = Client(local_store=None, remote_url=url)
    results: dict[str, float] = {}
    small = files["small"]
    seconds = timed(lambda: [client.put_file(f"/bench/{tag}/small/{f.name}", str(f)) for f in small])
    results["put 64 KiB files/s"] = len(small) / seconds
    seconds = timed(lambda: [client.get_file(f"/bench/{tag}/small/{f.name}", str(out / "s")) for f in small])
    results["get 64 KiB files/s"] = len(small) / seconds
    for kind in ("random", "text"):
        group = files[kind]
        total = sum(f.stat().st_size for f in group)
        seconds = timed(lambda g=group, k=kind: [client.put_file(f"/bench/{tag}/{k}/{f.name}", str(f)) for f in g])
        results[f"put 16 MiB {kind} MB/s"] = total / seconds / MB
        seconds = timed(
            lambda g=group, k=kind: [client.get_file(f"/bench/{tag}/{k}/{f.name}", str(out / "l")) for f in g]
        )
        results[f"get 16 MiB {kind} MB/s"] = total / seconds / MB
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5)
    args = parser.parse_args()
    if not (FT_VENV / "bin/filetracker-server").exists():
        sys.exit("Filetracker's server is not installed: run bash benchmarks/setup_filetracker.sh")

    work = Path(tempfile.mkdtemp(prefix="castore-server-bench-"))
    try:
        files: dict[str, list[Path]] = {"small": [], "random": [], "text": []}
        for i in range(args.small):
            f = work / f"small{i}"
            f.write_bytes(os.urandom(64 * 1024))
            files["small"].append(f)
        for i in range(args.large):
            f = work / f"random{i}"
            f.write_bytes(os.urandom(16 * MiB))
            files["random"].append(f)
            f = work / f"text{i}"
            f.write_bytes(contest_text(16 * MiB, seed=100 + i))
            files["text"].append(f)
        out = work / "out"
        out.mkdir()
        with running(*castore_server(work / "castore")) as url:
            castore = run_suite(url, files, out, "c")
        with running(*filetracker_server(work / "filetracker", work / "ft.log")) as url:
            filetracker = run_suite(url, files, out, "f")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"Filetracker 2.3.3 client (remote only) against each server; {args.small} x 64 KiB, "
          f"{args.large} x 16 MiB per kind; 2 workers each side")
    print(f"{'figure':<28} {'castore':>10} {'filetracker':>12} {'ratio':>7}")
    for figure, value in castore.items():
        other = filetracker[figure]
        print(f"{figure:<28} {value:>10.1f} {other:>12.1f} {value / other:>6.2f}x")


if __name__ == "__main__":
    main()
