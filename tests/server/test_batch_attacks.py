"""PUT /batch/ against hostile bodies: faults the whole-batch check must find before anything is stored."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard

from castore.batch import batch_body, batch_entry, digest_of
from tests.server_process import castore_server


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("batch-attacks") / "store"
    with castore_server(root) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client


def _padded_frame(content: bytes, padding: int) -> bytes:
    """A zstd frame of ``content`` followed by a skippable frame of ``padding`` zero bytes."""
    return zstandard.ZstdCompressor().compress(content) + b"\x50\x2a\x4d\x18" + struct.pack("<I", padding) + bytes(padding)


@pytest.mark.parametrize("first_size", [300_000, 100], ids=["after-a-large-file", "after-a-small-file"])
def test_a_padded_zstd_entry_refuses_the_batch_before_anything_is_stored(http: httpx.Client, first_size: int) -> None:
    """A zstd entry whose frame is far larger than its content (padded with a skippable frame)
    is refused by the store (castore.ingest) as PUT /files/ refuses it; the batch's check must
    find it first, naming the file, and store nothing, not the files before it."""
    tag = f"pad{first_size}"
    first = os.urandom(first_size)
    second = os.urandom(100)
    padded = _padded_frame(second, 200_000)
    entries = [batch_entry(f"/{tag}/first", 1700000000, len(first), digest_of(first), "identity", first),
               batch_entry(f"/{tag}/second", 1700000000, len(second), digest_of(second), "zstd", padded)]
    response = http.put("/batch/", content=b"".join(batch_body(entries, [first, padded])))
    assert response.status_code == 400, response.text
    assert http.get(f"/files/{tag}/first").status_code == 404
    assert http.get(f"/files/{tag}/second").status_code == 404
    assert "batch file 2" in response.headers["x-exception"]


def test_a_padded_zstd_entry_alone_is_refused_naming_it(http: httpx.Client, tmp_path: Path) -> None:
    content = os.urandom(100)
    padded = _padded_frame(content, 200_000)
    entries = [batch_entry("/padalone/a", 1700000000, len(content), digest_of(content), "zstd", padded)]
    response = http.put("/batch/", content=b"".join(batch_body(entries, [padded])))
    assert response.status_code == 400
    assert "batch file 1" in response.headers["x-exception"]
