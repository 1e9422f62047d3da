"""A damaged delta reference served over HTTP (#23): every client gets an error, never wrong bytes.

The reference's blob file gets one flipped byte (a failing disk) after ``castore compact``
made the other content a delta against it. A whole GET, a Range GET, Filetracker 2.3.3's
client and castore's own client must all fail; a read-only server on the same store
serves the intact contents first.
"""

from __future__ import annotations

from pathlib import Path

import filetracker.client
import httpx
import pytest

from castore.client import Client, FiletrackerError
from castore.codec import Codec
from castore.compacting import DELTA_MIN_LEVEL
from castore.maintenance import check
from castore.store import Store

from ..server_process import castore_server
from ..store.test_compact_delta import reference_content, tail_changed
from ..store.test_delta_attacks import _flip_file, _flipped, _set
from .test_idle_compact import _figure

CONTENTS = {"/tests/1.in": reference_content(), "/tests/2.in": tail_changed(reference_content(), 2)}


def _compacted_store(root: Path) -> None:
    with Store.open(root, create=True) as store:
        for version, (path, data) in enumerate(CONTENTS.items(), start=1):
            store.put(path, data, version)
        assert store.compact(level=DELTA_MIN_LEVEL).deltas == 1


def _reference_path(root: Path) -> str:
    """The path whose content the other's delta frame names (put in one second, the smaller key is it)."""
    with Store.open(root) as store:
        rows = {path: store.lookup(path).blob for path in CONTENTS}
    return next(path for path, blob in rows.items() if any(other.base == blob.key for other in rows.values()))


def _flip_reference(root: Path) -> None:
    """One flipped byte in the reference's stored bytes, in its row or in its blob file."""
    with Store.open(root) as store:
        blob = store.lookup(_reference_path(root)).blob
        if blob.data is not None:
            _set(store, blob.key, data=_flipped(blob.data, len(blob.data) // 2))
        else:
            _flip_file(store, blob, blob.stored_size // 2)


def test_a_read_only_server_serves_deltas(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _compacted_store(root)
    with castore_server(root, "--read-only") as url, httpx.Client(base_url=url, headers={"Host": "127.0.0.1"}) as http:
        for path, data in CONTENTS.items():
            assert http.get(f"/files{path}").content == data
        ranged = http.get("/files/tests/2.in", headers={"Range": "bytes=2097000-2097999"})
        assert ranged.status_code == 206 and ranged.content == CONTENTS["/tests/2.in"][2097000:2098000]


def test_a_damaged_reference_fails_every_client(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _compacted_store(root)
    _flip_reference(root)
    with castore_server(root) as url, httpx.Client(base_url=url, headers={"Host": "127.0.0.1"}) as http:
        for path, data in CONTENTS.items():
            for headers in ({}, {"Accept-Encoding": "zstd"}, {"Range": "bytes=2097000-2097999"}):
                try:
                    answer = http.get(f"/files{path}", headers=headers)
                except httpx.TransportError:
                    continue  # the body broke off: a loud failure
                assert answer.status_code >= 500, (path, headers, answer.content == data)
            ft = filetracker.client.Client(local_store=None, remote_url=url)
            with pytest.raises(filetracker.client.FiletrackerError, match='500'):
                ft.get_file(path, str(tmp_path / "ft.out"))
            assert not (tmp_path / "ft.out").exists()
            own = Client(cache_dir=str(tmp_path / "cache"), remote_url=url)
            try:
                with pytest.raises(FiletrackerError):
                    own.get_file(path, str(tmp_path / "own.out"))
            finally:
                own.close()
            assert not (tmp_path / "own.out").exists()


def test_idle_compaction_makes_deltas_while_another_server_serves_them(tmp_path: Path) -> None:
    """One server settles the store into deltas when idle; another on the same store serves it all along.

    Every answer the reading server gives while contents switch to delta frames (and old
    frames are removed) is the whole right content.
    """
    base = reference_content()
    contents = {f"/tests/{i}.in": tail_changed(base, i) for i in range(1, 5)}
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        for version, (path, data) in enumerate(contents.items(), start=1):
            store.put(path, data, version)
    with castore_server(root, "--compact-when-idle", "--compact-idle", "0.1", "--compact-cpu", "1") as idle, \
            castore_server(root) as url, httpx.Client(base_url=url, headers={"Host": "127.0.0.1"}) as http:
        reads = 0
        while _figure(idle, "contents_total") < len(contents) or _figure(idle, "running"):
            for path, data in contents.items():
                for headers in ({"Accept-Encoding": "identity"}, {"Accept-Encoding": "zstd"},
                                {"Range": "bytes=2097000-2097999"}):
                    answer = http.get(f"/files{path}", headers=headers)
                    assert answer.status_code in (200, 206), answer.text
                    assert answer.content == (data[2097000:2098000] if "Range" in headers else data), (path, headers)
                    reads += 1
            assert reads < 100_000, "the idle server never finished"
    with Store.open(root) as store:
        codecs = [store.lookup(path).blob.codec for path in contents]
        assert codecs.count(Codec.ZSTD_DELTA) == len(contents) - 1
        assert check(store, verify_content=True).problems == []
        assert store.usage() == store.metadata.recount_usage()
        assert all(store.read_bytes(path) == data for path, data in contents.items())
