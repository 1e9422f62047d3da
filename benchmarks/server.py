"""Server benchmark: castore serve vs Filetracker 2.3.3's server, same client, same run.

Setup once (installs Berkeley DB headers with apt-get and Filetracker's server into
``.venv-filetracker``)::

    bash benchmarks/setup_filetracker.sh

Run::

    .venv/bin/python benchmarks/server.py    # --small 300 --large 4 --rounds 3 by default

Both servers run on 127.0.0.1 on free ports, each with its own data folder. Three runs,
each with a remote-only client (as judging machines use it) and fresh file names:

* the unmodified ``filetracker.client.Client`` against castore,
* the same client against Filetracker's server (the baseline),
* ``castore.client.Client`` against castore.

The table prints each figure and its ratio to the baseline, all measured in one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path

import httpx
from filetracker.client import Client as FiletrackerClient

from castore.client import Client as CastoreClient

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
    command = [str(ROOT / ".venv/bin/castore"), "--root", str(data), "serve", "--init", "--port", str(port),
               "--workers", "2"]
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


def run_suite(client: FiletrackerClient | CastoreClient, files: dict[str, list[Path]], out: Path,
              tag: str) -> dict[str, float]:
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


def _null_server(port: int) -> None:
    """Answers every request at once without storing anything: the client's own ceiling."""
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            body = b'{"protocol_versions": [2]}' if head.startswith(b"GET /version") else b""
            writer.write(b"HTTP/1.1 200 OK\r\nLast-Modified: Thu, 01 Jan 1970 00:16:40 -0000\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


def filetracker_client_ceiling(small: list[Path]) -> float:
    """Puts/s of the Filetracker client against a server that does nothing."""
    import multiprocessing

    port = free_port()
    process = multiprocessing.get_context("spawn").Process(target=_null_server, args=(port,), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        client = FiletrackerClient(local_store=None, remote_url=f"http://127.0.0.1:{port}")
        sample = small[:200]
        seconds = timed(lambda: [client.put_file(f"/null/{f.name}@1000", str(f)) for f in sample])
        return len(sample) / seconds
    finally:
        process.terminate()
        process.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
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
        ceiling = filetracker_client_ceiling(files["small"])
        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "ft_on_castore": [], "castore": []}
        with running(*castore_server(work / "castore")) as castore_url, \
                running(*filetracker_server(work / "filetracker", work / "ft.log")) as ft_url:
            suites = {
                "baseline": lambda: FiletrackerClient(local_store=None, remote_url=ft_url),
                "ft_on_castore": lambda: FiletrackerClient(local_store=None, remote_url=castore_url),
                "castore": lambda: CastoreClient(local_store=None, remote_url=castore_url),
            }
            for round_ in range(args.rounds):  # interleaved, so that drifts of the machine hit all three
                for label, make_client in suites.items():
                    runs[label].append(run_suite(make_client(), files, out, f"{label}{round_}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    baseline, ft_on_castore, castore = (
        {figure: statistics.median(run[figure] for run in runs[label]) for figure in runs[label][0]}
        for label in ("baseline", "ft_on_castore", "castore")
    )
    print(f"{args.small} x 64 KiB, {args.large} x 16 MiB per kind, medians of {args.rounds} interleaved rounds; "
          "remote-only clients; castore 2 workers, Filetracker its default 2 x cores gevent workers")
    print(f"{'figure':<26} {'FT client':>10} {'FT client':>10} {'ratio':>7} {'castore':>10} {'ratio':>7}")
    print(f"{'':<26} {'-> FT':>10} {'-> castore':>10} {'':>7} {'-> castore':>10} {'':>7}")
    for figure, base in baseline.items():
        theirs, ours = ft_on_castore[figure], castore[figure]
        print(f"{figure:<26} {base:>10.1f} {theirs:>10.1f} {theirs / base:>6.2f}x {ours:>10.1f} {ours / base:>6.2f}x")
    print(f"The Filetracker client against a server that does nothing: {ceiling:.0f} puts/s of 64 KiB "
          "(its own ceiling: SHA-256, gzip -9, a new connection per request)")


if __name__ == "__main__":
    main()
