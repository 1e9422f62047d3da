"""Four client processes racing puts of the same paths through a two-worker server."""

from __future__ import annotations

import multiprocessing
import random
from pathlib import Path

from castore.client import Client

from ..server_process import castore_server

PATHS = ["/race/a", "/race/b", "/race/c/d"]


def content_of(version: int) -> bytes:
    return b"%d\n" % version * (1 + version % 50_000)  # some inline, some blob files


def _racer(url: str, seed: int, work: str, rounds: int) -> None:
    rng = random.Random(seed)
    client = Client(local_store=None, remote_url=url)
    for i in range(rounds):
        version = rng.randrange(1, 500)
        source = Path(work) / f"{seed}-{i}"
        source.write_bytes(content_of(version))
        path = rng.choice(PATHS)
        stored = int(client.put_file(f"{path}@{version}", source).rsplit("@", 1)[1])
        assert stored >= version, (path, version, stored)


def test_racing_puts_end_on_the_highest_version(tmp_path: Path) -> None:
    seeds = [11, 22, 33, 44]
    with castore_server(tmp_path / "store", "--workers", "2") as url:
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_racer, args=(url, seed, str(tmp_path), 60)) for seed in seeds]
        for p in processes:
            p.start()
        for p in processes:
            p.join(120)
            assert p.exitcode == 0
        expected: dict[str, int] = {}
        for seed in seeds:  # replay the same random choices to know every version put
            rng = random.Random(seed)
            for _ in range(60):
                version = rng.randrange(1, 500)
                path = rng.choice(PATHS)
                expected[path] = max(expected.get(path, 0), version)
        client = Client(local_store=None, remote_url=url)
        for path, version in expected.items():
            stream, name = client.get_stream(path)
            assert name == f"{path}@{version}"
            assert stream.read() == content_of(version)
