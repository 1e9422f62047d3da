"""Server benchmark: castore serve vs Filetracker 2.3.3's server, same client, same run.

Setup once (installs Berkeley DB headers with apt-get and Filetracker's server into
``.venv-filetracker``)::

    bash benchmarks/setup_filetracker.sh

Run::

    .venv/bin/python benchmarks/server.py    # --small 300 --large 4 --rounds 3 by default

Both servers run on 127.0.0.1 on free ports, each with its own data folder and its own
defaults (castore: ``castore serve``'s default ``--workers``; Filetracker: 2 x cores
workers). Three runs, each with a remote-only client (as judging machines use it) and
fresh file names:

* the unmodified ``filetracker.client.Client`` against castore,
* the same client against Filetracker's server (the baseline),
* ``castore.client.Client`` against castore.

The table prints each figure and its ratio to the baseline, all measured in one run:
one client, then 1, 4, 8 and 16 client processes at once (``--clients``: 64 KiB puts,
gets and batched puts); then the servers'
start-up (start to the first answer of ``GET /version/``, a new data folder, median of 5)
and the Filetracker client's own ceiling (against a server that does nothing).

``--background-load`` runs every round beside a CPU hog: one busy-looping process per
core, started before the servers and stopped after the last round, so that the servers
and the clients share cores with other work (a judging machine, a CI runner). Run the
benchmark once without and once with it: the line above the table gives the machine's
load average seen during the rounds (lowest and highest), since other jobs add to it.

``--workers-sweep 1,2,4`` measures castore alone with each ``--workers`` value, one and
4 client processes of each client (``--clients 16``: 16), beside the CPU hog with
``--background-load``: how its default was chosen.
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
from typing import Any

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
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started in its own session: SIGTERM its group, SIGKILL after 20 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def castore_server(data: Path, workers: str | None = None) -> tuple[list[str], str, dict[str, str]]:
    """``castore serve`` with its defaults (``workers``: a ``--workers`` value instead)."""
    port = free_port()
    command = [str(ROOT / ".venv/bin/castore"), "--root", str(data), "serve", "--init", "--port", str(port)]
    if workers is not None:
        command += ["--workers", workers]
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


def warm_up(client: FiletrackerClient | CastoreClient, out: Path, tag: str) -> None:
    """Each kind of request once, with contents of its own, before a client's timed rows.

    A new client process pays once for its first request of each kind (the Filetracker
    client's version negotiation and connection; castore's client importing its decoder
    and batch code: 5-12 ms for the first get, 15-30 ms for the first batch, against
    0.6-1 ms for a get and 8 ms for a batch of 10 afterwards). The rows measure clients
    that keep working, as a judging machine's do, so this is paid before the clock starts.
    """
    first, *batch = (out / f"{tag}.warm{i}" for i in range(3))
    for file in (first, *batch):
        file.write_bytes(os.urandom(64 * 1024))
    timed(lambda: client.put_file(f"/bench/{tag}/warm/put", str(first)))
    timed(lambda: client.get_file(f"/bench/{tag}/warm/put", str(out / f"{tag}.warm-get")))
    timed(lambda: put_many(client, f"/bench/{tag}/warm/batched", batch))


def run_suite(client: FiletrackerClient | CastoreClient, files: dict[str, list[Path]], out: Path,
              tag: str) -> dict[str, float]:
    results: dict[str, float] = {}
    warm_up(client, out, tag)
    small = files["small"]
    seconds = timed(lambda: [client.put_file(f"/bench/{tag}/small/{f.name}", str(f)) for f in small])
    results["put 64 KiB files/s"] = len(small) / seconds
    batched = files["batched"]
    seconds = timed(lambda: put_many(client, f"/bench/{tag}/batched", batched))
    results[BATCHED] = len(batched) / seconds
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


BATCHED = "put 64 KiB, put_files (batched)"
"""castore's client: ``Client.put_files`` (batches of small files, PUT /batch/); Filetracker's
client has no such call: its figure is a put_file loop, like the row above (other files)."""


def put_many(client: FiletrackerClient | CastoreClient, folder: str, small: list[Path]) -> None:
    """Put every file of ``small`` below ``folder`` the fastest way the client has."""
    if isinstance(client, CastoreClient):
        results = client.put_files([(f"{folder}/{f.name}", str(f)) for f in small])
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} puts failed, first: {failed[0].error}")
    else:
        for f in small:
            client.put_file(f"{folder}/{f.name}", str(f))


def make_client(kind: str, url: str) -> FiletrackerClient | CastoreClient:
    """A remote-only client: ``filetracker`` (the unmodified Filetracker client) or ``castore``."""
    if kind == "filetracker":
        return FiletrackerClient(local_store=None, remote_url=url)
    return CastoreClient(local_store=None, remote_url=url)


def _client_process(kind: str, url: str, small: list[Path], batched: list[Path], out: Path, tag: str, barrier: Any,
                    results: Any) -> None:
    """One of several client processes: put, then get, every small file, then put ``batched``; times each."""
    client = make_client(kind, url)
    warm_up(client, out, tag)
    barrier.wait()
    start = time.monotonic()
    timed(lambda: [client.put_file(f"/bench/{tag}/{f.name}", str(f)) for f in small])
    put_end = time.monotonic()
    barrier.wait()
    get_start = time.monotonic()
    timed(lambda: [client.get_file(f"/bench/{tag}/{f.name}", str(out / f"{tag}.get")) for f in small])
    get_end = time.monotonic()
    barrier.wait()
    batch_start = time.monotonic()
    timed(lambda: put_many(client, f"/bench/{tag}/batched", batched))
    results.put((start, put_end, get_start, get_end, batch_start, time.monotonic()))


def parallel_clients(kind: str, url: str, small: list[Path], batched: list[Path], out: Path, tag: str,
                     clients: int = 4) -> dict[str, float]:
    """Files/s of ``clients`` client processes at once, each putting then getting all of ``small``.

    The processes start together (a barrier, after each has made its client); the rate
    is every file of every process over the time from the first start to the last end.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(clients), context.Queue()
    processes = [context.Process(target=_client_process,
                                 args=(kind, url, small, batched, out, f"{tag}-{i}", barrier, results))
                 for i in range(clients)]
    for process in processes:
        process.start()
    spans = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a {kind} client process failed (exit {process.exitcode})")
    files = clients * len(small)
    return {
        f"put 64 KiB files/s, {clients} clients": files / (max(s[1] for s in spans) - min(s[0] for s in spans)),
        f"get 64 KiB files/s, {clients} clients": files / (max(s[3] for s in spans) - min(s[2] for s in spans)),
        f"{BATCHED}, {clients} clients": clients * len(batched) / (max(s[5] for s in spans) - min(s[4] for s in spans)),
    }


@contextmanager
def cpu_hog(on: bool) -> Iterator[None]:
    """While the block runs, one process per core spinning at the default priority (``--background-load``)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range((os.cpu_count() or 1) if on else 0)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def startup_seconds(server: Callable[[Path], tuple[list[str], str, dict[str, str]]], work: Path,
                    rounds: int = 5) -> float:
    """Median seconds from starting a server (new data folder) to its first answer of ``GET /version/``."""
    times = []
    work.mkdir(parents=True, exist_ok=True)
    for i in range(rounds):
        command, url, env = server(work / f"start{i}")
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            while True:
                try:
                    if httpx.get(url + "/version/", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() - started > 60:
                    raise RuntimeError(f"{command[0]} did not start")
                time.sleep(0.005)
            times.append(time.monotonic() - started)
        finally:
            stop_group(process)
    return statistics.median(times)


CEILING_FIGURES = ("put 64 KiB files/s", "get 64 KiB files/s", "put 16 MiB random MB/s", "get 16 MiB random MB/s",
                   "put 16 MiB text MB/s", "get 16 MiB text MB/s")
"""The one-client figures whose Filetracker-client ceiling is measured (a server that does nothing)."""


def filetracker_client_ceilings(files: dict[str, list[Path]], small_url: str, large_url: str,
                                out: Path) -> dict[str, float]:
    """The Filetracker client's own ceiling on each of :data:`CEILING_FIGURES`.

    ``small_url`` and ``large_url``: null servers answering a GET with 64 KiB and 16 MiB
    of random bytes. The client does all its own work (gzip and SHA-256 of a put, reading
    and writing a get); the server answers at once and stores nothing: what no server can
    beat, which shows when a ratio to Filetracker's server is capped by the client.
    """
    client = FiletrackerClient(local_store=None, remote_url=small_url)
    large = FiletrackerClient(local_store=None, remote_url=large_url)
    small = files["small"]
    figures = {
        "put 64 KiB files/s": len(small) / timed(lambda: [client.put_file(f"/null/{f.name}@1000", str(f)) for f in small]),
        "get 64 KiB files/s": len(small) / timed(lambda: [client.get_file(f"/null/{f.name}", str(out / "n"))
                                                          for f in small]),
    }
    gets = 0.0
    for kind in ("random", "text"):
        group = files[kind]
        total = sum(f.stat().st_size for f in group)
        seconds = timed(lambda g=group: [large.put_file(f"/null/{f.name}@1000", str(f)) for f in g])
        figures[f"put 16 MiB {kind} MB/s"] = total / seconds / MB
        gets += total / timed(lambda g=group: [large.get_file(f"/null/{f.name}", str(out / "nl")) for f in g]) / MB
    # a null server's body is the same random bytes for either kind: one figure for both
    figures["get 16 MiB random MB/s"] = figures["get 16 MiB text MB/s"] = gets / 2
    return figures


def workers_sweep(values: list[str], small: list[Path], out: Path, work: Path, clients: int) -> None:
    """castore alone with each ``--workers`` value: 1 and ``clients`` processes of each client."""
    print(f"castore serve --workers N: 64 KiB files/s, {len(small)} files per client process")
    print(f"{'workers':<8} {'client':<12} {'put x1':>8} {'get x1':>8} {f'put x{clients}':>8} {f'get x{clients}':>8}")
    for value in values:
        with running(*castore_server(work / f"sweep{value}", workers=value)) as url:
            for kind in ("filetracker", "castore"):
                one = run_suite(make_client(kind, url), {"small": small, "batched": small, "random": [], "text": []},
                                out, f"sweep{value}{kind}")
                many = parallel_clients(kind, url, small, small, out, f"sweep{value}{kind}", clients)
                print(f"{value:<8} {kind:<12} {one['put 64 KiB files/s']:>8.0f} {one['get 64 KiB files/s']:>8.0f} "
                      f"{many[f'put 64 KiB files/s, {clients} clients']:>8.0f} "
                      f"{many[f'get 64 KiB files/s, {clients} clients']:>8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="1,4,8,16", metavar="N,N,...",
                        help="client processes at once of the parallel rows, one row each (--workers-sweep: the first)")
    parser.add_argument("--background-load", action="store_true",
                        help="run the rounds beside a CPU hog: one busy-looping process per core")
    parser.add_argument("--workers-sweep", default=None, metavar="N,N,...",
                        help="measure castore alone with these --workers values instead")
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",")]
    if args.workers_sweep is None and not (FT_VENV / "bin/filetracker-server").exists():
        sys.exit("Filetracker's server is not installed: run bash benchmarks/setup_filetracker.sh")

    work = Path(tempfile.mkdtemp(prefix="castore-server-bench-"))
    try:
        files: dict[str, list[Path]] = {"small": [], "batched": [], "random": [], "text": []}
        for i in range(args.small):
            for kind in ("small", "batched"):  # other contents for the batched row, the same kind
                f = work / f"{kind}{i}"
                f.write_bytes(os.urandom(64 * 1024))
                files[kind].append(f)
        out = work / "out"
        out.mkdir()
        if args.workers_sweep is not None:
            with cpu_hog(args.background_load):
                workers_sweep(args.workers_sweep.split(","), files["small"], out, work, clients[0])
            return
        for i in range(args.large):
            f = work / f"random{i}"
            f.write_bytes(os.urandom(16 * MiB))
            files["random"].append(f)
            f = work / f"text{i}"
            f.write_bytes(contest_text(16 * MiB, seed=100 + i))
            files["text"].append(f)
        from benchmarks.null_server import null_server

        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "ft_on_castore": [], "castore": [], "ceiling": []}
        loads: list[float] = []
        with cpu_hog(args.background_load), running(*castore_server(work / "castore")) as castore_url, \
                running(*filetracker_server(work / "filetracker", work / "ft.log")) as ft_url, \
                null_server(64 * 1024) as null_small, null_server(16 * MiB) as null_large:
            suites = {"baseline": ("filetracker", ft_url), "ft_on_castore": ("filetracker", castore_url),
                      "castore": ("castore", castore_url)}
            for round_ in range(args.rounds):  # interleaved, so that drifts of the machine hit all of them
                runs["ceiling"].append(filetracker_client_ceilings(files, null_small, null_large, out))
                figures = {label: run_suite(make_client(kind, url), files, out, f"{label}{round_}")
                           for label, (kind, url) in suites.items()}
                for count in clients:  # the servers take turns at each count, so that drifts hit all of them
                    for label, (kind, url) in suites.items():
                        figures[label].update(parallel_clients(kind, url, files["small"], files["batched"], out,
                                                               f"{label}{round_}p{count}", count))
                    loads.append(os.getloadavg()[0])
                for label, measured in figures.items():
                    runs[label].append(measured)
        startup = {
            "castore": startup_seconds(castore_server, work / "castore-starts"),
            "filetracker": startup_seconds(lambda d: filetracker_server(d, d.parent / f"{d.name}.log"),
                                           work / "filetracker-starts"),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    baseline, ft_on_castore, castore, ceilings = (
        {figure: statistics.median(run[figure] for run in runs[label]) for figure in runs[label][0]}
        for label in ("baseline", "ft_on_castore", "castore", "ceiling")
    )
    print(f"{args.small} x 64 KiB (per client process), {args.large} x 16 MiB per kind, medians of {args.rounds} "
          "interleaved rounds; remote-only clients; each server with its defaults (castore serve; Filetracker 2 x cores "
          f"workers); {'beside a CPU hog on every core' if args.background_load else 'no background load'}; "
          f"load average {min(loads):.1f}-{max(loads):.1f} during the rounds, {os.cpu_count()} cores")
    print(f"{'figure':<44} {'FT client':>10} {'FT client':>10} {'ratio':>7} {'castore':>10} {'ratio':>7} "
          f"{'FT client':>10} {'FT -> FT':>8} {'FT -> castore':>13}")
    print(f"{'':<44} {'-> FT':>10} {'-> castore':>10} {'':>7} {'-> castore':>10} {'':>7} "
          f"{'ceiling':>10} {'/ ceiling':>8} {'/ ceiling':>13}")
    for figure, base in baseline.items():
        theirs, ours = ft_on_castore[figure], castore[figure]
        line = f"{figure:<44} {base:>10.1f} {theirs:>10.1f} {theirs / base:>6.2f}x {ours:>10.1f} {ours / base:>6.2f}x"
        if figure in ceilings:
            top = ceilings[figure]
            line += f" {top:>10.1f} {base / top:>7.2f}x {theirs / top:>12.2f}x"
        print(line)
    base, ours = startup["filetracker"], startup["castore"]
    print(f"{'start-up to first answer, s':<44} {base:>10.2f} {ours:>10.2f} {base / ours:>6.2f}x {ours:>10.2f} "
          f"{base / ours:>6.2f}x   (server started on a new folder; ratio: Filetracker's time / castore's)")
    print("FT client ceiling: the Filetracker client against a server that answers at once and stores nothing; "
          "FT client -> castore can reach 1.2x of -> FT only where the ceiling is above 1.2x of -> FT")


if __name__ == "__main__":
    main()
