"""castore's client: Filetracker's API against a real ``castore serve`` and an embedded store."""

from __future__ import annotations

import multiprocessing
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from castore.client import Client
from castore.client.remote import Remote
from castore.digests import chunk_digest, content_digest
from castore.errors import FileNotAvailable, FiletrackerError
from castore.protocol import CONTENT_DIGEST_HEADER, format_content_digest
from castore.store import Store

from ..server_process import castore_server, free_port

MakeFile = Callable[..., Path]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # one worker: /metrics counters are per worker, and a test reads what the server sent
    with castore_server(tmp_path_factory.mktemp("client") / "store", "--workers", "1") as base:
        yield base


@pytest.fixture(params=["server", "embedded"])
def client(request: pytest.FixtureRequest, url: str, tmp_path: Path) -> Iterator[Client]:
    """A client with a cache, in front of a real server or of a store in this process."""
    if request.param == "server":
        c = Client(cache_dir=tmp_path / "cache", remote_url=url)
        yield c
        c.close()
    else:
        with Store.open(tmp_path / "embedded", create=True) as store:
            yield Client(cache_dir=tmp_path / "cache", remote_store=store)


@pytest.fixture
def local(tmp_path: Path) -> MakeFile:
    counter = iter(range(10**6))

    def make(content: bytes) -> Path:
        path = tmp_path / f"src{next(counter)}"
        path.write_bytes(content)
        return path

    return make


def unique(prefix: str) -> str:
    return f"/{prefix}/{time.monotonic_ns()}"


CONTENTS = {
    "empty": b"",
    "text": b"1 2 3\n" * 20_000,
    "binary": bytes(range(256)) * 5 + b"whatever\x01\xff",
    "large text": b"12345 67890\n" * 300_000,  # 3.6 MB: streamed, chunked, zstd
    "large random": os.urandom(3 << 20),  # streamed raw with Content-Length
}


@pytest.mark.parametrize("kind", CONTENTS)
@pytest.mark.parametrize("hint", [True, False])
def test_put_get_roundtrip(client: Client, local: MakeFile, tmp_path: Path, kind: str, hint: bool) -> None:
    content = CONTENTS[kind]
    path = unique("rt")
    name = client.put_file(f"{path}@1000", local(content), compress_hint=hint, to_local_store=False)
    assert name == f"{path}@1000"
    out = tmp_path / "out"
    assert client.get_file(path, out) == name
    assert out.read_bytes() == content
    stream, versioned = client.get_stream(path)
    with stream:
        assert stream.read() == content and versioned == name
    assert client.file_version(path) == 1000
    assert client.file_size(path) == len(content)


def test_versions_older_equal_newer(client: Client, local: MakeFile) -> None:
    path = unique("v")
    assert client.put_file(f"{path}@2000", local(b"two")) == f"{path}@2000"
    assert client.put_file(f"{path}@1000", local(b"one")) == f"{path}@2000"  # older: ignored
    assert client.get_stream(path)[0].read() == b"two"
    assert client.put_file(f"{path}@2000", local(b"TWO")) == f"{path}@2000"  # equal: replaces
    assert client.get_stream(path)[0].read() == b"TWO"
    assert client.get_stream(f"{path}@2000")[0].read() == b"TWO"  # the cache was replaced too
    assert client.put_file(f"{path}@3000", local(b"three")) == f"{path}@3000"
    assert client.file_version(path) == 3000


def test_unversioned_put_is_now(client: Client, local: MakeFile) -> None:
    before = int(time.time())
    version = int(client.put_file(unique("now"), local(b"x")).rsplit("@", 1)[1])
    assert before <= version <= int(time.time())


def test_missing_files_raise_404(client: Client, tmp_path: Path, local: MakeFile) -> None:
    path = unique("gone")
    client.put_file(f"{path}@2000", local(b"x"))
    client.delete_file(f"{path}@1500")  # older than what is stored: ignored
    assert client.file_version(path) == 2000
    client.delete_file(f"{path}@2000")
    assert client.list_local_files() == [] or all(not e.name.startswith(path) for e in client.list_local_files())
    calls: list[Callable[[], object]] = [
        lambda: client.file_version(path),
        lambda: client.get_stream(path),
        lambda: client.get_file(path, tmp_path / "o"),
        lambda: client.delete_file(f"{path}@3000"),
        lambda: client.file_size(path),
    ]
    for call in calls:
        with pytest.raises(FileNotAvailable) as info:
            call()
        assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, FiletrackerError)
        assert info.value.status == 404
        if client.remote_store.__class__ is Remote:
            assert "404" in str(info.value)
    assert not (tmp_path / "o").exists()


def test_asking_for_a_version_the_origin_does_not_have(client: Client, local: MakeFile, tmp_path: Path) -> None:
    path = unique("ver")
    client.put_file(f"{path}@2000", local(b"x"), to_local_store=False)
    with pytest.raises(FileNotAvailable) as info:
        client.get_file(f"{path}@1000", tmp_path / "o")
    wording = f"version 1000 of {path} is not retained; retained versions: 2000"
    assert info.value.detail == wording and wording in str(info.value) and info.value.status == 404
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("cached", [True, False])
def test_every_retained_version_reads_as_path_at_version(client: Client, local: MakeFile, tmp_path: Path,
                                                         cached: bool) -> None:
    """Issue #21: what ``castore log`` lists reads back, through the cache or not, from a server or an embedded store."""
    path = unique("retained")
    contents = {1000: b"one", 2000: b"two " * 50_000, 3000: b"three"}  # 2000: a blob file, streamed
    for version, content in contents.items():
        client.put_file(f"{path}@{version}", local(content), to_local_store=False)
    for version, content in [*contents.items(), (3000, contents[3000]), (1000, contents[1000])]:
        out = tmp_path / f"out{version}"
        assert client.get_file(f"{path}@{version}", out, add_to_cache=cached) == f"{path}@{version}"
        assert out.read_bytes() == content
        stream, name = client.get_stream(f"{path}@{version}", serve_from_cache=cached)
        with stream:
            assert stream.read() == content and name == f"{path}@{version}"
    assert client.get_stream(path)[0].read() == contents[3000]  # the current one, whatever the cache holds
    for missing in (999, 1500, 4000):
        name = f"{path}@{missing}"
        for call in (lambda: client.get_file(name, tmp_path / "no", add_to_cache=cached),  # noqa: B023 - called at once
                     lambda: client.get_stream(name, serve_from_cache=cached)):  # noqa: B023
            with pytest.raises(FileNotAvailable) as info:
                call()
            assert info.value.detail == f"version {missing} of {path} is not retained; " \
                                        "retained versions: 3000, 2000, 1000"
    with pytest.raises(FileNotAvailable) as gone:
        client.get_file(f"{unique('never')}@5", tmp_path / "no")
    assert gone.value.detail is None and gone.value.status == 404


def test_list_remote_files(client: Client, local: MakeFile) -> None:
    top = unique("listing")
    client.put_file(f"{top}/a@1000", local(b"a"))
    client.put_file(f"{top}/b@3000", local(b"b"))
    client.put_file(f"{top}/sub/c@1000", local(b"c"))
    assert sorted(client.list_remote_files(subpath=top)) == ["a", "b", "sub/c"]
    assert sorted(client.list_remote_files(2000, top)) == ["a", "sub/c"]
    absolute = top.lstrip("/")
    assert sorted(client.list_remote_files(subpath=top, absolute_paths=True)) == [
        f"{absolute}/a", f"{absolute}/b", f"{absolute}/sub/c"]
    assert f"{absolute}/sub/c" in client.list_remote_files()
    with pytest.raises(FiletrackerError):
        client.list_remote_files(subpath=top + "/nothing")
    with pytest.raises(FiletrackerError):
        client.list_remote_files(subpath="relative")


@pytest.mark.parametrize("name", ["/a/../b", "relative", "/a//b", "/a\0b", "/a@x", "/a/b@1@2", ""])
def test_invalid_names_raise_value_error(client: Client, local: MakeFile, tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        client.put_file(name, local(b"x"))
    with pytest.raises(ValueError):
        client.get_file(name, tmp_path / "o")


def test_missing_local_source_changes_nothing(client: Client, tmp_path: Path) -> None:
    path = unique("nosrc")
    with pytest.raises(FiletrackerError):
        client.put_file(path, tmp_path / "does-not-exist")
    with pytest.raises(FileNotAvailable):
        client.file_version(path)


# -- the cache ------------------------------------------------------------------------------


@pytest.fixture
def two_clients(url: str, tmp_path: Path) -> tuple[Client, Client]:
    """A cached client and a remote-only one on the same server."""
    return Client(cache_dir=tmp_path / "cache", remote_url=url), Client(local_store=None, remote_url=url)


def test_versioned_names_are_served_from_the_cache(two_clients: tuple[Client, Client], local: MakeFile,
                                                   tmp_path: Path) -> None:
    cached, remote_only = two_clients
    path = unique("cache")
    name = remote_only.put_file(f"{path}@1000", local(b"cached content"))
    assert cached.get_file(name, tmp_path / "first") == name
    remote_only.delete_file(name)  # the server forgets it; the cache still has it
    assert cached.get_file(name, tmp_path / "second") == name
    assert (tmp_path / "second").read_bytes() == b"cached content"
    assert os.stat(tmp_path / "second").st_nlink >= 2  # a hard link, not a copy
    stream, versioned = cached.get_stream(name)
    assert stream.read() == b"cached content" and versioned == name
    assert cached.file_size(name) == len(b"cached content")
    with pytest.raises(FileNotAvailable):  # unversioned: always asks the server
        cached.get_file(path, tmp_path / "third")
    with pytest.raises(FileNotAvailable):
        cached.get_file(name, tmp_path / "fourth", force_refresh=True)


def test_a_file_modified_in_place_is_not_served_again(two_clients: tuple[Client, Client], local: MakeFile,
                                                      tmp_path: Path) -> None:
    cached, remote_only = two_clients
    name = remote_only.put_file(unique("inplace") + "@1000", local(b"original"))
    cached.get_file(name, tmp_path / "out")
    with open(tmp_path / "out", "r+b") as f:  # shares the cache's inode
        f.write(b"CHANGED!")
    assert cached.get_file(name, tmp_path / "again") == name
    assert (tmp_path / "again").read_bytes() == b"original"


def test_copies_instead_of_links_when_asked(url: str, local: MakeFile, tmp_path: Path) -> None:
    client = Client(cache_dir=tmp_path / "cache", remote_url=url, link_files=False)
    name = client.put_file(unique("copy") + "@5", local(b"abc"))
    client.get_file(name, tmp_path / "out")
    assert os.stat(tmp_path / "out").st_nlink == 1


def test_serve_from_cache_downloads_into_the_cache(two_clients: tuple[Client, Client], local: MakeFile) -> None:
    cached, remote_only = two_clients
    path = unique("sfc")
    remote_only.put_file(f"{path}@7", local(b"content"))
    stream, name = cached.get_stream(path, serve_from_cache=True)
    assert stream.read() == b"content" and name == f"{path}@7"
    assert f"{path}@7" in [entry.name for entry in cached.list_local_files()]


def test_local_only_client(tmp_path: Path, local: MakeFile) -> None:
    client = Client(cache_dir=tmp_path / "only", remote_store=None)
    assert client.put_file("/l/a@5", local(b"five")) == "/l/a@5"
    assert client.put_file("/l/a@4", local(b"four")) == "/l/a@5"  # the cache keeps the newer
    assert client.get_stream("/l/a")[0].read() == b"five"
    assert client.file_version("/l/a") == 5
    entries = client.list_local_files()
    assert [(e.name, e.size) for e in entries] == [("/l/a@5", 4)]
    assert client.list_remote_files() == []
    client.delete_file("/l/a")
    with pytest.raises(FileNotAvailable):
        client.get_stream("/l/a")
    with pytest.raises(FileNotAvailable):
        client.delete_file("/l/a")
    assert not (tmp_path / "only" / "files" / "l").exists()  # empty folders pruned


def test_a_client_needs_a_store() -> None:
    with pytest.raises(ValueError):
        Client(local_store=None, remote_store=None)
    with pytest.raises(ValueError):
        Client(local_store=None, remote_url="ftp://example")


def _fetch_in_child(url: str, cache: str, name: str, out: str) -> None:
    client = Client(cache_dir=cache, remote_url=url)
    client.get_file(name, out)


def _response_bytes(url: str) -> int:
    text = httpx.get(url + "/metrics").text
    match = re.search(r"^castore_response_bytes_total (\d+)", text, re.MULTILINE)
    assert match
    return int(match.group(1))


def test_cache_shared_by_four_processes_downloads_once(url: str, local: MakeFile, tmp_path: Path) -> None:
    content = os.urandom(8 << 20)
    name = Client(local_store=None, remote_url=url).put_file(unique("shared") + "@9", local(content))
    before = _response_bytes(url)
    context = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"out{i}" for i in range(4)]
    processes = [
        context.Process(target=_fetch_in_child, args=(url, str(tmp_path / "cache"), name, str(out)))
        for out in outs
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    sent = _response_bytes(url) - before
    assert len(content) <= sent < 1.5 * len(content)  # one download served all four
    for out in outs:
        assert out.read_bytes() == content
    assert len({os.stat(out).st_ino for out in outs}) == 1  # all links to one cached file


def test_a_client_survives_fork(url: str, local: MakeFile, tmp_path: Path) -> None:
    client = Client(local_store=None, remote_url=url)
    name = client.put_file(unique("fork") + "@1", local(b"parent"))  # opens a pooled connection
    pid = os.fork()
    if pid == 0:  # the child must not use the parent's socket
        ok = False
        try:
            ok = client.get_stream(name)[0].read() == b"parent"
        finally:
            os._exit(0 if ok else 1)
    assert client.get_stream(name)[0].read() == b"parent"
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_restarted_server_is_reconnected_to(tmp_path: Path, local: MakeFile) -> None:
    port = free_port()
    with castore_server(tmp_path / "s", port=port) as base:
        client = Client(local_store=None, remote_url=base)
        client.put_file("/r/a@1", local(b"a"))
    with castore_server(tmp_path / "s", port=port):
        assert client.get_stream("/r/a")[0].read() == b"a"  # the pooled connection was stale


def test_an_unreachable_server_is_a_filetracker_error(local: MakeFile) -> None:
    client = Client(local_store=None, remote_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(FiletrackerError, match="Error making HTTP request") as info:
        client.file_version("/x")
    assert info.value.status is None


# -- servers that misbehave: the client must notice -----------------------------------------


def _one_answer_server(answer: bytes) -> Iterator[str]:
    """A loopback server that answers every request with the same raw bytes, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def run() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join()
        listener.close()


BOMB = zstandard.ZstdCompressor(level=3).compress(b"\0" * (64 << 20))
HEAD = b"HTTP/1.1 200 OK\r\nLast-Modified: Thu, 01 Jan 1970 00:16:40 -0000\r\nConnection: close\r\n"


@pytest.mark.parametrize(
    "answer",
    [
        HEAD + b"Content-Length: 10\r\nLogical-Size: 10\r\n\r\n12345",  # cut short
        HEAD + b"Content-Length: 5\r\nLogical-Size: 10\r\n\r\n12345",  # smaller than announced
        HEAD + b"Content-Length: 5\r\nLogical-Size: 5\r\nContent-Encoding: zstd\r\n\r\nnope!",  # not zstd
        HEAD + b"Content-Length: 5\r\nLogical-Size: 5\r\nContent-Encoding: br\r\n\r\n12345",  # unknown coding
        HEAD + b"Content-Length: %d\r\nLogical-Size: 5\r\nContent-Encoding: zstd\r\n\r\n%s"
        % (len(BOMB), BOMB),  # decodes far past its size: stopped there
        HEAD + b"Transfer-Encoding: chunked\r\nLogical-Size: 5\r\n\r\n" + b"0" * 70_000 + b"5\r\n12345\r\n0\r\n\r\n",
        # a chunk-size line over http.client's 64 KiB line limit (was a raw LineTooLong)
        HEAD + b"Content-Length: 10\r\nLogical-Size: 5\r\n\r\n1234567890",  # longer than announced
        HEAD + b"Content-Length: 5\r\nLogical-Size: 5\r\n%s: %s\r\n\r\n12345"
        % (CONTENT_DIGEST_HEADER.encode(), format_content_digest(content_digest(chunk_digest(b"54321"))).encode()),
        # the bytes of another content than the server's digest says
    ],
    ids=["truncated", "short", "corrupt", "unknown-coding", "bomb", "long-chunk-line", "long", "wrong-digest"],
)
def test_a_bad_download_raises_and_writes_nothing(answer: bytes, tmp_path: Path) -> None:
    for base in _one_answer_server(answer):
        client = Client(local_store=None, remote_url=base)
        with pytest.raises(FiletrackerError):
            client.get_file("/x", tmp_path / "out")
        assert not (tmp_path / "out").exists()
        with pytest.raises(FiletrackerError):
            client.get_stream("/x")[0].read()


def test_a_path_that_is_also_a_folder_goes_around_the_cache(local: MakeFile, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A store written before castore refused it (issue #21) may hold /x/b and /x/b/c: the cache copes."""
    from castore.metadata.txn import WriteTxn

    store = Store.open(tmp_path / "embedded", create=True)
    cached = Client(cache_dir=tmp_path / "cache", remote_store=store)
    top = unique("nest")
    # the cache folder cannot hold both: /x/b is a file there, /x/b/c would need it to be a folder
    assert cached.put_file(f"{top}/b@5", local(b"outer")) == f"{top}/b@5"
    with monkeypatch.context() as older_castore:
        older_castore.setattr(WriteTxn, "in_the_way", lambda self, path: None)
        assert cached.put_file(f"{top}/b/c@5", local(b"inner")) == f"{top}/b/c@5"
    for name, content in ((f"{top}/b@5", b"outer"), (f"{top}/b/c@5", b"inner"), (f"{top}/b/c", b"inner")):
        assert cached.get_file(name, tmp_path / "out") == name.split("@")[0] + "@5"
        assert (tmp_path / "out").read_bytes() == content
        assert cached.get_stream(name, serve_from_cache=True)[0].read() == content
        assert cached.file_size(name) == len(content)
    cached.delete_file(f"{top}/b/c@5")
    with pytest.raises(FileNotAvailable):
        cached.file_version(f"{top}/b/c")
    store.close()


@pytest.mark.parametrize("leaf", ["a b.txt", "ł ż.txt", "q?x=1", "h#sh", "100%25", "50%", "a+b", "a;b", "a&b=c", "'\"", "~x"])
def test_names_that_need_url_quoting(client: Client, local: MakeFile, leaf: str) -> None:
    folder = unique("odd")
    name = client.put_file(f"{folder}/{leaf}@5", local(b"data"))
    assert name == f"{folder}/{leaf}@5"
    stream, versioned = client.get_stream(f"{folder}/{leaf}")
    assert stream.read() == b"data" and versioned == name
    assert client.list_remote_files(subpath=folder) == [leaf]


def _cache_with_tmp_as_a_file(cache: Path) -> None:
    (cache / "tmp").write_bytes(b"")  # nothing can be written into the cache


def _cache_with_files_as_a_file(cache: Path) -> None:
    (cache / "files").write_bytes(b"")  # nothing can be looked up or installed


@pytest.mark.parametrize("damage", [_cache_with_tmp_as_a_file, _cache_with_files_as_a_file], ids=["tmp", "files"])
def test_a_broken_cache_does_not_fail_a_fetch_the_server_can_serve(
    url: str, local: MakeFile, tmp_path: Path, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    """get_file and get_stream(serve_from_cache=True) share one policy: go around a broken cache.

    (Made broken by its layout rather than by permissions: the tests may run as root.)
    """
    cache = tmp_path / "broken"
    cache.mkdir()
    damage(cache)
    uploader = Client(local_store=None, remote_url=url)
    path = unique("broken")
    name = uploader.put_file(f"{path}@9", local(b"served anyway"))
    client = Client(cache_dir=cache, remote_url=url)
    for asked in (name, path):
        assert client.get_file(asked, tmp_path / "out") == name
        assert (tmp_path / "out").read_bytes() == b"served anyway"
        stream, versioned = client.get_stream(asked, serve_from_cache=True)
        with stream:
            assert stream.read() == b"served anyway" and versioned == name
    assert "the cache cannot serve" in caplog.text
    with pytest.raises(FileNotAvailable):  # the origin's errors are still the call's
        client.get_stream(path + "-missing", serve_from_cache=True)
    with pytest.raises(FileNotAvailable):
        client.get_file(path + "-missing", tmp_path / "none")


def test_what_a_small_upload_is_sent_as() -> None:
    """One compression at most per small file, decided by its size and a 4 KiB probe."""
    from castore.codec import SEND_RAW_MAX, pack_for_sending

    text = b"12 345 6789\n" * 6000
    packed = pack_for_sending(text)
    assert packed is not None and len(packed) < len(text) // 4
    assert zstandard.ZstdDecompressor().decompress(packed) == text
    assert pack_for_sending(text[:SEND_RAW_MAX]) is None  # tiny: raw, the server compresses it
    assert pack_for_sending(os.urandom(65536)) is None  # the probe says incompressible
    assert pack_for_sending(os.urandom(4096) + text) is None  # ... even when the rest is not (a documented trade)
    assert pack_for_sending(b"") is None


def test_response_headers_are_split_as_http_client_would() -> None:
    """castore.client.remote parses response headers itself (http.client's email parser was its largest cost)."""
    from castore.client.transport import _Headers

    headers = _Headers([b"Content-Length: 12\r\n", b"X-Exception: bad \xe9\r\n", b"Set: a\r\n", b"set: b\r\n",
                        b"Folded: one\r\n", b"  two\r\n", b"no colon here\r\n"])
    assert headers.get("content-length") == "12" and headers.get("CONTENT-LENGTH") == "12"
    assert headers.get("x-exception") == "bad \xe9"  # latin-1, as http.client decodes
    assert headers.get_all("set") == ["a", "b"] and headers.get("set") == "a"
    assert headers.get("folded") == "one two"
    assert headers.get("missing") is None and headers.get_all("missing", []) == []
    assert headers.first()["set"] == "a" and ("Set", "a") in headers.items()


@given(st.one_of(st.text(alphabet=st.characters(max_codepoint=127), max_size=140),
                 st.lists(st.text(alphabet="ab-9", max_size=70), min_size=1, max_size=4).map(".".join),
                 st.text(max_size=20)))
def test_a_host_given_as_bytes_resolves_as_the_idna_codec_would(host: str) -> None:
    """castore.client.remote hands getaddrinfo an ASCII host as bytes (no idna import at start-up): the same bytes."""
    from castore.client.transport import _getaddrinfo_host

    given = _getaddrinfo_host(host)
    if isinstance(given, bytes):
        assert given == host.encode("idna")
    else:
        assert given == host  # the codec encodes it, or refuses it, as before


def test_which_hosts_go_to_getaddrinfo_as_bytes() -> None:
    from castore.client.transport import _getaddrinfo_host

    assert _getaddrinfo_host("127.0.0.1") == b"127.0.0.1" and _getaddrinfo_host("files.example.") == b"files.example."
    assert _getaddrinfo_host("b\u00fccher.example") == "b\u00fccher.example"  # IDNA: the codec's punycode
    assert _getaddrinfo_host("a..b") == "a..b" and _getaddrinfo_host("x" * 64) == "x" * 64  # the codec's error
