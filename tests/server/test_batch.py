"""PUT /batch/ (castore/batch.py) on a real server: the same semantics as one PUT per file, bounded, all or nothing.

And ``Client.put_files`` on top of it: batches to a castore server that serves them,
one PUT per file to any other server or after a batch refused whole.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from castore.batch import (
    MAX_FILE_SIZE,
    MAX_MANIFEST,
    BatchLimits,
    batch_body,
    batch_entry,
    digest_of,
    parse_answer,
)
from castore.client import Client
from castore.client.remote import Remote
from castore.codec import Codec, pack_for_sending
from castore.content_coding import max_frame_size
from castore.errors import FiletrackerError, InvalidName, SourceError, UploadTooLarge
from castore.server.app import create_app
from castore.server.batch import check_batch, store_batch
from castore.server.config import ServerConfig
from castore.server.tokens import create_token
from castore.server.upload import UploadLimits
from castore.store import Store
from tests.server_process import (
    castore_server,
    castore_server_process,
    free_port,
    read_response_head,
    wait_for,
)


def _body(files: list[tuple[str, int, bytes]], *, compress: bool = True) -> bytes:
    """A batch body for ``(path, version, content)`` files, as castore's client makes it."""
    entries, payloads = [], []
    for path, version, content in files:
        packed = pack_for_sending(content) if compress else None
        sent = content if packed is None else packed
        entries.append(batch_entry(path, version, len(content), digest_of(content),
                                   "identity" if packed is None else "zstd", sent))
        payloads.append(sent)
    return b"".join(batch_body(entries, payloads))


def _put_batch(http: httpx.Client, body: bytes, **headers: str) -> httpx.Response:
    return http.put("/batch/", content=body, headers=headers)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("batch") / "store"
    with castore_server(root, "--max-upload-size", "4M", "--body-timeout", "1") as base:
        yield base


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def _stored(http: httpx.Client, path: str) -> tuple[int, bytes] | None:
    response = http.get(f"/files{path}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    remote = Remote(str(http.base_url))
    try:
        return remote.stat(path).version, response.content
    finally:
        remote.close()


def test_advertised_in_version(http: httpx.Client) -> None:
    info = http.get("/version").json()
    assert info["castore"]["batch"] == {"max_files": 1000, "max_bytes": 4 << 20, "max_file_size": 1 << 20}


def test_a_batch_stores_every_file_and_answers_each_name(http: httpx.Client) -> None:
    text, noise = b"1 2 3\n" * 20_000, os.urandom(64 << 10)
    files = [("/b/text", 1000, text), ("/b/noise", 1000, noise), ("/b/empty", 1000, b""), ("/b/again", 1000, text),
             ("/b/big", 1000, os.urandom(300 << 10))]  # over the inline size: stored on its own, in order
    response = _put_batch(http, _body(files))
    assert response.status_code == 200, response.text
    assert response.json() == {"files": [{"stored": f"{p}@{v}"} for p, v, _ in files]}
    for path, version, content in files:
        assert _stored(http, path) == (version, content)


def test_older_versions_and_duplicates_act_as_puts_in_order(http: httpx.Client) -> None:
    assert _put_batch(http, _body([("/o/a", 2000, b"new a")])).status_code == 200
    files = [
        ("/o/a", 1000, b"old a"),  # older than stored: ignored, the answer names the newer one
        ("/o/b", 5, b"first b"),
        ("/o/b", 5, b"second b"),  # the same version again: replaces the content
        ("/o/b", 4, b"older b"),  # older than the batch's own earlier entry: ignored
        ("/o/c", 7, b"same"),
        ("/o/d", 7, b"same"),  # one content under two names
    ]
    response = _put_batch(http, _body(files))
    assert response.status_code == 200, response.text
    assert [f["stored"] for f in response.json()["files"]] == [
        "/o/a@2000", "/o/b@5", "/o/b@5", "/o/b@5", "/o/c@7", "/o/d@7"
    ]
    assert _stored(http, "/o/a") == (2000, b"new a")
    assert _stored(http, "/o/b") == (5, b"second b")
    assert _stored(http, "/o/c") == _stored(http, "/o/d") == (7, b"same")


_PATHS = st.sampled_from(["/h/x", "/h/y", "/h/z/w"])
_CONTENTS = st.sampled_from([b"", b"a", b"1 2 3\n" * 3000, bytes(range(256)) * 40, b"a"])
_PUTS = st.lists(st.tuples(_PATHS, st.integers(1, 4), _CONTENTS), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(puts=_PUTS, compress=st.booleans())
def test_a_batch_equals_one_put_per_file(http: httpx.Client, puts: list[tuple[str, int, bytes]],
                                         compress: bool) -> None:
    """Same answers and same final state as the same files sent one PUT at a time, in order."""
    tag = f"/t{time.monotonic_ns()}"
    remote = Remote(str(http.base_url))
    try:
        one_by_one = []
        for path, version, content in puts:
            response = http.put(f"/files/single{tag}{path}", content=content,
                                params={"last_modified": _date(version)})
            assert response.status_code == 200
            one_by_one.append(remote.stat(f"/single{tag}{path}").version)
        response = _put_batch(http, _body([(f"/batch{tag}{p}", v, c) for p, v, c in puts], compress=compress))
        assert response.status_code == 200, response.text
        batched = [int(f["stored"].rpartition("@")[2]) for f in response.json()["files"]]
        assert batched == one_by_one
        for path in {p for p, _, _ in puts}:
            assert _stored(http, f"/batch{tag}{path}") == _stored(http, f"/single{tag}{path}")
    finally:
        remote.close()


def _date(version: int) -> str:
    from castore.protocol import format_version

    return format_version(version)


def test_a_corrupt_file_refuses_the_whole_batch(http: httpx.Client) -> None:
    files = [("/bad/1", 10, b"one"), ("/bad/2", 10, b"two" * 5000), ("/bad/3", 10, b"three")]
    body = _body(files)
    manifest, _, payloads = body.partition(b"\n")
    listed = json.loads(manifest)
    listed["files"][1]["digest"] = "xxh3-128-chunks-1m=" + "0" * 32
    response = _put_batch(http, json.dumps(listed).encode() + b"\n" + payloads)
    assert response.status_code == 400
    assert "batch file 2 ('/bad/2@10')" in response.headers["X-Exception"]
    assert "digest" in response.headers["X-Exception"]
    for path, _, _ in files:
        assert _stored(http, path) is None  # nothing stored, not even the file before it


MALFORMED = [
        (lambda body: body[:-1], 400, "truncated"),  # whole request, one byte short of the manifest's sum
        (lambda body: body + b"x", 400, "past its last file"),
        (lambda body: body.replace(b'"size":3,', b'"size":4,', 1), 400, "length (3) must be its size (4)"),
        (lambda body: body.replace(b'"encoding":"identity"', b'"encoding":"br"', 1), 400, "unsupported encoding"),
        (lambda body: body.replace(b"/m/1@10", b"/m/1", 1), 400, "has no @version"),
        (lambda body: body.replace(b"/m/1@10", b"/m/../1@10", 1), 400, "batch file 1"),
        (lambda body: b"[1, 2]\n", 400, "must be {"),
        (lambda body: b"not json\n", 400, "not JSON"),
        (lambda body: b"[" * 200_000 + b"\n", 400, "not JSON"),
        (lambda body: body.replace(b'"size":3,', b'"size":3.0,', 1), 400, "whole numbers"),
        (lambda body: body.replace(b'"size":3,', b'"size":-3,', 1), 400, "whole numbers"),
        (lambda body: body.replace(b'"size":3,', b'"size":true,', 1), 400, "whole numbers"),
        (lambda body: body.replace(b"\n", b" ", 1), 400, "before its manifest line"),
]
"""Changes to a two-file batch body, with the status and part of the X-Exception each must get."""


@pytest.mark.parametrize(("change", "status", "says"), MALFORMED)
def test_malformed_batches_are_refused_and_store_nothing(http: httpx.Client, change: object, status: int,
                                                         says: str) -> None:
    body = _body([("/m/1", 10, b"one"), ("/m/2", 10, b"two")], compress=False)
    response = _put_batch(http, change(body))  # type: ignore[operator]
    assert response.status_code == status, response.text
    assert says in response.headers["X-Exception"], response.headers["X-Exception"]
    assert _stored(http, "/m/1") is None and _stored(http, "/m/2") is None


def test_a_zstd_frame_that_decodes_longer_is_refused(http: httpx.Client) -> None:
    content = b"1 2 3\n" * 3000
    body = _body([("/z/1", 10, content)])
    assert b'"encoding":"zstd"' in body
    shorter = body.replace(f'"size":{len(content)}'.encode(), f'"size":{len(content) - 1}'.encode(), 1)
    response = _put_batch(http, shorter)
    assert response.status_code == 400 and "batch file 1" in response.headers["X-Exception"]
    assert _stored(http, "/z/1") is None


def test_limits(http: httpx.Client) -> None:
    too_many = _body([(f"/l/{i}", 1, b"") for i in range(1001)])
    response = _put_batch(http, too_many)
    assert response.status_code == 413 and "1001 files" in response.headers["X-Exception"]
    too_large_file = _body([("/l/big", 1, os.urandom((1 << 20) + 1))])
    response = _put_batch(http, too_large_file)
    assert response.status_code == 413 and "per file in a batch" in response.headers["X-Exception"]
    files = [(f"/l/{i}", 1, os.urandom(1 << 20)) for i in range(4)]  # 4 MiB and the manifest: over --max-upload-size
    try:
        response = _put_batch(http, _body(files))
    except httpx.TransportError:
        pass  # refused from its Content-Length, and closed while the body was still being sent
    else:
        assert response.status_code == 413
    assert all(_stored(http, f"/l/{i}") is None for i in range(4))
    assert http.put("/batch/", content=b"{}\n", headers={"Content-Encoding": "gzip"}).status_code == 415


def test_an_idle_batch_body_times_out(url: str) -> None:
    port = int(url.rpartition(":")[2])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"PUT /batch/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{\"files\":")
        head = read_response_head(s)  # the server's --body-timeout is 1 s
    assert head.startswith(b"HTTP/1.1 408"), head


def test_tokens(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True) as store:
        _, read = create_token(store.metadata, "read")
        _, write = create_token(store.metadata, "write")
    body = _body([("/tok/1", 1, b"one")])
    with castore_server(root) as base, httpx.Client(base_url=base) as http:
        refused = http.put("/batch/", content=body, headers={"Authorization": f"Bearer {read}"})
        assert refused.status_code == 403 and refused.headers["X-Exception"] == "a read token may not PUT"
        assert http.put("/batch/", content=body).status_code == 401
        source = tmp_path / "one"
        source.write_bytes(b"one")
        results = Client(local_store=None, remote_url=base, token=read).put_files([("/tok/2@1", source)] * 2)
        assert all(isinstance(r.error, FiletrackerError) and r.error.status == 403 for r in results)
        assert "/tok/2" in str(results[0].error)
        stored = http.put("/batch/", content=body, headers={"Authorization": f"Bearer {write}"})
        assert stored.status_code == 200 and stored.json() == {"files": [{"stored": "/tok/1@1"}]}


def _files(folder: Path, count: int, size: int = 2000, *, text: bool = True) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        f = folder / f"{i}.in"
        f.write_bytes(b"%d 1\n" % i * (size // 4) if text and i % 2 == 0 else os.urandom(size + i))
        made.append(f)
    return made


class _CountingRequests:
    """Counts the requests a Remote sends, by method and URL path."""

    def __init__(self, remote: Remote) -> None:
        self.seen: list[tuple[str, str]] = []
        send = remote._send

        def counting(method: str, url: str, *args: object, **kwargs: object) -> object:
            self.seen.append((method, url))
            return send(method, url, *args, **kwargs)  # type: ignore[arg-type]

        remote._send = counting  # type: ignore[method-assign]


def test_put_files_batches_small_files_and_streams_large_ones(url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("castore.client.BATCH_FILES", 64)
    small = _files(tmp_path / "small", 150)
    large = tmp_path / "large"
    large.write_bytes(os.urandom((1 << 20) + 1))
    remote = Remote(url)
    counted = _CountingRequests(remote)
    client = Client(local_store=None, remote_store=remote)
    pairs = [(f"/pf/{f.name}@5", f) for f in small[:100]] + [("/pf/large@5", large)]
    pairs += [(f"/pf/{f.name}@5", f) for f in small[100:]] + [("/pf/missing@5", tmp_path / "missing")]
    results = client.put_files(pairs, jobs=1)
    assert [r.ok for r in results] == [True] * 151 + [False]
    assert all(r.stored == r.wanted for r in results[:-1])
    puts = [u for m, u in counted.seen if m == "PUT"]
    # runs of small files in batches of BATCH_FILES at most, in order; the large one alone
    assert puts == ["/batch/", "/batch/", "/files/pf/large?last_modified=" + puts[2].rpartition("=")[2], "/batch/"]
    for name, source in pairs[:-1]:
        assert client.get_stream(name)[0].read() == Path(source).read_bytes()


def test_put_files_keeps_batches_near_1_mib(url: str, tmp_path: Path) -> None:
    """64 KiB files go about 15 to a batch: a body a server keeps in memory, and batches that overlap."""
    files = _files(tmp_path / "mib", 40, size=64 << 10, text=False)
    remote = Remote(url)
    counted = _CountingRequests(remote)
    assert all(r.ok for r in Client(local_store=None, remote_store=remote).put_files([(f"/mib/{f.name}@1", f)
                                                                                        for f in files]))
    assert [u for m, u in counted.seen if m == "PUT"] == ["/batch/"] * 3


def test_put_files_fills_the_cache_from_a_batch(url: str, tmp_path: Path) -> None:
    client = Client(cache_dir=tmp_path / "cache", remote_url=url)
    files = _files(tmp_path / "cached", 5)
    assert all(r.ok for r in client.put_files([(f"/pc/{f.name}@7", f) for f in files], jobs=2))
    assert sorted(e.name for e in client.list_local_files()) == sorted(f"/pc/{f.name}@7" for f in files)


def test_put_files_falls_back_file_by_file_when_a_batch_is_refused(url: str, tmp_path: Path) -> None:
    """A batch refused whole (here 400: a version no HTTP date can carry) is sent again file by file."""
    files = _files(tmp_path / "fb", 6)
    remote = Remote(url)
    counted = _CountingRequests(remote)
    pairs = [(f"/fb/{f.name}@3", f) for f in files[:5]] + [(f"/fb/{files[5].name}@300000000000", files[5])]
    results = Client(local_store=None, remote_store=remote).put_files(pairs)
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert all(r.stored == r.wanted for r in results[:5])
    assert "300000000000" in str(results[5].error)
    puts = [u for m, u in counted.seen if m == "PUT"]
    assert puts[0] == "/batch/" and len(puts) == 6 and all(u.startswith("/files/fb/") for u in puts[1:])


def test_a_server_without_the_route(tmp_path: Path) -> None:
    """An older castore (no "batch" in /version): one PUT per file; one that says it but answers 404: the same."""
    root = tmp_path / "store"
    files = _files(tmp_path / "old", 4)
    with castore_server(root) as base:
        remote = Remote(base)
        remote.is_castore()
        remote._batch = None  # what an older castore's /version says
        counted = _CountingRequests(remote)
        results = Client(local_store=None, remote_store=remote).put_files([(f"/old/{f.name}@1", f) for f in files])
        assert all(r.ok for r in results)
        assert [u for m, u in counted.seen if m == "PUT" and u == "/batch/"] == []
        remote = Remote(base)
        remote.is_castore()
        remote._batch = BatchLimits()  # a server that says it takes batches, but answers 404 (no such route)
        send = remote._send

        def elsewhere(method: str, url: str, *args: object, **kwargs: object) -> object:
            return send(method, "/no-batches-here/" if url == "/batch/" else url, *args, **kwargs)  # type: ignore[arg-type]

        remote._send = elsewhere  # type: ignore[method-assign]
        counted = _CountingRequests(remote)
        results = Client(local_store=None, remote_store=remote).put_files([(f"/new/{f.name}@1", f) for f in files])
        assert all(r.ok for r in results), [r.error for r in results]
        assert next(u for m, u in counted.seen if m == "PUT") == "/batch/"


def test_kill_9_mid_batch_leaves_no_path_at_a_missing_blob(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root, create=True).close()
    files = [(f"/k/{i}", 1, os.urandom(4000) if i % 50 else os.urandom(200 << 10)) for i in range(800)]
    body = _body(files)
    with castore_server_process(root, "--workers", "1", port=free_port()) as (base, process):
        answered: list[int] = []

        def send() -> None:
            try:
                answered.append(httpx.put(base + "/batch/", content=body, timeout=30).status_code)
            except httpx.TransportError:
                pass

        sender = threading.Thread(target=send)
        sender.start()
        # the server is storing once the first large file's blob is in place (all 800 take about a second)
        wait_for(lambda: any(p.is_file() for p in (root / "blobs").glob("??/??/*")), "the batch is being stored")
        process.send_signal(signal.SIGKILL)
        process.wait()
        sender.join()
    assert answered == []  # killed mid-batch: no answer
    with Store.open(root) as store:
        assert store.check() == []
        stored = [path for path, _, _ in files if store.exists(path)]
        for path, _, content in files:
            if path in stored:
                assert store.read_bytes(path) == content
    assert len(stored) < len(files)


def test_store_put_many(store: Store) -> None:
    """The store's side: older versions, duplicates and one content twice, as by put; bad items store nothing."""
    import zstandard

    store.put("/pm/a@9", b"nine")
    text = b"1 2 3\n" * 1000
    frame = zstandard.ZstdCompressor().compress(text)
    names = store.put_many([("/pm/a", 5, b"five", None), ("/pm/b", 5, b"x", None), ("/pm/b", 5, b"y", None),
                            ("/pm/c", 1, frame, len(text)), ("/pm/d", 1, text, None)])
    assert names == ["/pm/a@9", "/pm/b@5", "/pm/b@5", "/pm/c@1", "/pm/d@1"]
    assert store.read_bytes("/pm/a") == b"nine" and store.read_bytes("/pm/b") == b"y"
    assert store.read_bytes("/pm/c") == store.read_bytes("/pm/d") == text
    too_large = os.urandom(store.settings()["inline_max"] + 1)
    with pytest.raises(ValueError, match="inline"):
        store.put_many([("/pm/e", 1, b"e", None), ("/pm/f", 1, too_large, None)])
    with pytest.raises(ValueError):
        store.put_many([("/pm/g", 1, b"g", None), ("/pm/../h", 1, b"h", None)])
    with pytest.raises(SourceError, match="truncated: 6000 of 6001 bytes"):
        store.put_many([("/pm/i", 1, b"i", None), ("/pm/j", 1, frame, len(text) + 1)])
    assert not any(store.exists(f"/pm/{n}") for n in "efghij")


def test_put_many_is_one_transaction_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while recording the third put rolls back the first two (one commit for all, or none)."""
    with Store.open(tmp_path / "s", create=True) as store:
        record = store._settle_and_record
        calls = []

        def failing_third(path: str, version: int, prepared: object) -> str:
            calls.append(path)
            if len(calls) == 3:
                raise OSError("the disk went away")
            return record(path, version, prepared)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "_settle_and_record", failing_third)
        with pytest.raises(OSError):
            store.put_many([(f"/tx/{i}", 1, b"%d" % i, None) for i in range(4)])
        monkeypatch.undo()
        assert calls == ["/tx/0", "/tx/1", "/tx/2"]
        assert not any(store.exists(f"/tx/{i}") for i in range(4))
        assert store.put_many([("/tx/0", 1, b"0", None)]) == ["/tx/0@1"] and store.check() == []


def _skippable(payload: bytes) -> bytes:
    """A zstd skippable frame (RFC 8878 §3.1.2): decoders pass over it, it holds no content."""
    return (0x184D2A50).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload


def _zstd_entry(path: str, content: bytes, sent: bytes) -> bytes:
    return b"".join(batch_body([batch_entry(path, 10, len(content), digest_of(content), "zstd", sent)], [sent]))


@pytest.mark.parametrize("size", [20_000, 400_000])  # stored inline, and as a blob file
@pytest.mark.parametrize("shape", ["two frames", "skippable first", "skippable last", "many frames and skippables"])
def test_multi_frame_and_skippable_frame_entries_are_stored_as_sent(http: httpx.Client, size: int, shape: str) -> None:
    """A zstd entry is a zstd stream (RFC 8878): any frames, skippable ones included, as for PUT /files/."""
    content = b"".join(b"%d %s\n" % (i, shape.encode()) for i in range(size))[:size]  # one per test: no dedup
    frame = zstandard.ZstdCompressor(write_checksum=True).compress
    half = size // 2
    sent = {
        "two frames": frame(content[:half]) + frame(content[half:]),
        "skippable first": _skippable(b"made by pzstd") + frame(content),
        "skippable last": frame(content) + _skippable(b""),
        "many frames and skippables": b"".join(_skippable(b"x") + frame(content[i:i + 7000])
                                               for i in range(0, size, 7000)) + frame(b""),
    }[shape]
    path = f"/frames/{size}/{shape.replace(' ', '-')}"
    response = _put_batch(http, _zstd_entry(path, content, sent))
    assert response.status_code == 200, response.headers.get("X-Exception")
    assert http.get(f"/files{path}").content == content
    with http.stream("GET", f"/files{path}", headers={"Accept-Encoding": "zstd"}) as passed:
        assert passed.headers["Content-Encoding"] == "zstd"
        assert b"".join(passed.iter_raw()) == sent  # kept as it came
    assert http.get(f"/files{path}", headers={"Range": "bytes=7000-7099"}).content == content[7000:7100]


def test_every_frame_of_an_entry_keeps_the_bounds(http: httpx.Client) -> None:
    content = b"1 2 3\n" * 3000
    first = zstandard.ZstdCompressor().compress(content[:6000])
    wide = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters(window_log=24)).compressobj()
    second = wide.compress(content[6000:]) + wide.flush()  # streamed: its header asks for a 16 MiB window
    response = _put_batch(http, _zstd_entry("/bounds/window", content, first + second))
    assert response.status_code == 400 and "window" in response.headers["X-Exception"]
    padded = zstandard.ZstdCompressor().compress(content) + _skippable(b"\0" * 100_000)  # past size + size/128 + 64 KiB
    response = _put_batch(http, _zstd_entry("/bounds/padded", content, padded))
    assert response.status_code == 400 and "far larger than its size" in response.headers["X-Exception"]
    assert _stored(http, "/bounds/window") is None and _stored(http, "/bounds/padded") is None


def test_an_empty_content_is_never_kept_as_an_empty_zstd_stream(http: httpx.Client) -> None:
    """No frame at all decodes to the empty content, but no zstd decoder takes zero bytes for a stream:
    such an upload is stored raw, so a client that accepts zstd gets a plain empty body."""
    assert _put_batch(http, _zstd_entry("/empty/batch", b"", b"")).status_code == 200
    put = http.put("/files/empty/put?last_modified=Thu, 01 Jan 1970 00:16:40 -0000", content=b"",
                   headers={"Content-Encoding": "zstd", "Logical-Size": "0"})
    assert put.status_code == 200
    for path in ("/empty/batch", "/empty/put"):
        answer = http.get(f"/files{path}", headers={"Accept-Encoding": "zstd"})
        assert answer.status_code == 200 and answer.content == b""
        assert "Content-Encoding" not in answer.headers, path


def test_the_store_keeps_an_empty_content_raw_whatever_it_came_as(store: Store) -> None:
    store.put_zstd("/empty/frames", io.BytesIO(b""), 1, size=0)
    store.put_many([("/empty/many", 1, b"", 0)])
    assert store.stat("/empty/frames").codec == store.stat("/empty/many").codec == "raw"


# -- the same batches in-process (TestClient): scripts/mutate.sh's batch tests see the server's code --


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    with Store.open(tmp_path / "s", create=True) as store, \
            TestClient(create_app(store, ServerConfig(limits=UploadLimits(max_upload_size=4 << 20)))) as http:
        yield http, store


def _held(store: Store, path: str) -> tuple[int, bytes] | None:
    return (store.stat(path).version, store.read_bytes(path)) if store.exists(path) else None


@pytest.mark.parametrize(("change", "status", "says"), MALFORMED)
def test_in_process_malformed_batches_are_refused(local: tuple[TestClient, Store], change: object, status: int,
                                                  says: str) -> None:
    http, store = local
    body = _body([("/m/1", 10, b"one"), ("/m/2", 10, b"two")], compress=False)
    response = http.put("/batch/", content=change(body))  # type: ignore[operator]
    assert response.status_code == status, response.text
    assert says in response.headers["X-Exception"], response.headers["X-Exception"]
    assert not store.exists("/m/1") and not store.exists("/m/2")


def test_in_process_batches_store_like_puts_in_order(local: tuple[TestClient, Store]) -> None:
    http, store = local
    text, noise, big = b"1 2 3\n" * 20_000, os.urandom(64 << 10), os.urandom(300 << 10)
    assert http.put("/batch/", content=_body([("/o/a", 2000, b"new a")])).status_code == 200
    files = [("/b/text", 1000, text), ("/b/noise", 1000, noise), ("/b/empty", 1000, b""), ("/b/big", 1000, big),
             ("/o/a", 1000, b"old a"), ("/o/b", 5, b"first b"), ("/o/b", 5, b"second b"), ("/o/b", 4, b"older b")]
    for compress in (True, False):
        response = http.put("/batch/", content=_body(files, compress=compress))
        assert response.status_code == 200, response.text
        assert [f["stored"] for f in response.json()["files"]] == [
            "/b/text@1000", "/b/noise@1000", "/b/empty@1000", "/b/big@1000", "/o/a@2000", "/o/b@5", "/o/b@5",
            "/o/b@5"]
    assert [_held(store, p) for p in ("/b/text", "/b/noise", "/b/empty", "/b/big", "/o/a", "/o/b")] == [
        (1000, text), (1000, noise), (1000, b""), (1000, big), (2000, b"new a"), (5, b"second b")]


def test_in_process_a_fault_in_any_file_refuses_the_batch(local: tuple[TestClient, Store]) -> None:
    http, store = local
    files = [("/bad/1", 10, b"one"), ("/bad/2", 10, b"two" * 5000), ("/bad/3", 10, b"three")]
    manifest, _, payloads = _body(files).partition(b"\n")
    listed = json.loads(manifest)
    listed["files"][1]["digest"] = "xxh3-128-chunks-1m=" + "0" * 32
    response = http.put("/batch/", content=json.dumps(listed).encode() + b"\n" + payloads)
    assert response.status_code == 400 and "batch file 2 ('/bad/2@10')" in response.headers["X-Exception"]
    content = b"1 2 3\n" * 3000
    body = _body([("/z/1", 10, content)])
    shorter = body.replace(f'"size":{len(content)}'.encode(), f'"size":{len(content) - 1}'.encode(), 1)
    response = http.put("/batch/", content=shorter)
    assert response.status_code == 400 and "batch file 1" in response.headers["X-Exception"]
    response = http.put("/batch/", content=_body([(f"/l/{i}", 1, b"") for i in range(1001)]))
    assert response.status_code == 413 and "1001 files" in response.headers["X-Exception"]
    response = http.put("/batch/", content=_body([("/l/big", 1, os.urandom((1 << 20) + 1))]))
    assert response.status_code == 413 and "per file in a batch" in response.headers["X-Exception"]
    exactly = _body([(f"/l/{i}", 1, b"") for i in range(1000)])  # the limits themselves pass
    assert http.put("/batch/", content=exactly).status_code == 200
    assert http.put("/batch/", content=_body([("/l/mib", 1, os.urandom(1 << 20))])).status_code == 200
    assert not any(store.exists(p) for p in ("/bad/1", "/bad/2", "/bad/3", "/z/1", "/l/big"))


def test_the_manifest_is_ascii_and_answers_are_checked() -> None:
    entry = batch_entry("/zażółć", 1, 1, digest_of(b"z"), "identity", b"z")
    manifest = batch_body([entry], [b"z"])[0]
    assert manifest.isascii() and json.loads(manifest)["files"][0]["name"] == "/zażółć@1"
    assert parse_answer(b'{"files": [{"stored": "/a@1"}]}', 1) == ["/a@1"]
    with pytest.raises(ValueError, match="^the answer names 1 files, the batch had 2$"):
        parse_answer(b'{"files": [{"stored": "/a@1"}]}', 2)
    with pytest.raises(ValueError, match="^the answer names 1 files, the batch had 1$"):
        parse_answer(b'{"files": [{"stored": 7}]}', 1)


def _manifest_line(*entries: object) -> bytes:
    return json.dumps({"files": list(entries)}).encode() + b"\n"


def _check_refusal(body: bytes) -> str:
    with pytest.raises((SourceError, InvalidName, UploadTooLarge)) as refused:
        check_batch(io.BytesIO(body), len(body), BatchLimits())
    return str(refused.value)


def test_each_batch_fault_is_named_exactly() -> None:
    """Every refusal names the file (its place in the batch and its name) and the rule it broke."""
    ok = batch_entry("/a", 1, 3, digest_of(b"abc"), "identity", b"abc")
    cases: list[tuple[bytes, str]] = [
        (b"not json\n", "the batch manifest is not JSON"),
        (b"[1]\n", 'the batch manifest must be {"files": [...]}'),
        (_manifest_line(ok, 7), "batch file 2: an entry must be an object"),
        (_manifest_line({**ok, "name": 5}), "batch file 1: no name"),
        (_manifest_line({**ok, "size": "3"}), "batch file 1 ('/a@1'): size and length must be whole numbers of bytes"),
        (_manifest_line({**ok, "encoding": "br"}), "batch file 1 ('/a@1'): unsupported encoding 'br' (identity or zstd)"),
        (_manifest_line({**ok, "length": 4}),
         "batch file 1 ('/a@1'): an identity entry's length (4) must be its size (3)"),
        (_manifest_line({**ok, "encoding": "zstd", "length": max_frame_size(3) + 1}),
         f"batch file 1 ('/a@1'): a zstd entry's length ({max_frame_size(3) + 1}) is far larger than its size (3)"),
        (_manifest_line({**ok, "digest": 7}), "batch file 1 ('/a@1'): no valid digest (xxh3-128-chunks-1m=<32 hex>)"),
        (_manifest_line({**ok, "size": MAX_FILE_SIZE + 1, "length": MAX_FILE_SIZE + 1}),
         (f"batch file 1 ('/a@1') has {MAX_FILE_SIZE + 1} bytes, over this server's limit of {MAX_FILE_SIZE} per "
         "file in a batch (send it with PUT /files/)")),
        (_manifest_line(ok) + b"ab", (f"the batch body is truncated: {len(_manifest_line(ok)) + 2} bytes, its "
         f"manifest says {len(_manifest_line(ok)) + 3}")),
        (_manifest_line(ok) + b"abcd", (f"the batch body has bytes past its last file: {len(_manifest_line(ok)) + 4} "
         f"bytes, its manifest says {len(_manifest_line(ok)) + 3}")),
        (_manifest_line(ok, {**ok, "name": "/b@1"}) + b"abcabd",
         "batch file 2 ('/b@1'): the content does not match its digest"),
        (b'{"files": []}', "the batch body ends before its manifest line does"),
        (b" " * (MAX_MANIFEST + 1), f"the batch manifest is longer than {MAX_MANIFEST} bytes"),
    ]
    frame = zstandard.ZstdCompressor().compress(b"abcd")
    cases.append((_manifest_line(ok, {**ok, "name": "/z@1", "encoding": "zstd", "length": len(frame)}) + b"abc" + frame,
                  "batch file 2 ('/z@1'): the body decodes to more than its Logical-Size of 3 bytes"))
    for body, message in cases:
        assert _check_refusal(body) == message, body[:200]


def test_a_batch_at_its_limits_passes_the_check() -> None:
    ok = batch_entry("/a", 1, 3, digest_of(b"abc"), "identity", b"abc")
    del ok["encoding"]  # identity when not said
    manifest = _manifest_line(ok)
    padded = manifest[:-2] + b" " * (MAX_MANIFEST - len(manifest)) + b"}\n"  # exactly the longest manifest line
    assert len(padded) == MAX_MANIFEST
    for body in (manifest + b"abc", padded + b"abc"):
        assert [f.name for f in check_batch(io.BytesIO(body), len(body), BatchLimits())] == ["/a@1"]
    frame = zstandard.ZstdCompressor().compress(b"abc")
    framed = {**ok, "encoding": "zstd", "length": max_frame_size(3)}  # the largest frame allowed, padded
    padding = max_frame_size(3) - len(frame) - 8
    body = _manifest_line(framed) + frame + b"\x50\x2a\x4d\x18" + padding.to_bytes(4, "little") + bytes(padding)
    assert check_batch(io.BytesIO(body), len(body), BatchLimits())[0].encoding == "zstd"


def test_a_large_zstd_batch_file_is_stored_as_its_frame(store: Store) -> None:
    content = b"".join(b"%d\n" % i for i in range(100_000))  # over the inline size, under a batch file's limit
    frame = zstandard.ZstdCompressor().compress(content)
    small = zstandard.ZstdCompressor().compress(b"small " * 10)
    entries = [batch_entry("/zb/small", 1, 60, digest_of(b"small " * 10), "zstd", small),
               batch_entry("/zb/large", 1, len(content), digest_of(content), "zstd", frame)]
    body = b"".join(batch_body(entries, [small, frame]))
    assert store_batch(store, io.BytesIO(body), len(body), BatchLimits()) == ["/zb/small@1", "/zb/large@1"]
    assert store.read_bytes("/zb/large") == content and store.read_bytes("/zb/small") == b"small " * 10
    info = store.stat("/zb/large")
    assert info.codec == Codec.ZSTD.value and info.stored_size == len(frame)  # the client's frame, kept
