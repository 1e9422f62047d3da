"""Backend matrix: where a put's and a get's time goes on each metadata + blobs combination.

    .venv/bin/python -m benchmarks.backends [--large 8] [--small 300]

For sqlite+file, postgresql+file and postgresql+s3 (a local PostgreSQL cluster and
moto_server on 127.0.0.1, started as the tests start them): put and get of 16 MiB
random files (MB/s), puts of distinct 64 KiB files (files/s, inline in the metadata row);
then 64 KiB puts through one ``castore serve`` vs two servers on postgresql+s3 (4 client
processes). moto keeps objects in one Python process, so the S3 figures show the cost of
the protocol and the upload path, not of a real object store.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from castore.client import Client
from castore.opening import Location, locate, open_store
from tests.backends import MotoServer, PostgresCluster
from tests.server_process import castore_server

MB = 1e6


def _location(kind: str, work: Path, pg: PostgresCluster, moto: MotoServer, name: str) -> Location:
    if kind == "sqlite+file":
        return locate(work / name)
    blobs = (work / name / "blobs").as_uri() if kind.endswith("+file") else moto.new_bucket()
    return Location(pg.new_database(), blobs)


def bench_store(kind: str, where: Location, large: int, small: int) -> dict[str, float]:
    with open_store(metadata=where.metadata, blobs=where.blobs, create=True) as store:
        contents = [os.urandom(16 << 20) for _ in range(large)]
        start = time.perf_counter()
        for i, data in enumerate(contents):
            store.put(f"/large/{i}", data, version=1)
        put_mbs = large * (16 << 20) / (time.perf_counter() - start) / MB
        start = time.perf_counter()
        for i in range(large):
            with store.open_file(f"/large/{i}") as reader:
                while reader.read(1 << 20):
                    pass
        get_mbs = large * (16 << 20) / (time.perf_counter() - start) / MB
        pieces = [os.urandom(64 << 10) for _ in range(small)]
        start = time.perf_counter()
        for i, data in enumerate(pieces):
            store.put(f"/small/{i}", data, version=1)
        small_rate = small / (time.perf_counter() - start)
    return {"put 16 MiB MB/s": put_mbs, "get 16 MiB MB/s": get_mbs, "put 64 KiB files/s": small_rate}


def _client_puts(urls: list[str], seed: int, count: int, work: str) -> None:
    clients = [Client(local_store=None, remote_url=url) for url in urls]
    source = Path(work) / f"src-{seed}"
    for i in range(count):
        source.write_bytes(os.urandom(64 << 10))
        clients[i % len(clients)].put_file(f"/srv/{seed}/{i}@1", source)


def bench_servers(where: Location, work: Path, servers: int, count: int) -> float:
    options = ("--metadata", where.metadata, "--blobs", where.blobs)
    context = multiprocessing.get_context("spawn")
    with castore_server(work / "a", store_options=options) as a, castore_server(work / "b", store_options=options) as b:
        urls = [a, b][:servers]
        children = [context.Process(target=_client_puts, args=(urls, seed, count, str(work))) for seed in range(4)]
        start = time.perf_counter()
        for child in children:
            child.start()
        for child in children:
            child.join()
        return 4 * count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=8, help="16 MiB files per combination")
    parser.add_argument("--small", type=int, default=300, help="64 KiB files per combination")
    parser.add_argument("--server-puts", type=int, default=150, help="64 KiB puts per client process")
    args = parser.parse_args()
    pg, moto = PostgresCluster(), MotoServer()
    try:
        with tempfile.TemporaryDirectory(prefix="castore-bench-") as folder:
            work = Path(folder)
            for kind in ("sqlite+file", "postgresql+file", "postgresql+s3"):
                figures = bench_store(kind, _location(kind, work, pg, moto, kind), args.large, args.small)
                print(f"{kind:16} " + "  ".join(f"{k}: {v:,.0f}" for k, v in figures.items()), flush=True)
            for servers in (1, 2):
                where = _location("postgresql+s3", work, pg, moto, f"srv{servers}")
                open_store(metadata=where.metadata, blobs=where.blobs, create=True).close()
                rate = bench_servers(where, work, servers, args.server_puts)
                print(f"postgresql+s3, {servers} server(s), 4 clients: {rate:,.0f} puts/s of 64 KiB", flush=True)
    finally:
        moto.stop()
        pg.stop()


if __name__ == "__main__":
    main()
