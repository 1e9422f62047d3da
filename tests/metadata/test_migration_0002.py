"""A store written at revision 0001 (no chunk digests) keeps working after the 0002 upgrade."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import xxhash
import zstandard
from sqlalchemy import create_engine, text

from alembic import command
from castore.blobs.fs import key_to_relpath
from castore.client import Client
from castore.client.cache import LocalCache
from castore.errors import CorruptBlob, FiletrackerError
from castore.keys import BlobKey
from castore.metadata.migrate import SCHEMA_REVISION, alembic_config, current_revision
from castore.opening import locate, migrate
from castore.store import Store

from ..server_process import castore_server

SEED = 1234567


def _text(size: int) -> bytes:
    return b"".join(b"%d %d\n" % (i, i * 7919 % 100003) for i in range(size // 8))[:size]


CONTENTS = {
    "/old/inline-raw": os.urandom(1000),
    "/old/inline-zstd": _text(50_000),
    "/old/file-raw": os.urandom(400_000),
    "/old/file-zstd": _text(2_500_000),
    "/old/damaged": os.urandom(300_000),
    "/old/empty": b"",
}


def _store_at_0001(root: Path) -> None:
    """Write a store as castore's revision-0001 code did: xxh3 keys, zstd frames without checksums."""
    (root / "blobs" / ".staging").mkdir(parents=True)
    url = f"sqlite:///{root / 'metadata.sqlite3'}"
    command.upgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    with engine.begin() as c:
        for name, value in {"seed": SEED, "retention": 10, "inline_max": 131072, "zstd_level": 1}.items():
            c.execute(text("INSERT INTO settings (name, value) VALUES (:n, :v)"), {"n": name, "v": str(value)})
        for path, content in CONTENTS.items():
            key = xxhash.xxh3_128_hexdigest(content, seed=SEED)
            zstd = "zstd" in path
            stored = zstandard.ZstdCompressor(level=1).compress(content) if zstd else content
            inline = len(content) <= 131072
            if not inline:
                file = root / "blobs" / key_to_relpath(BlobKey(key))
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(stored)
            c.execute(
                text("INSERT INTO blobs (key, size, stored_size, codec, data, refcount, created) "
                     "VALUES (:k, :s, :ss, :c, :d, 1, 1)"),
                {"k": key, "s": len(content), "ss": len(stored), "c": "zstd" if zstd else "raw",
                 "d": stored if inline else None},
            )
            c.execute(text("INSERT INTO paths (path, version, blob_key, nversions) VALUES (:p, 1000, :k, 1)"),
                      {"p": path, "k": key})
            c.execute(text("INSERT INTO versions (path, version, blob_key) VALUES (:p, 1000, :k)"),
                      {"p": path, "k": key})
    engine.dispose()
    damaged = root / "blobs" / key_to_relpath(BlobKey(xxhash.xxh3_128_hexdigest(CONTENTS["/old/damaged"], seed=SEED)))
    data = bytearray(damaged.read_bytes())
    data[1000] ^= 1
    damaged.write_bytes(bytes(data))


@pytest.fixture
def old_root(tmp_path: Path) -> Path:
    root = tmp_path / "old"
    _store_at_0001(root)
    assert migrate(locate(root)) == ("0001", SCHEMA_REVISION)  # the explicit step (castore migrate-schema)
    return root


def test_a_0001_store_is_upgraded_and_keeps_working(old_root: Path) -> None:
    with Store.open(old_root) as store:
        with store.metadata._writer.connect() as c:
            assert current_revision(c) == SCHEMA_REVISION
        assert store.stat("/old/file-raw").digest is None  # not known until verified
        for path, content in CONTENTS.items():
            if path == "/old/damaged":
                with pytest.raises(CorruptBlob):
                    store.read_bytes(path)
                continue
            assert store.read_bytes(path) == content
            assert store.stat(path).digest is not None, "a verified read records the digests"
        # A new put of an old content shares the old blob (its bytes compared).
        store.put("/new/file-zstd", CONTENTS["/old/file-zstd"], version=2000)
        assert store.stat("/new/file-zstd").key == store.stat("/old/file-zstd").key
        assert store.metadata.refcount(store.stat("/old/file-zstd").key) == 2
        report = store.add_missing_digests()
        assert report.added == 0 and len(report.damaged) == 1 and "does not match its key" in report.damaged[0]
        assert store.stat("/old/damaged").digest is None


def test_add_missing_digests_covers_every_old_blob(old_root: Path) -> None:
    with Store.open(old_root) as store:
        report = store.add_missing_digests(batch=2)
        assert report.added == len(CONTENTS) - 1 and len(report.damaged) == 1
        assert all(store.stat(p).digest is not None for p in CONTENTS if p != "/old/damaged")
        assert store.add_missing_digests().added == 0


def test_a_server_on_an_upgraded_store_serves_old_blobs_verified(old_root: Path) -> None:
    Store.open(old_root).close()
    with castore_server(old_root) as url, httpx.Client(base_url=url, timeout=30) as http:
        for accept in ("identity", "zstd"):
            response = http.get("/files/old/file-zstd", headers={"Accept-Encoding": accept})
            assert response.status_code == 200 and response.content == CONTENTS["/old/file-zstd"]
            assert response.headers["castore-content-digest"].startswith("xxh3-128-chunks-1m=")
        assert http.get("/files/old/damaged").status_code == 500
        assert http.get("/files/old/empty").content == b""


def test_check_repair_adds_the_missing_digests(old_root: Path) -> None:
    """``castore check --repair`` on an upgraded store: digests added, the damaged blob listed, nothing dropped."""

    def check(*flags: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run([sys.executable, "-m", "castore", "--root", str(old_root), "check", "--json", *flags],
                              capture_output=True, text=True, check=False, timeout=120)
        return done.returncode, json.loads(done.stdout)

    code, report = check("--repair")
    assert code == 2 and report["digests_added"] == len(CONTENTS) - 1, report
    assert report["lost"] == ["/old/damaged@1000"]
    with Store.open(old_root) as store:
        assert all(store.stat(p).digest is not None for p in CONTENTS if p != "/old/damaged")
        assert sorted(f.path for f in store.list("/old")) == sorted(CONTENTS)  # the damaged path is kept
    code, report = check("--repair")
    assert code == 2 and report["digests_added"] == 0


def test_a_large_damaged_old_blob_is_never_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old zstd blob over 1 MiB (no digests, no frame checksum: key mode), damaged: no read gets its bytes."""
    content = _text(3_000_000)
    monkeypatch.setitem(CONTENTS, "/old/big", content)
    old_root = tmp_path / "old"
    _store_at_0001(old_root)
    migrate(locate(old_root))
    blob = old_root / "blobs" / key_to_relpath(BlobKey(xxhash.xxh3_128_hexdigest(content, seed=SEED)))
    data = bytearray(blob.read_bytes())
    data[len(data) * 2 // 3] ^= 1
    blob.write_bytes(bytes(data))
    with castore_server(old_root) as url, httpx.Client(base_url=url, timeout=30) as http:
        for headers in ({"Accept-Encoding": "zstd"}, {"Accept-Encoding": "identity"},
                        {"Accept-Encoding": "zstd", "Range": "bytes=-1000"}):
            try:
                with http.stream("GET", "/files/old/big", headers=headers) as r:
                    body = b"".join(r.iter_raw())
            except httpx.HTTPError:
                continue  # cut short: not a success
            assert r.status_code == 500, (headers, r.status_code, len(body))
        client = Client(local_store=LocalCache(tmp_path / "cache"), remote_url=url)
        try:
            with pytest.raises(FiletrackerError):
                client.get_file("/old/big", tmp_path / "out")
        finally:
            client.close()
    assert not (tmp_path / "out").exists()
    assert not LocalCache(tmp_path / "cache").file_path("/old/big").exists()
