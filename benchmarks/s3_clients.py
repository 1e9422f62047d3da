"""S3 client choice: boto3 (what castore/blobs/s3.py uses) vs obstore, on moto_server at 127.0.0.1.

    .venv/bin/pip install obstore      # not a castore dependency: only this comparison needs it
    .venv/bin/python -m benchmarks.s3_clients [--large 4] [--small 200] [--rounds 3]

Each client is used the way S3BlobBackend uses boto3. 16 MiB: upload of a local file
(multipart, 8 MiB parts, 4 at once) and a streaming GET read in 1 MiB pieces; 64 KiB: one
PUT and one GET per object. Rounds alternate the two clients so that the machine's load
falls on both alike; compare the ratios, not the absolute figures (moto is one Python
process, slower than any real object store).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from tests.backends import MotoServer

MB = 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=4, help="16 MiB objects per client and round")
    parser.add_argument("--small", type=int, default=200, help="64 KiB objects per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    LARGE, SMALL, ROUNDS = args.large, args.small, args.rounds
    moto = MotoServer()
    folder = Path(tempfile.mkdtemp(prefix="castore-s3-clients-"))
    try:
        import obstore
        from boto3.s3.transfer import TransferConfig
        from obstore.store import S3Store

        from castore.blobs.s3 import PART_SIZE, _client

        client = _client(moto.endpoint, moto.REGION)
        client.create_bucket(Bucket="bench")
        store = S3Store("bench", endpoint=moto.endpoint, region=moto.REGION, client_options={"allow_http": True})
        transfer = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=4)
        files = []
        for i in range(LARGE):
            path = folder / f"large-{i}"
            path.write_bytes(os.urandom(16 << 20))
            files.append(path)
        smalls = [os.urandom(64 << 10) for _ in range(SMALL)]

        def boto_put_large(name: str, path: Path) -> None:
            client.upload_file(str(path), "bench", name, Config=transfer)

        def boto_get_large(name: str) -> int:
            body = client.get_object(Bucket="bench", Key=name)["Body"]
            n = 0
            while chunk := body.read(1 << 20):
                n += len(chunk)
            return n

        def obs_put_large(name: str, path: Path) -> None:
            obstore.put(store, name, path, chunk_size=PART_SIZE, max_concurrency=4)

        def obs_get_large(name: str) -> int:
            return sum(len(c) for c in obstore.get(store, name).stream(min_chunk_size=1 << 20))

        def boto_put_small(name: str, data: bytes) -> None:
            client.put_object(Bucket="bench", Key=name, Body=data)

        def boto_get_small(name: str) -> int:
            return len(client.get_object(Bucket="bench", Key=name)["Body"].read())

        def obs_put_small(name: str, data: bytes) -> None:
            obstore.put(store, name, data)

        def obs_get_small(name: str) -> int:
            return len(obstore.get(store, name).bytes())

        clients = {
            "boto3": (boto_put_large, boto_get_large, boto_put_small, boto_get_small),
            "obstore": (obs_put_large, obs_get_large, obs_put_small, obs_get_small),
        }
        totals: dict[str, dict[str, float]] = {c: {"put16": 0.0, "get16": 0.0, "put64": 0.0, "get64": 0.0}
                                               for c in clients}
        for r in range(ROUNDS):
            order = list(clients) if r % 2 == 0 else list(reversed(clients))
            for name in order:
                put_l, get_l, put_s, get_s = clients[name]
                t = time.perf_counter()
                for i, path in enumerate(files):
                    put_l(f"{name}/{r}/l{i}", path)
                totals[name]["put16"] += time.perf_counter() - t
                t = time.perf_counter()
                for i in range(LARGE):
                    assert get_l(f"{name}/{r}/l{i}") == 16 << 20
                totals[name]["get16"] += time.perf_counter() - t
                t = time.perf_counter()
                for i, data in enumerate(smalls):
                    put_s(f"{name}/{r}/s{i}", data)
                totals[name]["put64"] += time.perf_counter() - t
                t = time.perf_counter()
                for i in range(SMALL):
                    assert get_s(f"{name}/{r}/s{i}") == 64 << 10
                totals[name]["get64"] += time.perf_counter() - t
                for i in range(LARGE):
                    client.delete_object(Bucket="bench", Key=f"{name}/{r}/l{i}")
        rows = {}
        for name, t in totals.items():
            rows[name] = (ROUNDS * LARGE * (16 << 20) / t["put16"] / MB, ROUNDS * LARGE * (16 << 20) / t["get16"] / MB,
                          ROUNDS * SMALL / t["put64"], ROUNDS * SMALL / t["get64"])
            print(f"{name:8} put 16 MiB {rows[name][0]:7.1f} MB/s  get 16 MiB {rows[name][1]:7.1f} MB/s  "
                  f"put 64 KiB {rows[name][2]:6.0f}/s  get 64 KiB {rows[name][3]:6.0f}/s")
        ratio = [o / b for o, b in zip(rows["obstore"], rows["boto3"])]
        print("obstore/boto3  " + "  ".join(f"{x:.2f}" for x in ratio))
    finally:
        moto.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
