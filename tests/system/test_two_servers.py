"""Two ``castore serve`` processes on one PostgreSQL database and one S3 bucket.

What one server stores the other serves; four client processes spread 500 random puts and
deletes each over both servers while a collector loops; the end state is what the version
rules imply, and ``castore check`` finds nothing wrong.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

from castore.client import Client
from castore.errors import FileNotAvailable
from castore.opening import Location, open_store

from .._workers import content_for
from ..backends import PostgresCluster, S3Server
from ..server_process import castore_server

SHARED = [f"/shared/{i}" for i in range(8)]
OPS = 500
CLIENTS = 4


def _client_work(urls: list[str], seed: int, work: str) -> None:
    """Random operations through both servers; returns the model of this client's own paths in a file.

    * shared paths: puts with random versions (the largest wins, whatever the order) and
      deletes at version 0 (always older than the current version: never remove anything);
    * own paths (``/own/SEED/...``): puts and deletes with versions, one client each, so
      their outcome follows from this client's own order.
    """
    rng = random.Random(seed)
    clients = [Client(local_store=None, remote_url=url) for url in urls]
    own: dict[str, int | None] = {}
    shared_max: dict[str, int] = {}
    source = Path(work) / f"source-{seed}"
    for _ in range(OPS):
        client = rng.choice(clients)
        roll = rng.random()
        if roll < 0.55:
            path, version = rng.choice(SHARED), rng.randrange(1, 100_000)
            source.write_bytes(content_for(path, version))
            client.put_file(f"{path}@{version}", source)
            shared_max[path] = max(shared_max.get(path, 0), version)
        elif roll < 0.65:
            try:
                client.delete_file(f"{rng.choice(SHARED)}@0")
            except FileNotAvailable:
                pass
        else:
            path, version = f"/own/{seed}/{rng.randrange(3)}", rng.randrange(1, 1000)
            current = own.get(path)
            if rng.random() < 0.7:
                source.write_bytes(content_for(path, version))
                client.put_file(f"{path}@{version}", source)
                if current is None or version >= current:
                    own[path] = version
            else:
                try:
                    client.delete_file(f"{path}@{version}")
                except FileNotAvailable:
                    assert current is None, (path, "was deleted under its owner")
                if current is not None and version >= current:
                    own[path] = None
    lines = [f"shared {p} {v}" for p, v in shared_max.items()]
    lines += [f"own {p} {v if v is not None else '-'}" for p, v in own.items()]
    (Path(work) / f"model-{seed}").write_text("\n".join(lines))


def test_two_servers_share_postgresql_and_s3(postgres: PostgresCluster, s3_server: S3Server, tmp_path: Path) -> None:
    where = Location(postgres.new_database(), s3_server.new_bucket())
    open_store(metadata=where.metadata, blobs=where.blobs, create=True, inline_max=4096).close()
    options = ("--metadata", where.metadata, "--blobs", where.blobs)
    with castore_server(tmp_path / "unused-a", store_options=options) as a, \
            castore_server(tmp_path / "unused-b", store_options=options) as b:
        # what one server stores, the other serves
        local = tmp_path / "one"
        local.write_bytes(b"through a " * 50_000)
        assert Client(local_store=None, remote_url=a).put_file("/x/one@7", local) == "/x/one@7"
        stream, name = Client(local_store=None, remote_url=b).get_stream("/x/one")
        assert name == "/x/one@7" and stream.read() == b"through a " * 50_000

        stop = threading.Event()
        collected: list[int] = []

        def collect() -> None:
            with open_store(metadata=where.metadata, blobs=where.blobs) as collector:
                while not stop.wait(0.05):  # a pause: a busy loop only takes CPU from the servers
                    collected.append(collector.collect_garbage().blobs)

        gc = threading.Thread(target=collect)
        gc.start()
        context = multiprocessing.get_context("spawn")
        children = [context.Process(target=_client_work, args=([a, b], seed, str(tmp_path)))
                    for seed in range(CLIENTS)]
        try:
            for child in children:
                child.start()
            for child in children:
                child.join(600)
                assert child.exitcode == 0
        finally:
            stop.set()
            gc.join()
        assert collected, "the collector never ran"

        expected: dict[str, int | None] = {}
        for seed in range(CLIENTS):
            for line in (tmp_path / f"model-{seed}").read_text().splitlines():
                kind, path, version = line.split()
                value = None if version == "-" else int(version)
                if kind == "shared":
                    expected[path] = max(expected.get(path) or 0, value or 0)
                else:
                    expected[path] = value
        for url in (a, b):
            client = Client(local_store=None, remote_url=url)
            for path, version in expected.items():
                if version is None:
                    try:
                        client.get_stream(path)
                    except FileNotAvailable:
                        continue
                    raise AssertionError(f"{path} should have been deleted")
                stream, name = client.get_stream(path)
                assert name == f"{path}@{version}"
                assert stream.read() == content_for(path, version)

    env = {**os.environ, "CASTORE_METADATA": where.metadata, "CASTORE_BLOBS": where.blobs}
    check = subprocess.run([sys.executable, "-m", "castore", "--root", str(tmp_path / "unused"), "check"],
                           capture_output=True, text=True, env=env, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "problems:       0" in check.stdout, check.stdout  # and exit 0: clean
