"""A recompressed content is served as before: same ETag, Castore-Content-Digest, ranges and bytes (#23)."""

from __future__ import annotations

from pathlib import Path

import httpx
import zstandard

from castore.codec import Codec
from castore.compacting import DELTA_MIN_LEVEL
from castore.store import Store

from ..server_process import castore_server
from ..store.test_compact_delta import reference_content, tail_changed
from ..store.test_compacting import numbers

NAMES = {"/inline.in": numbers(1, 2000), "/file.in": numbers(2, 16_000)}
"""One content kept inline, one in the blob folder that moves inline."""


def _seen(http: httpx.Client, path: str) -> dict[str, object]:
    """What a client sees of ``path``: headers that name the content, the bytes, a range, the zstd body decoded."""
    plain = http.get(f"/files{path}", headers={"Accept-Encoding": "identity"})
    ranged = http.get(f"/files{path}", headers={"Accept-Encoding": "identity", "Range": "bytes=1000-70000"})
    with http.stream("GET", f"/files{path}", headers={"Accept-Encoding": "zstd"}) as packed:
        frame = b"".join(packed.iter_raw())  # as sent: httpx would decode .content
    assert plain.status_code == 200 and ranged.status_code == 206 and packed.status_code == 200
    assert packed.headers["content-encoding"] == "zstd" and len(frame) == int(packed.headers["content-length"])
    return {
        "etag": plain.headers["etag"],
        "digest": plain.headers["castore-content-digest"],
        "body": plain.content,
        "range": (ranged.headers["content-range"], ranged.content),
        "zstd": zstandard.ZstdDecompressor().stream_reader(frame, read_across_frames=True).read(),
        "zstd_etag": packed.headers["etag"],
        "zstd_length": int(packed.headers["content-length"]),
    }


def test_compact_changes_nothing_a_client_sees_but_the_zstd_length(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        for path, data in NAMES.items():
            store.put(path, data, 1)
    with castore_server(root) as url, httpx.Client(base_url=url, headers={"Host": "127.0.0.1"}) as http:
        before = {path: _seen(http, path) for path in NAMES}
        with Store.open(root) as store:
            assert store.compact().settled == 2
        after = {path: _seen(http, path) for path in NAMES}
    for path, data in NAMES.items():
        assert before[path]["body"] == after[path]["body"] == after[path]["zstd"] == data
        for header in ("etag", "digest", "range", "zstd_etag"):
            assert before[path][header] == after[path][header], (path, header)
        assert after[path]["zstd_length"] < before[path]["zstd_length"]  # the smaller frame is what is sent


def test_a_delta_frame_is_served_as_its_content_never_as_zstd(tmp_path: Path) -> None:
    """A client lacks a delta's reference: it gets the content, identity, same ETag and digest."""
    base = reference_content()
    contents = {"/tests/1.in": base, "/tests/2.in": tail_changed(base, 2)}
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        for version, (path, data) in enumerate(contents.items(), start=1):
            store.put(path, data, version)  # in one second: the smaller key is the reference (compact's order)
    with castore_server(root) as url, httpx.Client(base_url=url, headers={"Host": "127.0.0.1"}) as http:
        before = {path: http.get(f"/files{path}", headers={"Accept-Encoding": "identity"}) for path in contents}
        with Store.open(root) as store:
            assert store.compact(level=DELTA_MIN_LEVEL).deltas == 1
            delta = next(path for path in contents if store.lookup(path).blob.codec is Codec.ZSTD_DELTA)
        for accepted in ("zstd", "zstd, gzip", "identity"):
            with http.stream("GET", f"/files{delta}", headers={"Accept-Encoding": accepted}) as answer:
                body = b"".join(answer.iter_raw())
                assert "content-encoding" not in answer.headers, accepted
                assert body == contents[delta]
                assert answer.headers["etag"] == before[delta].headers["etag"]
                assert answer.headers["castore-content-digest"] == before[delta].headers["castore-content-digest"]
        ranged = http.get(f"/files{delta}", headers={"Range": "bytes=2097000-2097999"})
        assert ranged.status_code == 206 and ranged.content == contents[delta][2097000:2098000]
