"""Dedup that cannot be aliased: with a key function that collides on purpose, every
content still reads back as itself, and identical contents still share one blob."""

from __future__ import annotations

import io
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st

from castore.client import Client
from castore.errors import CastoreError
from castore.keys import KeyState
from castore.server.app import create_app
from castore.store import Store

from ..server_process import free_port


class _LengthOnly:
    """A deliberately weak key: the content's length, so all contents of one length collide."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self.n += len(data)

    def hexdigest(self) -> str:
        return f"{self.n:032x}"


def length_only(seed: int) -> KeyState:
    return _LengthOnly()


class _Unseekable(io.RawIOBase):
    """A stream that can be read once (like an HTTP upload), so the store writes before it compares."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._data.readinto(buffer)


@pytest.fixture
def weak(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "weak", create=True, key_function=length_only) as store:
        yield store


@pytest.mark.slow
def test_a_thousand_colliding_contents_read_back_as_themselves(weak: Store) -> None:
    contents = [b"%06d:" % i + os.urandom(25) for i in range(1000)]
    for i, content in enumerate(contents):
        weak.put(f"/c/{i}", content, version=1)
    keys = {weak.stat(f"/c/{i}").key for i in range(1000)}
    assert len(keys) == 1000, "each distinct content has its own blob"
    assert f"{32:032x}" in keys  # the first took the colliding key itself
    wrong = [i for i, content in enumerate(contents) if weak.read_bytes(f"/c/{i}") != content]
    assert wrong == []
    # Identical contents still deduplicate, whichever of the colliding blobs they match.
    for i in range(0, 1000, 10):
        weak.put(f"/again/{i}", contents[i], version=2)
        assert weak.stat(f"/again/{i}").key == weak.stat(f"/c/{i}").key
    assert weak.usage().blobs == 1000
    assert weak.check() == []


def test_large_colliding_contents_on_every_put_path(weak: Store, tmp_path: Path) -> None:
    text = [b"".join(b"%d %d\n" % (i, j) for j in range(60_000)) for i in range(3)]
    size = len(text[0])
    assert all(len(t) == size for t in text)
    random_contents = [os.urandom(size) for _ in range(3)]
    local = tmp_path / "c.bin"
    for i, content in enumerate(text + random_contents):
        if i % 3 == 0:
            weak.put(f"/big/{i}", content, version=1)  # bytes: hashed first, compared before writing
        elif i % 3 == 1:
            weak.put(f"/big/{i}", _Unseekable(content), version=1)  # written, then compared
        else:
            local.write_bytes(content)
            weak.put(f"/big/{i}", local, version=1)  # a file: hashed first
    assert len({weak.stat(f"/big/{i}").key for i in range(6)}) == 6
    for i, content in enumerate(text + random_contents):
        assert weak.read_bytes(f"/big/{i}") == content
        weak.put(f"/same/{i}", _Unseekable(content), version=1)
        weak.put(f"/same-bytes/{i}", content, version=1)
        assert weak.stat(f"/same/{i}").key == weak.stat(f"/same-bytes/{i}").key == weak.stat(f"/big/{i}").key
    assert weak.usage().blobs == 6
    assert weak.check() == []


def test_a_collected_colliding_blob_is_replaced_by_the_new_content(weak: Store) -> None:
    weak.put("/a", b"A" * 100, version=1)
    key = weak.stat("/a").key
    weak.delete("/a")  # its row stays at refcount 0 until gc
    weak.put("/b", b"B" * 100, version=1)  # same key, the dead row takes B whole
    assert weak.stat("/b").key == key and weak.read_bytes("/b") == b"B" * 100
    weak.put("/c", b"A" * 100, version=1)
    assert weak.read_bytes("/c") == b"A" * 100 and weak.stat("/c").key != key
    assert weak.check() == []


@pytest.mark.backends("sqlite+file", "postgresql+file")  # damages a blob file in place
def test_a_damaged_blob_is_not_shared(store: Store) -> None:
    """A put that finds its content's blob damaged stores a good copy instead of referencing it."""
    content = os.urandom(300_000)
    store.put("/a", content, version=1)
    info = store.stat("/a")
    path = store.blobs.path_of(info.key)  # type: ignore[attr-defined]
    path.chmod(0o644)
    path.write_bytes(b"\0" * len(content))
    store.put("/b", content, version=1)
    assert store.stat("/b").key != info.key
    assert store.read_bytes("/b") == content


@pytest.fixture
def weak_server(tmp_path: Path) -> Iterator[tuple[Store, str]]:
    """A real HTTP server on 127.0.0.1 whose store uses the weak key function (in this process)."""
    store = Store.open(tmp_path / "weak-http", create=True, key_function=length_only)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield store, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        store.close()


def test_an_uploader_cannot_alias_another_file_over_http(weak_server: tuple[Store, str], tmp_path: Path) -> None:
    store, url = weak_server
    when = {"last_modified": "Thu, 01 Jan 1970 00:16:40 -0000"}
    attacker, victim = b"evil" * 40, b"good" * 40  # same length: the same (weak) key
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.put("/files/attacker/a", params=when, content=attacker).status_code == 200
        assert http.put("/files/victim/b", params=when, content=victim).status_code == 200
        assert http.get("/files/victim/b").content == victim
        assert http.get("/files/attacker/a").content == attacker
        etags = {http.head(f"/files/{p}").headers["etag"] for p in ("attacker/a", "victim/b")}
        keys = {store.stat(p).key for p in ("/attacker/a", "/victim/b")}
        assert len(etags) == 2 and not {e.strip('"') for e in etags} & keys, "ETags differ and are not keys"
        big = [os.urandom(2 << 20) for _ in range(3)]
        for i, content in enumerate(big):
            assert http.put(f"/files/big/{i}", params=when, content=content).status_code == 200
    client = Client(local_store=None, remote_url=url)
    try:
        for i, content in enumerate(big):
            local = tmp_path / f"up{i}"
            local.write_bytes(content)
            client.put_file(f"/client/{i}@1000", str(local))  # a zstd or raw upload from castore's client
            for name in (f"/big/{i}", f"/client/{i}"):
                client.get_file(name, tmp_path / "out")
                assert (tmp_path / "out").read_bytes() == content
    finally:
        client.close()
    assert store.usage().blobs == 5  # 2 small + 3 large: the client's uploads deduplicated


@given(
    st.binary(max_size=300),
    st.binary(max_size=300),
    st.lists(st.integers(0, 300), max_size=6),
    st.lists(st.integers(0, 300), max_size=6),
    st.booleans(),
)
def test_same_bytes_compares_pieces_cut_anywhere(
    left: bytes, right: bytes, left_cuts: list[int], right_cuts: list[int], views: bool
) -> None:
    """The dedup comparison: equal exactly when the concatenated pieces are equal."""
    from castore.putting import _same_bytes

    def pieces(data: bytes, cuts: list[int]) -> list[bytes | memoryview]:
        bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
        cut = [data[a:b] for a, b in itertools.pairwise(bounds)]
        return [memoryview(bytearray(p)) if views else p for p in cut]

    assert _same_bytes(pieces(left, left_cuts), pieces(right, right_cuts)) == (left == right)
    assert _same_bytes(pieces(left, left_cuts), pieces(left, right_cuts))


@pytest.mark.parametrize("views", [False, True])
def test_same_bytes_where_one_side_is_cut_inside_the_others_piece(views: bool) -> None:
    """Equal bytes cut at different places on each side (the stored chunks against an upload's
    pieces): each comparison takes only what is left of the shorter side's current piece."""
    from castore.putting import _same_bytes

    def pieces(*parts: bytes) -> list[bytes | memoryview]:
        return [memoryview(bytearray(p)) if views else p for p in parts]

    cuts = [(b"abcd", b"efgh"), (b"ab", b"cdefgh"), (b"a", b"bcdefg", b"h"), (b"abcdefgh",)]
    for left in cuts:
        for right in cuts:
            assert _same_bytes(pieces(*left), pieces(*right)), (left, right)
            assert not _same_bytes(pieces(*left), pieces(*right[:-1], right[-1][:-1] + b"#")), (left, right)


@pytest.mark.backends("sqlite+file", "postgresql+file")  # damages blob files in place
def test_a_content_whose_every_probe_key_holds_a_damaged_copy_is_refused(store: Store) -> None:
    """Each put that finds only damaged copies stores a new one at the next probe key; when all
    64 probe keys hold one, the put fails and says why, rather than overwrite or alias."""
    from castore.keys import MAX_PROBES

    content = os.urandom(200_000)  # a file blob (not inline), so that it can be damaged in place
    for i in range(MAX_PROBES):
        store.put(f"/copy/{i}", content, version=1)
        path = store.blobs.path_of(store.stat(f"/copy/{i}").key)  # type: ignore[attr-defined]
        path.chmod(0o644)
        path.write_bytes(b"\0" * path.stat().st_size)
    assert len({store.stat(f"/copy/{i}").key for i in range(MAX_PROBES)}) == MAX_PROBES
    with pytest.raises(CastoreError, match=r"^200000 bytes of content collide with other contents at every probe key$"):
        store.put("/one-more", content, version=1)
